"""The chat domain's GraphQL types and the request-scoped DataLoaders behind them.

Types wrap what the services return: ``RoomView``, ``MemberView`` and ``InviteView`` for
rooms, the message JSON every API shares (``messages_schemas.message_json``) for
messages, ``ReadState`` for unread counts. Two loaders keep a list at a constant number
of statements whatever its length:

- ``read_states``: the caller's unread counts of every room, one ``unread_summary``
  query for all the rooms of a response;
- ``usernames``: users by id in one identity batch. Message pages arrive with their
  authors' and mentioned users' names (the service fetched them in one batch), which are
  primed into it, so ``author`` costs nothing more and direct rooms' ``peer`` asks only
  for the users not seen yet.

Resolvers of one operation share its session, which allows one statement at a time:
``exclusive`` serialises every use of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any, TypeVar

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.types import Info

from engineroom.chat import receipts
from engineroom.chat.history import names_of
from engineroom.chat.receipts import ReadState, UnreadSummary
from engineroom.chat.rooms import InviteView, MemberView, Page, RoomView
from engineroom.core.auth import Principal
from engineroom.core.clock import isoformat_z
from engineroom.core.graphql import GraphQLContext

Ctx = Info[GraphQLContext, None]
T = TypeVar("T")
_USERNAMES = "chat.usernames"
_READ_STATES = "chat.read_states"
# Sizes may exceed GraphQL's Int, which stops at 2^31 - 1 (the default limit is 2^31).
SIZE = "Bytes: a whole number (a JSON number, up to 2^53)."


async def exclusive(info: Ctx, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` alone on the operation's session (sibling fields resolve concurrently)."""
    return await info.context.exclusive(work)


# ---- loaders --------------------------------------------------------------------------------


def usernames(info: Ctx) -> DataLoader[uuid.UUID, str | None]:
    """Usernames by user id (``None`` once the account is gone), one batch per tick."""

    async def load(user_ids: Sequence[uuid.UUID]) -> list[str | None]:
        found = await exclusive(info, lambda: names_of(info.context.session, set(user_ids)))
        return [found.get(user_id) for user_id in user_ids]

    return info.context.loaders.get(_USERNAMES, lambda: DataLoader(load_fn=load))


def prime_users(info: Ctx, users: Iterable[dict[str, Any]]) -> None:
    """Remember ``{"id", "username"}`` pairs a service already looked up."""
    loader = usernames(info)
    for user in users:
        loader.prime(uuid.UUID(user["id"]), user["username"])


def read_states(info: Ctx, principal: Principal) -> DataLoader[uuid.UUID, ReadState | None]:
    """The caller's read state per room id (``None`` where they are not a member)."""

    async def load(room_ids: Sequence[uuid.UUID]) -> list[ReadState | None]:
        # One grouped query answers for all the caller's rooms at once.
        summary = await exclusive(
            info, lambda: receipts.unread_summary(info.context.session, principal)
        )
        by_room = {state.room_id: state for state in summary.rooms}
        return [by_room.get(room_id) for room_id in room_ids]

    return info.context.loaders.get(_READ_STATES, lambda: DataLoader(load_fn=load))


# ---- enums ----------------------------------------------------------------------


@strawberry.enum(name="ChatRoomKind")
class RoomKind(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    INVITE_ONLY = "invite_only"
    DIRECT = "direct"


@strawberry.enum(name="ChatMemberRole")
class MemberRole(StrEnum):
    OWNER = "owner"
    MODERATOR = "moderator"
    MEMBER = "member"


def _iso(value: Any) -> str | None:
    return isoformat_z(value) if value is not None else None


# ---- users and rooms ------------------------------------------------------------------------


@strawberry.type(name="ChatUser", description="A user as chat shows them.")
class UserType:
    id: strawberry.ID
    username: str | None = strawberry.field(description="null once the account is gone.")

    @classmethod
    async def load(cls, info: Ctx, user_id: uuid.UUID) -> UserType:
        return cls(id=strawberry.ID(str(user_id)), username=await usernames(info).load(user_id))

    @classmethod
    def of(cls, data: dict[str, Any]) -> UserType:
        return cls(id=strawberry.ID(data["id"]), username=data["username"])


async def _read_state(room: RoomType, info: Ctx) -> ReadState | None:
    if room.my_role is None:
        return None
    return await read_states(info, room.principal).load(room.room_id)


async def _unread_count(root: RoomType, info: Ctx) -> int | None:
    state = await _read_state(root, info)
    return state.unread if state is not None else None


async def _mention_count(root: RoomType, info: Ctx) -> int | None:
    state = await _read_state(root, info)
    return state.mentions if state is not None else None


async def _last_read_seq(root: RoomType, info: Ctx) -> int | None:
    state = await _read_state(root, info)
    return state.last_read_seq if state is not None else None


async def _peer(root: RoomType, info: Ctx) -> UserType | None:
    return await UserType.load(info, root.peer_id) if root.peer_id is not None else None


@strawberry.type(name="ChatRoom", description="A room as the caller sees it.")
class RoomType:
    room_id: strawberry.Private[uuid.UUID]
    peer_id: strawberry.Private[uuid.UUID | None]
    principal: strawberry.Private[Principal]
    id: strawberry.ID
    kind: RoomKind
    name: str | None = strawberry.field(description="null for direct rooms.")
    topic: str | None
    member_count: int
    last_seq: int = strawberry.field(description="The seq of the newest message (0 before any).")
    created_at: str
    updated_at: str
    my_role: MemberRole | None = strawberry.field(
        description="The caller's role; null when not a member."
    )
    muted_until: str | None = strawberry.field(
        description="Until when the caller may not send here, if muted."
    )
    unread_count: int | None = strawberry.field(
        resolver=_unread_count, description="Messages unread by the caller; null for non-members."
    )
    mention_count: int | None = strawberry.field(
        resolver=_mention_count,
        description="Unread messages mentioning the caller; null for non-members.",
    )
    last_read_seq: int | None = strawberry.field(
        resolver=_last_read_seq,
        description="The caller's read position (a seq); null for non-members.",
    )
    peer: UserType | None = strawberry.field(
        resolver=_peer, description="Direct rooms: the other user of the pair."
    )

    @classmethod
    def of(cls, view: RoomView, principal: Principal) -> RoomType:
        room, member = view.room, view.member
        return cls(
            room_id=room.id,
            peer_id=view.peer_id,
            principal=principal,
            id=strawberry.ID(str(room.id)),
            kind=RoomKind(room.kind),
            name=room.name,
            topic=room.topic,
            member_count=room.member_count,
            last_seq=room.last_seq,
            created_at=isoformat_z(room.created_at),
            updated_at=isoformat_z(room.updated_at),
            my_role=MemberRole(member.role) if member is not None else None,
            muted_until=_iso(member.muted_until) if member is not None else None,
        )


@strawberry.type(name="ChatRoomPage")
class RoomPage:
    nodes: list[RoomType]
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next page; null on the last page."
    )

    @classmethod
    def of(cls, page: Page[RoomView], principal: Principal) -> RoomPage:
        nodes = [RoomType.of(view, principal) for view in page.items]
        return cls(nodes=nodes, next_cursor=page.next_cursor)


@strawberry.type(name="ChatMember")
class MemberType:
    user: UserType
    role: MemberRole
    joined_at: str
    muted_until: str | None

    @classmethod
    def of(cls, view: MemberView) -> MemberType:
        member = view.member
        return cls(
            user=UserType(id=strawberry.ID(str(member.user_id)), username=view.username),
            role=MemberRole(member.role),
            joined_at=isoformat_z(member.joined_at),
            muted_until=_iso(member.muted_until),
        )


@strawberry.type(name="ChatMemberPage")
class MemberPage:
    nodes: list[MemberType]
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next page; null on the last page."
    )


async def _invited_by(root: InviteType, info: Ctx) -> UserType:
    return await UserType.load(info, root.inviter_id)


@strawberry.type(name="ChatInvite", description="A pending invite to a room.")
class InviteType:
    inviter_id: strawberry.Private[uuid.UUID]
    room_id: strawberry.ID
    user: UserType = strawberry.field(description="The invited user.")
    created_at: str
    invited_by: UserType = strawberry.field(resolver=_invited_by)

    @classmethod
    def of(cls, view: InviteView) -> InviteType:
        invite = view.invite
        return cls(
            inviter_id=invite.invited_by,
            room_id=strawberry.ID(str(view.room.id)),
            user=UserType(id=strawberry.ID(str(invite.user_id)), username=view.username),
            created_at=isoformat_z(invite.created_at),
        )


# ---- messages -------------------------------------------------------------------------------


@strawberry.type(name="ChatAttachment", description="A link to a file kept elsewhere.")
class AttachmentType:
    url: str
    name: str | None
    content_type: str | None
    size: JSON | None = strawberry.field(description=SIZE)


@strawberry.type(name="ChatReaction")
class ReactionType:
    emoji: str
    count: int
    me: bool = strawberry.field(description="Whether the caller is one of those who reacted.")


async def _author(root: MessageType, info: Ctx) -> UserType:
    return await UserType.load(info, root.author_id)


@strawberry.type(name="ChatMessage")
class MessageType:
    author_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    room_id: strawberry.ID
    seq: int = strawberry.field(description="The message's number in its room: 1, 2, 3, ...")
    body: str = strawberry.field(description="Empty once deleted.")
    thread_root_id: strawberry.ID | None = strawberry.field(
        description="The thread this message replies in; null for top-level messages."
    )
    reply_count: int
    last_reply_at: str | None
    mentions: list[UserType]
    attachments: list[AttachmentType]
    reactions: list[ReactionType] = strawberry.field(
        description="Counts per reaction, in the order they first appeared."
    )
    created_at: str
    edited_at: str | None
    deleted: bool = strawberry.field(
        description="A tombstone: the body, attachments, mentions and reactions are gone."
    )
    author: UserType = strawberry.field(resolver=_author)

    @classmethod
    def of(cls, data: dict[str, Any]) -> MessageType:
        """A message as ``messages_schemas.message_json`` shapes it."""
        root = data["thread_root_id"]
        return cls(
            author_id=uuid.UUID(data["author"]["id"]),
            id=strawberry.ID(data["id"]),
            room_id=strawberry.ID(data["room_id"]),
            seq=int(data["seq"]),
            body=str(data["body"]),
            thread_root_id=strawberry.ID(root) if root is not None else None,
            reply_count=int(data["reply_count"]),
            last_reply_at=data["last_reply_at"],
            mentions=[UserType.of(user) for user in data["mentions"]],
            attachments=[
                AttachmentType(
                    url=item["url"],
                    name=item.get("name"),
                    content_type=item.get("content_type"),
                    size=item.get("size"),
                )
                for item in data["attachments"]
            ],
            reactions=[
                ReactionType(emoji=item["emoji"], count=item["count"], me=item["me"])
                for item in data["reactions"]
            ],
            created_at=str(data["created_at"]),
            edited_at=data["edited_at"],
            deleted=bool(data["deleted"]),
        )


def message_types(info: Ctx, rendered: Sequence[dict[str, Any]]) -> list[MessageType]:
    """Messages as the services render them, their users primed into ``usernames``."""
    prime_users(info, (m["author"] for m in rendered))
    prime_users(info, (user for m in rendered for user in m["mentions"]))
    return [MessageType.of(message) for message in rendered]


@strawberry.type(name="ChatMessageEdge")
class MessageEdge:
    cursor: str = strawberry.field(description="The message's id: `before`/`after` take it.")
    node: MessageType


@strawberry.type(name="ChatPageInfo")
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="More messages lie beyond the end of this page, in the same direction."
    )
    has_previous_page: bool = strawberry.field(
        description="The page was asked for from a cursor (before/after)."
    )
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(name="ChatMessageConnection")
class MessageConnection:
    edges: list[MessageEdge]
    page_info: PageInfo

    @classmethod
    def of(
        cls, info: Ctx, rendered: Sequence[dict[str, Any]], *, has_more: bool, from_cursor: bool
    ) -> MessageConnection:
        edges = [MessageEdge(cursor=str(m.id), node=m) for m in message_types(info, rendered)]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_more,
                has_previous_page=from_cursor,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


@strawberry.type(name="ChatThread")
class ThreadType:
    root: MessageType = strawberry.field(description="The message that started the thread.")
    replies: MessageConnection


# ---- unread counts --------------------------------------------------------------------------


@strawberry.type(name="ChatRoomUnread", description="The caller's read state in one room.")
class ReadStateType:
    room_id: strawberry.ID
    last_read_seq: int = strawberry.field(description="Every message up to this seq is read.")
    last_seq: int = strawberry.field(description="The seq of the room's newest message.")
    unread: int
    mentions: int = strawberry.field(description="Unread messages that mention the caller.")

    @classmethod
    def of(cls, state: ReadState) -> ReadStateType:
        return cls(
            room_id=strawberry.ID(str(state.room_id)),
            last_read_seq=state.last_read_seq,
            last_seq=state.last_seq,
            unread=state.unread,
            mentions=state.mentions,
        )


@strawberry.type(name="ChatUnread", description="Unread counts of every room of the caller.")
class UnreadType:
    rooms: list[ReadStateType]
    unread: int = strawberry.field(description="The unread messages of all those rooms.")
    mentions: int = strawberry.field(description="The unread mentions of all those rooms.")

    @classmethod
    def of(cls, summary: UnreadSummary) -> UnreadType:
        return cls(
            rooms=[ReadStateType.of(state) for state in summary.rooms],
            unread=summary.unread,
            mentions=summary.mentions,
        )


# ---- inputs ---------------------------------------------------------------------------------


@strawberry.input(name="ChatRoomCreateInput")
class RoomCreateInput:
    name: str
    kind: RoomKind = RoomKind.PUBLIC
    topic: str | None = None


@strawberry.input(name="ChatRoomUpdateInput", description="Only the fields given change.")
class RoomUpdateInput:
    name: str | None = strawberry.UNSET
    topic: str | None = strawberry.field(
        default=strawberry.UNSET, description="null clears the topic."
    )

    def changes(self) -> dict[str, str | None]:
        given = {"name": self.name, "topic": self.topic}
        return {key: value for key, value in given.items() if value is not strawberry.UNSET}


@strawberry.input(name="ChatAttachmentInput")
class AttachmentInput:
    url: str
    name: str | None = None
    content_type: str | None = None
    size: JSON | None = strawberry.field(default=None, description=SIZE)


@strawberry.input(name="ChatMessageInput")
class MessageInput:
    body: str
    thread_root_id: strawberry.ID | None = strawberry.field(
        default=None, description="Reply in the thread of this message."
    )
    attachments: list[AttachmentInput] = strawberry.field(default_factory=list)

    def data(self) -> dict[str, Any]:
        return {
            "body": self.body,
            "thread_root_id": self.thread_root_id,
            "attachments": [
                {"url": a.url, "name": a.name, "content_type": a.content_type, "size": a.size}
                for a in self.attachments
            ],
        }
