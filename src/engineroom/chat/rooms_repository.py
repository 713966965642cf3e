"""The SQL of rooms, members, invites and bans.

Lists are paged by offset or by an opaque cursor: the ordering key of the last row of a
page (a timestamp and an id, or an id alone), so a cursor page never skips or repeats a
row that keeps its key. Every membership change starts with ``lock_room``: the room row
is the lock that serialises joins, leaves, handovers and ``member_count`` updates of one
room (``FOR UPDATE`` on PostgreSQL and MariaDB; SQLite's writer lock does it there).
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar, TypeVarTuple

from sqlalchemy import ColumnElement, Select, SQLColumnExpression, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from engineroom.chat.errors import InvalidCursor
from engineroom.chat.models import Ban, Invite, Member, MemberRole, Message, Room, RoomKind

MAX_PAGE = 100
LISTED_KINDS = (RoomKind.PUBLIC.value, RoomKind.INVITE_ONLY.value)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY = struct.Struct(">q16s")
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a list route asks for: ``limit`` rows after ``cursor``, or from ``offset``."""

    limit: int = 50
    offset: int = 0
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Key:
    """A row's place in a list ordered by (time, id)."""

    at: datetime
    id: uuid.UUID


def encode_cursor(key: Key) -> str:
    micros = (key.at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(_KEY.pack(micros, key.id.bytes)).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    try:
        raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode())
        micros, id_bytes = _KEY.unpack(raw)
        return Key(_EPOCH + timedelta(microseconds=micros), uuid.UUID(bytes=id_bytes))
    except (ValueError, binascii.Error, struct.error, OverflowError):
        raise InvalidCursor("The cursor is not valid; start again from the first page.") from None


def _after(
    time_column: SQLColumnExpression[datetime],
    id_column: SQLColumnExpression[uuid.UUID],
    key: Key,
    *,
    desc: bool,
) -> ColumnElement[bool]:
    if desc:
        return or_(time_column < key.at, and_(time_column == key.at, id_column < key.id))
    return or_(time_column > key.at, and_(time_column == key.at, id_column > key.id))


def _paged(
    query: Select[*_Ts],
    page: PageRequest,
    time_column: SQLColumnExpression[datetime],
    id_column: SQLColumnExpression[uuid.UUID],
    *,
    desc: bool,
) -> Select[*_Ts]:
    if page.cursor is not None:
        query = query.where(_after(time_column, id_column, decode_cursor(page.cursor), desc=desc))
    elif page.offset:
        query = query.offset(page.offset)
    order = (time_column.desc(), id_column.desc()) if desc else (time_column, id_column)
    # One row more than asked tells whether another page follows.
    return query.order_by(*order).limit(page.limit + 1)


def split_page(rows: Sequence[_T], page: PageRequest) -> tuple[list[_T], bool]:
    """The rows of the page, and whether more follow."""
    return list(rows[: page.limit]), len(rows) > page.limit


# ---- rooms -------------------------------------------------------------------------------


async def lock_room(session: AsyncSession, room_id: uuid.UUID) -> Room | None:
    """The room, locked for this transaction and read afresh."""
    query = (
        select(Room)
        .where(Room.id == room_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(query)).first()


async def room_by_direct_key(
    session: AsyncSession, direct_key: str, *, lock: bool = False
) -> Room | None:
    query = select(Room).where(Room.direct_key == direct_key)
    if lock:
        # A locking read sees the newest committed row even in a REPEATABLE READ snapshot
        # (MariaDB), which is what the loser of a concurrent create needs.
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await session.scalars(query)).first()


async def delete_room(session: AsyncSession, room_id: uuid.UUID) -> None:
    """Delete the room; members, invites, bans and messages go with it (ON DELETE CASCADE)."""
    await session.execute(delete(Room).where(Room.id == room_id))


async def rooms_of_user(
    session: AsyncSession, user_id: uuid.UUID, page: PageRequest
) -> list[tuple[Room, Member, datetime]]:
    """The user's rooms with their membership and last activity, the most recent first.

    Activity is the time of the room's newest message, or the room's creation before any.
    """
    newest = aliased(Message)
    activity = func.coalesce(newest.created_at, Room.created_at)
    query = (
        select(Room, Member, activity)
        .join(Member, and_(Member.room_id == Room.id, Member.user_id == user_id))
        .outerjoin(newest, and_(newest.room_id == Room.id, newest.seq == Room.last_seq))
    )
    rows = await session.execute(_paged(query, page, activity, Room.id, desc=True))
    return [(room, member, at) for room, member, at in rows]


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def listed_rooms(
    session: AsyncSession, page: PageRequest, *, name_contains: str | None = None
) -> list[Room]:
    """Public and invite-only rooms, the newest first; ``name_contains`` ignores case."""
    query = select(Room).where(Room.kind.in_(LISTED_KINDS))
    if name_contains:
        query = query.where(func.lower(Room.name).like(_like_pattern(name_contains), escape="\\"))
    return list(await session.scalars(_paged(query, page, Room.created_at, Room.id, desc=True)))


# ---- members -----------------------------------------------------------------------------


async def members_of_room(
    session: AsyncSession, room_id: uuid.UUID, page: PageRequest
) -> list[Member]:
    """Members in the order they joined."""
    query = select(Member).where(Member.room_id == room_id)
    return list(
        await session.scalars(_paged(query, page, Member.joined_at, Member.user_id, desc=False))
    )


async def longest_standing(
    session: AsyncSession, room_id: uuid.UUID, *, role: MemberRole, besides: uuid.UUID
) -> Member | None:
    """The member with ``role`` who joined first (other than ``besides``)."""
    query = (
        select(Member)
        .where(Member.room_id == room_id, Member.role == role.value, Member.user_id != besides)
        .order_by(Member.joined_at, Member.user_id)
        .limit(1)
    )
    return (await session.scalars(query)).first()


async def room_ids_of_user(session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The rooms the user belongs to, in id order (the order their rows get locked)."""
    query = select(Member.room_id).where(Member.user_id == user_id).order_by(Member.room_id)
    return list(await session.scalars(query))


# ---- invites -----------------------------------------------------------------------------


async def get_invite(
    session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID
) -> Invite | None:
    return await session.get(Invite, (room_id, user_id))


async def invites_of_user(
    session: AsyncSession, user_id: uuid.UUID, page: PageRequest
) -> list[tuple[Invite, Room]]:
    """The user's pending invites with their rooms, the newest first."""
    query = select(Invite, Room).join(Room, Room.id == Invite.room_id)
    query = query.where(Invite.user_id == user_id)
    rows = await session.execute(_paged(query, page, Invite.created_at, Invite.room_id, desc=True))
    return [(invite, room) for invite, room in rows]


async def invites_of_room(
    session: AsyncSession, room_id: uuid.UUID, page: PageRequest
) -> list[Invite]:
    query = select(Invite).where(Invite.room_id == room_id)
    return list(
        await session.scalars(_paged(query, page, Invite.created_at, Invite.user_id, desc=True))
    )


async def delete_invites_of_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(delete(Invite).where(Invite.user_id == user_id))


# ---- bans --------------------------------------------------------------------------------


async def active_bans_of_room(
    session: AsyncSession, room_id: uuid.UUID, page: PageRequest, *, now: datetime
) -> list[Ban]:
    query = select(Ban).where(
        Ban.room_id == room_id, or_(Ban.expires_at.is_(None), Ban.expires_at > now)
    )
    return list(await session.scalars(_paged(query, page, Ban.created_at, Ban.user_id, desc=True)))


async def delete_bans_of_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(delete(Ban).where(Ban.user_id == user_id))
