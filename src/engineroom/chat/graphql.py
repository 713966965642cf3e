"""The chat domain in the composed GraphQL schema.

Every root field is prefixed with ``chat`` and calls the service function its REST route
calls, with the same input rules (the REST bodies' pydantic models validate the
arguments), the same rate limits (same scopes and keys, so REST and GraphQL share one
budget) and the same errors, whose codes reach ``extensions.code``. Pages of rooms and
members carry ``nextCursor`` like the REST lists; message pages are connections whose
cursors are message ids, as REST's ``before``/``after``. Types and loaders are in
``graphql_types.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypedDict, TypeVar

import strawberry
import structlog
from limits.errors import StorageError
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import history, membership, messages, reactions, receipts, rooms
from engineroom.chat.activity_schemas import ReadPosition
from engineroom.chat.errors import InvalidInput, RoomNotFound
from engineroom.chat.filters import settings_of
from engineroom.chat.graphql_types import (
    Ctx,
    InviteType,
    MemberPage,
    MemberType,
    MessageConnection,
    MessageInput,
    MessageType,
    ReadStateType,
    RoomCreateInput,
    RoomPage,
    RoomType,
    RoomUpdateInput,
    ThreadType,
    UnreadType,
    exclusive,
    message_types,
)
from engineroom.chat.messages import Messaging, charge_send, messaging_for
from engineroom.chat.messages_schemas import MessageCreate, MessageUpdate
from engineroom.chat.rooms_repository import MAX_PAGE as MAX_ROOMS_PAGE
from engineroom.chat.rooms_repository import PageRequest
from engineroom.chat.rooms_router import WRITE_LIMIT
from engineroom.chat.rooms_schemas import RoomCreate, RoomUpdate, UserRef
from engineroom.core.auth import Principal
from engineroom.core.errors import RateLimited

logger = structlog.get_logger("engineroom.chat.graphql")
M = TypeVar("M", bound=BaseModel)
P = ParamSpec("P")
T = TypeVar("T")

# The REST routes' scopes: one budget per user whichever API the writes come through.
ROOM_WRITES_SCOPE = "chat.rooms.write"
READ_POSITION_SCOPE = "chat.read"
MAX_QUERY_LENGTH = 100
MAX_SEARCH_LENGTH = 500


# ---- arguments ------------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _validated(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` checked by the REST body's model; its problems as GraphQL field errors."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        problems: dict[str, list[str]] = {}
        for item in exc.errors(include_url=False):
            name = ".".join(_camel(str(part)) for part in item["loc"]) or "input"
            problems.setdefault(name, []).append(item["msg"])
        raise InvalidInput(
            "The input is not valid; see fieldErrors.", field_errors=problems
        ) from None


def _id(value: strawberry.ID, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput(
            f"{name} is not a valid id.", field_errors={name: ["is not a valid id"]}
        ) from None


def _optional_id(value: strawberry.ID | None, name: str) -> uuid.UUID | None:
    return _id(value, name) if value is not None else None


def _page_size(first: int, maximum: int) -> int:
    if not 1 <= first <= maximum:
        raise InvalidInput(
            f"first must be between 1 and {maximum}.",
            field_errors={"first": [f"must be 1 to {maximum}"]},
        )
    return first


def _text(value: str | None, name: str, maximum: int) -> str | None:
    if value is not None and len(value) > maximum:
        raise InvalidInput(
            f"{name} is too long.", field_errors={name: [f"at most {maximum} characters"]}
        )
    return value


def _user_ref(user_id: strawberry.ID | None, username: str | None) -> UserRef:
    return _validated(UserRef, {"user_id": user_id, "username": username})


# ---- the caller and their limits ------------------------------------------------------------


async def _user(info: Ctx) -> Principal:
    """The signed-in caller, who must be a user (service credentials act in no room)."""
    principal = await info.context.require_principal()
    rooms.actor_id(principal)
    return principal


async def _charge(info: Ctx, principal: Principal, limit: str, scope: str) -> None:
    try:
        result = await info.context.platform.rate_limiter.hit(
            limit, scope, f"user:{principal.subject}"
        )
    except StorageError as exc:
        # Fail open like the REST routes: /readyz reports the outage.
        logger.error("rate_limit_unavailable", scope=scope, error=str(exc))
        return
    if not result.allowed:
        raise RateLimited(
            f"Too many requests; retry in {result.retry_after} s.", headers=result.headers()
        )


async def _room_writer(info: Ctx) -> Principal:
    principal = await _user(info)
    await _charge(info, principal, WRITE_LIMIT, ROOM_WRITES_SCOPE)
    return principal


def _messaging(info: Ctx) -> Messaging:
    return messaging_for(info.context.platform)


async def _run(
    info: Ctx,
    service: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``service(session, *args, **kwargs)`` on the operation's session (see ``exclusive``)."""
    return await exclusive(info, lambda: service(info.context.session, *args, **kwargs))


def _message(info: Ctx, rendered: dict[str, Any]) -> MessageType:
    return message_types(info, [rendered])[0]


# ---- message pages --------------------------------------------------------------------------


class _Window(TypedDict):
    """Where a page of messages is, as history's services take it."""

    before: uuid.UUID | None
    after: uuid.UUID | None
    limit: int


def _window(before: strawberry.ID | None, after: strawberry.ID | None, first: int) -> _Window:
    return _Window(
        before=_optional_id(before, "before"),
        after=_optional_id(after, "after"),
        limit=_page_size(first, history.MAX_PAGE),
    )


def _connection(info: Ctx, page: dict[str, Any], window: _Window) -> MessageConnection:
    from_cursor = window["before"] is not None or window["after"] is not None
    return MessageConnection.of(
        info, page["messages"], has_more=page["has_more"], from_cursor=from_cursor
    )


# ---- queries --------------------------------------------------------------------------------


async def _chat_rooms(info: Ctx, first: int = 50, after: str | None = None) -> RoomPage:
    principal = await _user(info)
    page = PageRequest(limit=_page_size(first, MAX_ROOMS_PAGE), cursor=after)
    return RoomPage.of(await _run(info, rooms.my_rooms, principal, page), principal)


async def _chat_room(info: Ctx, id: strawberry.ID) -> RoomType | None:
    principal = await _user(info)
    room_id = _id(id, "id")
    try:
        view = await _run(info, rooms.get_room, principal, room_id)
    except RoomNotFound:
        return None
    return RoomType.of(view, principal)


async def _chat_directory(
    info: Ctx, q: str | None = None, first: int = 50, after: str | None = None
) -> RoomPage:
    principal = await _user(info)
    query = _text(q, "q", MAX_QUERY_LENGTH) or None
    page = PageRequest(limit=_page_size(first, MAX_ROOMS_PAGE), cursor=after)
    found = await _run(info, rooms.directory, principal, page, query=query)
    return RoomPage.of(found, principal)


async def _chat_messages(
    info: Ctx,
    room_id: strawberry.ID,
    before: strawberry.ID | None = None,
    after: strawberry.ID | None = None,
    first: int = history.DEFAULT_PAGE,
) -> MessageConnection:
    principal = await _user(info)
    room = _id(room_id, "roomId")
    window = _window(before, after, first)
    page = await _run(info, history.room_history, principal=principal, room_id=room, **window)
    return _connection(info, page, window)


async def _chat_thread(
    info: Ctx,
    message_id: strawberry.ID,
    before: strawberry.ID | None = None,
    after: strawberry.ID | None = None,
    first: int = history.DEFAULT_PAGE,
) -> ThreadType:
    principal = await _user(info)
    message = _id(message_id, "messageId")
    window = _window(before, after, first)
    page = await _run(info, history.thread, principal=principal, message_id=message, **window)
    replies = _connection(info, page, window)
    return ThreadType(root=_message(info, page["root"]), replies=replies)


async def _chat_search(
    info: Ctx, q: str, room_id: strawberry.ID | None = None, first: int = 20
) -> list[MessageType]:
    principal = await _user(info)
    query = _text(q, "q", MAX_SEARCH_LENGTH) or ""
    if not query:
        raise InvalidInput("Give words to search for.", field_errors={"q": ["is empty"]})
    room = _optional_id(room_id, "roomId")
    limit = _page_size(first, history.MAX_SEARCH_RESULTS)
    index = _messaging(info).search
    found = await _run(
        info,
        history.search_messages,
        principal=principal,
        index=index,
        query=query,
        room_id=room,
        limit=limit,
    )
    return message_types(info, found["messages"])


async def _chat_unread(info: Ctx) -> UnreadType:
    principal = await _user(info)
    return UnreadType.of(await _run(info, receipts.unread_summary, principal))


async def _chat_members(
    info: Ctx, room_id: strawberry.ID, first: int = 50, after: str | None = None
) -> MemberPage:
    principal = await _user(info)
    room = _id(room_id, "roomId")
    page = PageRequest(limit=_page_size(first, MAX_ROOMS_PAGE), cursor=after)
    found = await _run(info, membership.list_members, principal, room, page)
    return MemberPage(
        nodes=[MemberType.of(view) for view in found.items], next_cursor=found.next_cursor
    )


@strawberry.type
class ChatQuery:
    chat_rooms: RoomPage = strawberry.field(
        resolver=_chat_rooms, description="My rooms, the most recently active first."
    )
    chat_room: RoomType | None = strawberry.field(
        resolver=_chat_room, description="A room; null when unknown or hidden from the caller."
    )
    chat_directory: RoomPage = strawberry.field(
        resolver=_chat_directory, description="Public and invite-only rooms, the newest first."
    )
    chat_messages: MessageConnection = strawberry.field(
        resolver=_chat_messages,
        description="A page of a room's top-level messages: newest first, or with `after` "
        "oldest first. Continue with `before`/`after` set to `pageInfo.endCursor`.",
    )
    chat_thread: ThreadType = strawberry.field(
        resolver=_chat_thread, description="The thread a message starts or belongs to."
    )
    chat_search: list[MessageType] = strawberry.field(
        resolver=_chat_search,
        description="Messages of my rooms (or of `roomId` only) matching every word of "
        "`q`, the best match first.",
    )
    chat_unread: UnreadType = strawberry.field(
        resolver=_chat_unread,
        description="Unread and mention counts of each of my rooms, and totals.",
    )
    chat_members: MemberPage = strawberry.field(
        resolver=_chat_members, description="A room's members, in the order they joined."
    )


# ---- mutations ------------------------------------------------------------------------------


async def _chat_create_room(info: Ctx, input: RoomCreateInput) -> RoomType:
    principal = await _room_writer(info)
    body = _validated(
        RoomCreate, {"name": input.name, "kind": input.kind.value, "topic": input.topic}
    )
    view = await _run(
        info, rooms.create_room, principal, name=body.name, kind=body.kind, topic=body.topic
    )
    return RoomType.of(view, principal)


async def _chat_update_room(info: Ctx, id: strawberry.ID, input: RoomUpdateInput) -> RoomType:
    principal = await _user(info)
    room_id = _id(id, "id")
    changes = _validated(RoomUpdate, input.changes()).model_dump(exclude_unset=True)
    view = await _run(info, rooms.update_room, principal, room_id, changes=changes)
    return RoomType.of(view, principal)


async def _chat_join_room(info: Ctx, id: strawberry.ID) -> RoomType:
    principal = await _user(info)
    room_id = _id(id, "id")
    view, _ = await _run(info, membership.join, principal, room_id)
    return RoomType.of(view, principal)


async def _chat_leave_room(info: Ctx, id: strawberry.ID) -> bool:
    principal = await _user(info)
    room_id = _id(id, "id")
    await _run(info, membership.leave, principal, room_id)
    return True


async def _chat_open_direct(
    info: Ctx, user_id: strawberry.ID | None = None, username: str | None = None
) -> RoomType:
    principal = await _room_writer(info)
    ref = _user_ref(user_id, username)
    view, _ = await _run(
        info, rooms.direct_room, principal, user_id=ref.user_id, username=ref.username
    )
    return RoomType.of(view, principal)


async def _chat_invite(
    info: Ctx,
    room_id: strawberry.ID,
    user_id: strawberry.ID | None = None,
    username: str | None = None,
) -> InviteType:
    principal = await _room_writer(info)
    room = _id(room_id, "roomId")
    ref = _user_ref(user_id, username)
    view = await _run(
        info, membership.create_invite, principal, room, user_id=ref.user_id, username=ref.username
    )
    return InviteType.of(view)


async def _chat_accept_invite(info: Ctx, room_id: strawberry.ID) -> RoomType:
    principal = await _user(info)
    room = _id(room_id, "roomId")
    return RoomType.of(await _run(info, membership.accept_invite, principal, room), principal)


async def _chat_send_message(info: Ctx, room_id: strawberry.ID, input: MessageInput) -> MessageType:
    principal = await _user(info)
    room = _id(room_id, "roomId")
    draft = _validated(MessageCreate, input.data())
    messaging = _messaging(info)
    await charge_send(messaging, principal)
    sent = await _run(
        info,
        messages.send_message,
        principal=principal,
        room_id=room,
        draft=draft,
        messaging=messaging,
    )
    return _message(info, sent)


async def _chat_edit_message(info: Ctx, id: strawberry.ID, body: str) -> MessageType:
    principal = await _user(info)
    message_id = _id(id, "id")
    update = _validated(MessageUpdate, {"body": body})
    edited = await _run(
        info,
        messages.edit_message,
        principal=principal,
        message_id=message_id,
        body=update.body,
        messaging=_messaging(info),
    )
    return _message(info, edited)


async def _chat_delete_message(info: Ctx, id: strawberry.ID) -> bool:
    principal = await _user(info)
    message_id = _id(id, "id")
    await _run(
        info,
        messages.delete_message,
        principal=principal,
        message_id=message_id,
        messaging=_messaging(info),
    )
    return True


async def _chat_react(info: Ctx, message_id: strawberry.ID, emoji: str) -> MessageType:
    principal = await _user(info)
    message = _id(message_id, "messageId")
    reacted = await _run(
        info,
        reactions.react,
        principal=principal,
        message_id=message,
        emoji=emoji,
        messaging=_messaging(info),
    )
    return _message(info, reacted)


async def _chat_unreact(info: Ctx, message_id: strawberry.ID, emoji: str) -> MessageType:
    principal = await _user(info)
    message = _id(message_id, "messageId")
    unreacted = await _run(
        info, reactions.unreact, principal=principal, message_id=message, emoji=emoji
    )
    return _message(info, unreacted)


async def _chat_mark_read(
    info: Ctx,
    room_id: strawberry.ID,
    message_id: strawberry.ID | None = None,
    seq: int | None = None,
) -> ReadStateType:
    principal = await _user(info)
    room = _id(room_id, "roomId")
    position = _validated(ReadPosition, {"message_id": message_id, "seq": seq})
    limit = settings_of(info.context.platform).read_rate_limit
    await _charge(info, principal, limit, READ_POSITION_SCOPE)
    state = await _run(
        info,
        receipts.mark_read,
        principal,
        room_id=room,
        message_id=position.message_id,
        seq=position.seq,
    )
    return ReadStateType.of(state)


@strawberry.type
class ChatMutation:
    chat_create_room: RoomType = strawberry.mutation(
        resolver=_chat_create_room, description="Create a room; the caller owns it."
    )
    chat_update_room: RoomType = strawberry.mutation(
        resolver=_chat_update_room,
        description="Rename a room or change its topic (owner, moderators).",
    )
    chat_join_room: RoomType = strawberry.mutation(
        resolver=_chat_join_room, description="Join a public room, or one the caller is invited to."
    )
    chat_leave_room: bool = strawberry.mutation(
        resolver=_chat_leave_room, description="Leave a room (an owner hands it over first)."
    )
    chat_open_direct: RoomType = strawberry.mutation(
        resolver=_chat_open_direct,
        description="The direct room with another user, created on first use.",
    )
    chat_invite: InviteType = strawberry.mutation(
        resolver=_chat_invite, description="Invite a user (by id or username) to a room."
    )
    chat_accept_invite: RoomType = strawberry.mutation(
        resolver=_chat_accept_invite, description="Accept my invite to a room: join it."
    )
    chat_send_message: MessageType = strawberry.mutation(
        resolver=_chat_send_message, description="Send a message, or a reply in a thread."
    )
    chat_edit_message: MessageType = strawberry.mutation(
        resolver=_chat_edit_message, description="Replace the body of one's own message."
    )
    chat_delete_message: bool = strawberry.mutation(
        resolver=_chat_delete_message, description="Delete a message, leaving a tombstone."
    )
    chat_react: MessageType = strawberry.mutation(
        resolver=_chat_react,
        description="React to a message (adding a reaction twice is no error).",
    )
    chat_unreact: MessageType = strawberry.mutation(
        resolver=_chat_unreact, description="Take one's reaction back (a missing one is no error)."
    )
    chat_mark_read: ReadStateType = strawberry.mutation(
        resolver=_chat_mark_read,
        description="Mark a room read up to a message (by id or seq); never moves backwards.",
    )


QUERIES = (ChatQuery,)
MUTATIONS = (ChatMutation,)
