"""The SQL of read receipts and unread counts.

What counts as unread for a member (docs/chat.md, "Receipts, unread counts, typing and
presence"): a message of the room with ``seq`` above the member's ``last_read_seq`` that
is not deleted and was written by someone else, and that is either a top-level message,
or mentions the member, or a reply in a thread the member takes part in (they wrote its
root or one of its replies). Mentions are the unread messages that mention the member, so
they are always part of the unread count.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from engineroom.chat.models import Member, Message, Room


@dataclass(frozen=True, slots=True)
class ReadState:
    """One member's position and counts in one room."""

    room_id: uuid.UUID
    last_read_seq: int
    last_seq: int
    unread: int
    mentions: int


def _mentions(user_id: uuid.UUID) -> ColumnElement[bool]:
    # ``mentions`` is a JSON list of user id strings; the quoted id matches one element
    # exactly on every dialect (ids are canonical lowercase UUIDs, free of LIKE wildcards).
    return cast(Message.mentions, String).like(f'%"{user_id}"%')


def _takes_part(user_id: uuid.UUID) -> ColumnElement[bool]:
    """The message is a reply in a thread ``user_id`` started or replied to."""
    mine = aliased(Message, name="mine")
    wrote_root = exists().where(mine.id == Message.thread_root_id, mine.author_id == user_id)
    replied = exists().where(
        mine.thread_root_id == Message.thread_root_id, mine.author_id == user_id
    )
    return or_(wrote_root, replied)


def _read_states(user_id: uuid.UUID) -> Select[uuid.UUID, int, int, int, int]:
    """One row per room of ``user_id``: position, newest seq, unread and mentions (one
    grouped query for every room, whatever their number)."""
    mentioned = _mentions(user_id)
    present = Message.id.is_not(None)  # the outer join found an unread candidate
    counted = and_(present, or_(Message.thread_root_id.is_(None), mentioned, _takes_part(user_id)))
    unread = func.coalesce(func.sum(case((counted, 1), else_=0)), 0)
    mentions = func.coalesce(func.sum(case((and_(present, mentioned), 1), else_=0)), 0)
    return (
        select(Member.room_id, Member.last_read_seq, Room.last_seq, unread, mentions)
        .join(Room, Room.id == Member.room_id)
        .outerjoin(
            Message,
            and_(
                Message.room_id == Member.room_id,
                Message.seq > Member.last_read_seq,
                Message.deleted_at.is_(None),
                Message.author_id != user_id,
            ),
        )
        .where(Member.user_id == user_id)
        .group_by(Member.room_id, Member.last_read_seq, Room.last_seq)
        .order_by(Member.room_id)
    )


async def read_states(
    session: AsyncSession, user_id: uuid.UUID, *, room_id: uuid.UUID | None = None
) -> list[ReadState]:
    """The read state of every room ``user_id`` is a member of (or of ``room_id`` only)."""
    statement = _read_states(user_id)
    if room_id is not None:
        statement = statement.where(Member.room_id == room_id)
    rows = (await session.execute(statement)).all()
    return [
        ReadState(
            room_id=row[0],
            last_read_seq=int(row[1]),
            last_seq=int(row[2]),
            unread=int(row[3]),
            mentions=int(row[4]),
        )
        for row in rows
    ]


async def seq_of_message(
    session: AsyncSession, room_id: uuid.UUID, message_id: uuid.UUID
) -> int | None:
    """The ``seq`` of a message of the room, or ``None`` (unknown, or another room's)."""
    seq = await session.scalar(
        select(Message.seq).where(Message.id == message_id, Message.room_id == room_id)
    )
    return None if seq is None else int(seq)


async def advance(
    session: AsyncSession,
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    seq: int,
    at: datetime,
) -> bool:
    """Move the read position forward to ``seq``; ``False`` when it already is there or
    further (a guarded update: concurrent devices can never move it backwards)."""
    result = await session.execute(
        update(Member)
        .where(
            Member.room_id == room_id,
            Member.user_id == user_id,
            Member.last_read_seq < seq,
        )
        .values(last_read_seq=seq, last_read_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def rooms_behind(session: AsyncSession, user_id: uuid.UUID) -> list[tuple[uuid.UUID, int]]:
    """(room id, newest seq) of the rooms whose newest message ``user_id`` has not read."""
    rows = await session.execute(
        select(Member.room_id, Room.last_seq)
        .join(Room, Room.id == Member.room_id)
        .where(Member.user_id == user_id, Member.last_read_seq < Room.last_seq)
        .order_by(Member.room_id)
    )
    return [(row[0], int(row[1])) for row in rows]


async def advance_many(
    session: AsyncSession,
    user_id: uuid.UUID,
    positions: Sequence[tuple[uuid.UUID, int]],
    at: datetime,
) -> list[uuid.UUID]:
    """``advance`` for several rooms; the rooms whose position moved."""
    moved: list[uuid.UUID] = []
    for room_id, seq in positions:
        if await advance(session, room_id, user_id, seq, at):
            moved.append(room_id)
    return moved


@dataclass(frozen=True, slots=True)
class Receipt:
    user_id: uuid.UUID
    last_read_seq: int
    last_read_at: datetime | None


async def receipts(
    session: AsyncSession, room_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[Receipt]:
    """The members' read positions, by user id, ``limit`` of them after ``after``."""
    statement = select(Member.user_id, Member.last_read_seq, Member.last_read_at).where(
        Member.room_id == room_id
    )
    if after is not None:
        statement = statement.where(Member.user_id > after)
    rows = await session.execute(statement.order_by(Member.user_id).limit(limit))
    return [Receipt(row[0], int(row[1]), row[2]) for row in rows]


async def member_page(
    session: AsyncSession, room_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """The room's member ids in id order, ``limit`` of them after ``after``."""
    statement = select(Member.user_id).where(Member.room_id == room_id)
    if after is not None:
        statement = statement.where(Member.user_id > after)
    return list(await session.scalars(statement.order_by(Member.user_id).limit(limit)))
