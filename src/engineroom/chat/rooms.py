"""Rooms: create, read, change, delete and list them, and the direct room of two users.

Membership (join, leave, invites) is in ``membership.py`` and moderation (kick, ban,
mute, roles) in ``moderation.py``; both start from the helpers here. Every change is
recorded with ``events.record`` in the caller's transaction, so live clients hear of it
once it commits.

A private room is visible to its members, to platform moderators and to users holding a
pending invite to it (so they can see what they are invited to); to anyone else it does
not exist (404), as ``access.room_access`` decides.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import access, events
from engineroom.chat import rooms_repository as repo
from engineroom.chat.errors import (
    CannotDirectMessageSelf,
    DirectRoomRestricted,
    NotAUser,
    NotRoomOwner,
    RoomNotFound,
    UserNotFound,
)
from engineroom.chat.models import Invite, Member, MemberRole, Room, RoomKind
from engineroom.core.auth import Principal
from engineroom.core.clock import isoformat_z, new_id, utcnow
from engineroom.identity import public as identity

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RoomView:
    """A room as one user sees it."""

    room: Room
    member: Member | None
    viewer: uuid.UUID

    @property
    def peer_id(self) -> uuid.UUID | None:
        """In a direct room, the other user of the pair (``None`` elsewhere)."""
        if self.room.direct_key is None:
            return None
        first, _, second = self.room.direct_key.partition(":")
        pair = (uuid.UUID(first), uuid.UUID(second))
        if self.viewer not in pair:
            return None
        return pair[1] if pair[0] == self.viewer else pair[0]


@dataclass(frozen=True, slots=True)
class MemberView:
    member: Member
    username: str | None


@dataclass(frozen=True, slots=True)
class InviteView:
    invite: Invite
    room: Room
    username: str | None
    """The invited user's."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


# ---- helpers shared by the room use cases ------------------------------------------------


def actor_id(principal: Principal) -> uuid.UUID:
    """The caller's user id; service credentials (not users) cannot act in rooms."""
    try:
        return access.user_id_of(principal)
    except ValueError:
        raise NotAUser("Only users act in chat rooms.") from None


def page_of(rows: Sequence[T], page: repo.PageRequest, key: Callable[[T], repo.Key]) -> Page[T]:
    """Cut the extra row off; ``key(row)`` gives the cursor of the page's last row."""
    items, more = repo.split_page(rows, page)
    return Page(items, repo.encode_cursor(key(items[-1])) if more and items else None)


def direct_key(first: uuid.UUID, second: uuid.UUID) -> str:
    low, high = sorted((str(first), str(second)))
    return f"{low}:{high}"


def ensure_not_direct(room: Room, message: str) -> None:
    if room.kind == RoomKind.DIRECT.value:
        raise DirectRoomRestricted(message)


async def visible_room(
    session: AsyncSession, room_id: uuid.UUID, principal: Principal
) -> access.RoomAccess:
    """The room and the caller's membership; 404 when the caller may not see it."""
    try:
        return await access.room_access(session, room_id, principal)
    except RoomNotFound:
        room = await access.get_room(session, room_id)
        if room is None or room.kind != RoomKind.PRIVATE.value:
            raise
        if await repo.get_invite(session, room_id, actor_id(principal)) is None:
            raise
        return access.RoomAccess(room, None)


async def locked_room(
    session: AsyncSession, room_id: uuid.UUID, principal: Principal
) -> access.RoomAccess:
    """``visible_room``, with the room row locked for the rest of the transaction."""
    if await repo.lock_room(session, room_id) is None:
        raise RoomNotFound("No such room.")
    return await visible_room(session, room_id, principal)


async def find_user(
    session: AsyncSession, *, user_id: uuid.UUID | None, username: str | None
) -> identity.UserInfo:
    if user_id is not None:
        found = await identity.get_user(session, user_id)
        if found is None:
            raise UserNotFound(f"No user with id {user_id}.")
        return found
    found = await identity.get_user_by_username(session, username or "")
    if found is None:
        raise UserNotFound(f"No user named {username!r}.")
    return found


async def usernames(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    users = await identity.get_users(session, set(user_ids))
    return {user_id: user.username for user_id, user in users.items()}


def room_json(room: Room) -> dict[str, object]:
    """A room as live clients receive it."""
    return {
        "id": str(room.id),
        "kind": room.kind,
        "name": room.name,
        "topic": room.topic,
        "member_count": room.member_count,
        "created_by": str(room.created_by),
        "created_at": isoformat_z(room.created_at),
        "updated_at": isoformat_z(room.updated_at),
    }


def member_json(member: Member) -> dict[str, object]:
    return {
        "user_id": str(member.user_id),
        "role": member.role,
        "joined_at": isoformat_z(member.joined_at),
        "muted_until": isoformat_z(member.muted_until) if member.muted_until else None,
    }


# ---- rooms -------------------------------------------------------------------------------


async def create_room(
    session: AsyncSession, principal: Principal, *, name: str, kind: str, topic: str | None
) -> RoomView:
    """A new room whose creator is its owner and only member."""
    me = actor_id(principal)
    now = utcnow()
    room = Room(
        id=new_id(),
        kind=kind,
        name=name,
        topic=topic,
        created_by=me,
        last_seq=0,
        member_count=1,
        created_at=now,
        updated_at=now,
    )
    member = Member(
        room_id=room.id, user_id=me, role=MemberRole.OWNER.value, joined_at=now, last_read_seq=0
    )
    session.add(room)
    await session.flush()  # the room row first: members refer to it
    session.add(member)
    await session.flush()
    events.record(
        session, events.ROOM_CREATED, room_id=room.id, live={"room": room_json(room)}, users=[me]
    )
    return RoomView(room, member, me)


async def get_room(session: AsyncSession, principal: Principal, room_id: uuid.UUID) -> RoomView:
    found = await visible_room(session, room_id, principal)
    return RoomView(found.room, found.member, actor_id(principal))


async def update_room(
    session: AsyncSession,
    principal: Principal,
    room_id: uuid.UUID,
    *,
    changes: Mapping[str, str | None],
) -> RoomView:
    """Change the name and/or topic (``changes`` holds only what the caller sent)."""
    found = await visible_room(session, room_id, principal)
    room = found.room
    ensure_not_direct(room, "Direct rooms have no name or topic to change.")
    access.ensure_moderator(principal, found.member)
    changed = {key: value for key, value in changes.items() if getattr(room, key) != value}
    if changed:
        for key, value in changed.items():
            setattr(room, key, value)
        room.updated_at = utcnow()
        events.record(
            session,
            events.ROOM_UPDATED,
            room_id=room.id,
            live={"room": room_json(room), "by": str(actor_id(principal))},
        )
    return RoomView(room, found.member, actor_id(principal))


async def delete_room(session: AsyncSession, principal: Principal, room_id: uuid.UUID) -> None:
    """Delete a room with everything in it: its owner, or a platform moderator."""
    found = await visible_room(session, room_id, principal)
    is_owner = found.member is not None and found.member.role == MemberRole.OWNER.value
    if not is_owner and not principal.can(access.MODERATE_PERMISSION):
        raise NotRoomOwner("Only the room's owner (or a platform moderator) may delete it.")
    members = await access.member_ids(session, room_id)
    events.record(
        session,
        events.ROOM_DELETED,
        room_id=room_id,
        live={"by": str(actor_id(principal))},
        users=members,
    )
    await repo.delete_room(session, room_id)


async def my_rooms(
    session: AsyncSession, principal: Principal, page: repo.PageRequest
) -> Page[RoomView]:
    """The caller's rooms, the most recently active first."""
    me = actor_id(principal)
    rows = await repo.rooms_of_user(session, me, page)
    found = page_of(rows, page, lambda row: repo.Key(row[2], row[0].id))
    views = [RoomView(room, member, me) for room, member, _ in found.items]
    return Page(views, found.next_cursor)


async def directory(
    session: AsyncSession, principal: Principal, page: repo.PageRequest, *, query: str | None
) -> Page[RoomView]:
    """Public and invite-only rooms (never private ones), the newest first."""
    me = actor_id(principal)
    rows = await repo.listed_rooms(session, page, name_contains=query)
    found = page_of(rows, page, lambda room: repo.Key(room.created_at, room.id))
    ids = [room.id for room in found.items]
    mine = await session.scalars(
        select(Member).where(Member.user_id == me, Member.room_id.in_(ids))
    )
    by_room = {member.room_id: member for member in mine}
    views = [RoomView(room, by_room.get(room.id), me) for room in found.items]
    return Page(views, found.next_cursor)


# ---- direct rooms ------------------------------------------------------------------------


async def direct_room(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: uuid.UUID | None = None,
    username: str | None = None,
) -> tuple[RoomView, bool]:
    """The one direct room of the caller and another user, created if needed.

    Returns the room and whether it was created. Two concurrent first calls for the same
    pair both end with the same room: the loser of the race on the unique ``direct_key``
    reads the winner's room.
    """
    me = actor_id(principal)
    peer = await find_user(session, user_id=user_id, username=username)
    if peer.id == me:
        raise CannotDirectMessageSelf("You cannot start a direct conversation with yourself.")
    key = direct_key(me, peer.id)
    room = await repo.room_by_direct_key(session, key)
    created = False
    if room is None:
        try:
            async with session.begin_nested():
                room = await _new_direct_room(session, key, me, peer.id)
            created = True
        except IntegrityError:
            room = await repo.room_by_direct_key(session, key, lock=True)
            if room is None:
                raise
    if created:
        events.record(
            session,
            events.ROOM_CREATED,
            room_id=room.id,
            live={"room": room_json(room)},
            users=[me, peer.id],
        )
    member = await access.get_member(session, room.id, me)
    return RoomView(room, member, me), created


async def _new_direct_room(session: AsyncSession, key: str, me: uuid.UUID, peer: uuid.UUID) -> Room:
    now = utcnow()
    room = Room(
        id=new_id(),
        kind=RoomKind.DIRECT.value,
        name=None,
        topic=None,
        created_by=me,
        direct_key=key,
        last_seq=0,
        member_count=2,
        created_at=now,
        updated_at=now,
    )
    session.add(room)
    await session.flush()  # fails here when the pair's room exists already
    for user in (me, peer):
        session.add(
            Member(
                room_id=room.id,
                user_id=user,
                role=MemberRole.MEMBER.value,
                joined_at=now,
                last_read_seq=0,
            )
        )
    await session.flush()
    return room
