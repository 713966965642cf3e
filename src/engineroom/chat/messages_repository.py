"""The SQL of messages and reactions: small, concrete statements the services compose."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, case, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from engineroom.chat.models import Ban, Member, Message, Reaction, Room
from engineroom.chat.search import MessageSearch


@dataclass(frozen=True, slots=True)
class ReactionCount:
    emoji: str
    count: int
    me: bool
    """Whether the viewer is one of those who reacted."""


@dataclass(frozen=True, slots=True)
class Window:
    """A page of a sequence of messages: seq bounds (exclusive) and its direction."""

    before_seq: int | None
    after_seq: int | None
    limit: int

    @property
    def oldest_first(self) -> bool:
        return self.after_seq is not None


async def take_next_seq(session: AsyncSession, room: Room) -> int:
    """Reserve the room's next ``seq``.

    The guarded increment locks the room row until the transaction ends, so concurrent
    senders in one room queue here and get consecutive numbers; reading the value back
    in the same transaction sees this transaction's own update on every database
    (MariaDB has no ``UPDATE ... RETURNING``).
    """
    await session.execute(
        update(Room)
        .where(Room.id == room.id)
        .values(last_seq=Room.last_seq + 1)
        .execution_options(synchronize_session=False)
    )
    seq = int(await session.scalar(select(Room.last_seq).where(Room.id == room.id)) or 0)
    set_committed_value(room, "last_seq", seq)
    return seq


async def get_message(session: AsyncSession, message_id: uuid.UUID) -> Message | None:
    return await session.get(Message, message_id)


async def message_in_room(
    session: AsyncSession, room_id: uuid.UUID, message_id: uuid.UUID
) -> Message | None:
    message = await session.get(Message, message_id)
    return message if message is not None and message.room_id == room_id else None


async def count_reply(session: AsyncSession, root_id: uuid.UUID, at: datetime) -> None:
    """One more reply in the thread of ``root_id`` (an increment, safe under concurrency)."""
    await session.execute(
        update(Message)
        .where(Message.id == root_id)
        .values(reply_count=Message.reply_count + 1, last_reply_at=at)
        .execution_options(synchronize_session=False)
    )


def _windowed(statement: Select[Message], window: Window) -> Select[Message]:
    if window.before_seq is not None:
        statement = statement.where(Message.seq < window.before_seq)
    if window.after_seq is not None:
        statement = statement.where(Message.seq > window.after_seq)
    order = Message.seq.asc() if window.oldest_first else Message.seq.desc()
    # One more row than asked tells whether there is more in this direction.
    return statement.order_by(order).limit(window.limit + 1)


async def room_page(
    session: AsyncSession, room_id: uuid.UUID, window: Window
) -> tuple[list[Message], bool]:
    """Top-level messages of a room (thread replies excluded) in ``window``; has more."""
    statement = select(Message).where(Message.room_id == room_id, Message.thread_root_id.is_(None))
    rows = list(await session.scalars(_windowed(statement, window)))
    return rows[: window.limit], len(rows) > window.limit


async def thread_page(
    session: AsyncSession, root_id: uuid.UUID, window: Window
) -> tuple[list[Message], bool]:
    """Replies of the thread of ``root_id`` in ``window``; has more."""
    statement = select(Message).where(Message.thread_root_id == root_id)
    rows = list(await session.scalars(_windowed(statement, window)))
    return rows[: window.limit], len(rows) > window.limit


async def reactions_of(
    session: AsyncSession, message_ids: Collection[uuid.UUID], viewer: uuid.UUID | None
) -> dict[uuid.UUID, list[ReactionCount]]:
    """Reaction counts per message (one statement for any number of messages), each
    message's reactions in the order they first appeared."""
    if not message_ids:
        return {}
    # Without a viewer the comparison is "IS NULL", which no reaction matches.
    mine = func.max(case((Reaction.user_id == viewer, 1), else_=0))
    first = func.min(Reaction.created_at)
    statement = (
        select(Reaction.message_id, Reaction.emoji, func.count(), mine, first)
        .where(Reaction.message_id.in_(message_ids))
        .group_by(Reaction.message_id, Reaction.emoji)
        .order_by(Reaction.message_id, first, Reaction.emoji)
    )
    found: dict[uuid.UUID, list[ReactionCount]] = {}
    for message_id, emoji, count, me, _ in await session.execute(statement):
        found.setdefault(message_id, []).append(ReactionCount(emoji, int(count), bool(me)))
    return found


async def has_reaction(
    session: AsyncSession, message_id: uuid.UUID, user_id: uuid.UUID, emoji: str
) -> bool:
    return await session.get(Reaction, (message_id, user_id, emoji)) is not None


async def add_reaction(
    session: AsyncSession, message_id: uuid.UUID, user_id: uuid.UUID, emoji: str
) -> bool:
    """Add the reaction; ``False`` when a concurrent request added it first."""
    try:
        async with session.begin_nested():
            session.add(Reaction(message_id=message_id, user_id=user_id, emoji=emoji))
            await session.flush()
    except IntegrityError:
        return False
    return True


async def remove_reaction(
    session: AsyncSession, message_id: uuid.UUID, user_id: uuid.UUID, emoji: str
) -> bool:
    """Remove the reaction; ``False`` when there was none."""
    result = await session.execute(
        delete(Reaction).where(
            Reaction.message_id == message_id,
            Reaction.user_id == user_id,
            Reaction.emoji == emoji,
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def reaction_kinds_of(
    session: AsyncSession, message_id: uuid.UUID, user_id: uuid.UUID
) -> int:
    """How many different reactions ``user_id`` put on the message."""
    return int(
        await session.scalar(
            select(func.count()).where(
                Reaction.message_id == message_id, Reaction.user_id == user_id
            )
        )
        or 0
    )


async def reaction_count(session: AsyncSession, message_id: uuid.UUID, emoji: str) -> int:
    return int(
        await session.scalar(
            select(func.count()).where(Reaction.message_id == message_id, Reaction.emoji == emoji)
        )
        or 0
    )


async def clear_reactions(session: AsyncSession, message_id: uuid.UUID) -> None:
    await session.execute(delete(Reaction).where(Reaction.message_id == message_id))


async def members_among(
    session: AsyncSession, room_id: uuid.UUID, user_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of ``user_ids`` who are members of the room."""
    if not user_ids:
        return set()
    found = await session.scalars(
        select(Member.user_id).where(Member.room_id == room_id, Member.user_id.in_(user_ids))
    )
    return set(found)


def _searchable_rooms(user_id: uuid.UUID, now: datetime) -> Select[uuid.UUID]:
    """Rooms ``user_id`` belongs to and is not banned from."""
    banned = exists().where(
        Ban.room_id == Member.room_id,
        Ban.user_id == user_id,
        or_(Ban.expires_at.is_(None), Ban.expires_at > now),
    )
    return select(Member.room_id).where(Member.user_id == user_id, ~banned)


async def search(
    session: AsyncSession,
    index: MessageSearch,
    query: str,
    *,
    user_id: uuid.UUID,
    room_id: uuid.UUID | None,
    limit: int,
    now: datetime,
) -> Sequence[Message]:
    """Messages matching ``query``, the best match first (newest first among equals), in
    ``room_id`` or else in every room of ``user_id``; deleted messages never."""
    found = index.matches(query)
    if found is None:
        return []
    in_scope = (
        Message.room_id == room_id
        if room_id is not None
        else Message.room_id.in_(_searchable_rooms(user_id, now))
    )
    statement = (
        select(Message)
        .join(found, found.c.message_id == Message.id)
        .where(and_(in_scope, Message.deleted_at.is_(None)))
        .order_by(found.c.score.desc(), Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    return list(await session.scalars(statement))
