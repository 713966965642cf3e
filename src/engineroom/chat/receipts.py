"""Read receipts and exact unread counts.

A member's read receipt is one position per room, ``chat_member.last_read_seq``: every
message up to that ``seq`` is read, on all the member's devices. It only moves forward (a
device that marks an older position, say after coming back online, changes nothing), so
devices racing each other always end at the furthest position any of them reached.

Each move is recorded as ``chat.read.updated``; its live data (the new position and the
room's unread and mention counts) goes to the member's personal channel only, which keeps
the member's other devices' badges right without telling the room. Who read up to where is
readable by the room's readers through ``room_receipts``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import events
from engineroom.chat import receipts_repository as repository
from engineroom.chat.access import readable_room, user_id_of
from engineroom.chat.errors import MessageNotFound, NotAMember, ReadPositionOutOfRange
from engineroom.chat.receipts_repository import ReadState, Receipt
from engineroom.core.auth import Principal
from engineroom.core.clock import utcnow

__all__ = [
    "ReadState",
    "Receipt",
    "ReceiptPage",
    "UnreadSummary",
    "mark_all_read",
    "mark_read",
    "read_state_json",
    "room_receipts",
    "unread_summary",
]


@dataclass(frozen=True, slots=True)
class UnreadSummary:
    rooms: list[ReadState]

    @property
    def unread(self) -> int:
        return sum(state.unread for state in self.rooms)

    @property
    def mentions(self) -> int:
        return sum(state.mentions for state in self.rooms)


@dataclass(frozen=True, slots=True)
class ReceiptPage:
    receipts: list[Receipt]
    next_cursor: uuid.UUID | None


def read_state_json(state: ReadState) -> dict[str, object]:
    """A read state as live clients and RPC callers receive it."""
    return {
        "room_id": str(state.room_id),
        "last_read_seq": state.last_read_seq,
        "last_seq": state.last_seq,
        "unread": state.unread,
        "mentions": state.mentions,
    }


def _record(session: AsyncSession, user_id: uuid.UUID, state: ReadState) -> None:
    live = read_state_json(state)
    del live["room_id"]  # ``record`` puts it in
    events.record(
        session,
        events.READ_UPDATED,
        room_id=state.room_id,
        live={"user_id": str(user_id), **live},
        users=[user_id],
        to_room=False,
        user_id=str(user_id),
        last_read_seq=state.last_read_seq,
    )


async def _target_seq(
    session: AsyncSession,
    room_id: uuid.UUID,
    last_seq: int,
    *,
    message_id: uuid.UUID | None,
    seq: int | None,
) -> int:
    if message_id is not None:
        found = await repository.seq_of_message(session, room_id, message_id)
        if found is None:
            raise MessageNotFound("No such message in this room.")
        return found
    if seq is None:
        raise ValueError("give a message id or a seq")
    if seq > last_seq:
        raise ReadPositionOutOfRange(
            f"The room's newest message is number {last_seq}; {seq} is past it."
        )
    return seq


async def mark_read(
    session: AsyncSession,
    principal: Principal,
    *,
    room_id: uuid.UUID,
    message_id: uuid.UUID | None = None,
    seq: int | None = None,
) -> ReadState:
    """Mark the room read up to a message (by id or ``seq``), never backwards.

    Raises ``RoomNotFound``, ``NotAMember`` (readers who have not joined keep no
    receipt), ``BannedFromRoom``, ``MessageNotFound`` (not a message of this room) and
    ``ReadPositionOutOfRange``.
    """
    access = await readable_room(session, room_id, principal)
    if access.member is None:
        raise NotAMember("Join the room to keep a read position in it.")
    user_id = user_id_of(principal)
    target = await _target_seq(
        session, room_id, access.room.last_seq, message_id=message_id, seq=seq
    )
    moved = await repository.advance(session, room_id, user_id, target, utcnow())
    states = await repository.read_states(session, user_id, room_id=room_id)
    if not states:  # the membership ended in a concurrent transaction
        raise NotAMember("Join the room to keep a read position in it.")
    state = states[0]
    if moved:
        _record(session, user_id, state)
    return state


async def mark_all_read(session: AsyncSession, principal: Principal) -> UnreadSummary:
    """Mark every room of the caller read up to its newest message."""
    user_id = user_id_of(principal)
    behind = await repository.rooms_behind(session, user_id)
    moved = set(await repository.advance_many(session, user_id, behind, utcnow()))
    summary = UnreadSummary(await repository.read_states(session, user_id))
    for state in summary.rooms:
        if state.room_id in moved:
            _record(session, user_id, state)
    return summary


async def unread_summary(session: AsyncSession, principal: Principal) -> UnreadSummary:
    """Position, unread and mention counts of every room of the caller (one query)."""
    return UnreadSummary(await repository.read_states(session, user_id_of(principal)))


async def room_receipts(
    session: AsyncSession,
    principal: Principal,
    *,
    room_id: uuid.UUID,
    cursor: uuid.UUID | None,
    limit: int,
) -> ReceiptPage:
    """Each member's read position, in user id order, for those who may read the room."""
    await readable_room(session, room_id, principal)
    found = await repository.receipts(session, room_id, after=cursor, limit=limit + 1)
    page = found[:limit]
    next_cursor = page[-1].user_id if len(found) > limit else None
    return ReceiptPage(page, next_cursor)
