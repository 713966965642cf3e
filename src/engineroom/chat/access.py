"""Who may see and act in a room: the checks every chat use case starts with.

Visibility: public and invite-only rooms exist for every signed-in user; private and
direct rooms exist only for their members (a non-member gets the same 404 as for an
unknown room, so room ids cannot be probed). Reading needs membership, except in public
rooms, which any signed-in user who is not banned may read. Writing always needs
membership, no active ban and no active mute.

Room moderation is open to the room's owner and moderators, and to holders of the
identity permissions ``chat:room:moderate`` (mute, ban, kick) and ``chat:message:delete``
(delete any message), which the built-in ``moderator`` role grants.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat.errors import (
    BannedFromRoom,
    MutedInRoom,
    NotAMember,
    NotRoomModerator,
    RoomNotFound,
)
from engineroom.chat.models import Ban, Member, MemberRole, Room, RoomKind
from engineroom.core.auth import Principal
from engineroom.core.clock import utcnow

MODERATE_PERMISSION = "chat:room:moderate"
DELETE_ANY_MESSAGE_PERMISSION = "chat:message:delete"
_HIDDEN_KINDS = frozenset({RoomKind.PRIVATE.value, RoomKind.DIRECT.value})
_MODERATING_ROLES = frozenset({MemberRole.OWNER.value, MemberRole.MODERATOR.value})


@dataclass(frozen=True, slots=True)
class RoomAccess:
    """A room as one principal sees it."""

    room: Room
    member: Member | None
    """``None`` when the principal is not a member."""

    @property
    def is_member(self) -> bool:
        return self.member is not None


def user_id_of(principal: Principal) -> uuid.UUID:
    return uuid.UUID(principal.subject)


async def get_room(session: AsyncSession, room_id: uuid.UUID) -> Room | None:
    return await session.get(Room, room_id)


async def get_member(
    session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID
) -> Member | None:
    return await session.get(Member, (room_id, user_id))


async def active_ban(
    session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID, *, now: datetime | None = None
) -> Ban | None:
    ban = await session.get(Ban, (room_id, user_id))
    if ban is None or (ban.expires_at is not None and ban.expires_at <= (now or utcnow())):
        return None
    return ban


async def room_access(
    session: AsyncSession, room_id: uuid.UUID, principal: Principal
) -> RoomAccess:
    """The room and the principal's membership; 404 when the room is not visible to them."""
    room = await get_room(session, room_id)
    if room is None:
        raise RoomNotFound("No such room.")
    member = await get_member(session, room_id, user_id_of(principal))
    if member is None and room.kind in _HIDDEN_KINDS and not principal.can(MODERATE_PERMISSION):
        raise RoomNotFound("No such room.")
    return RoomAccess(room, member)


async def readable_room(
    session: AsyncSession, room_id: uuid.UUID, principal: Principal
) -> RoomAccess:
    """The room if the principal may read it (members; anyone unbanned for public rooms)."""
    access = await room_access(session, room_id, principal)
    if access.member is not None or principal.can(MODERATE_PERMISSION):
        return access
    if access.room.kind != RoomKind.PUBLIC.value:
        raise NotAMember("Only members read this room.")
    if await active_ban(session, room_id, user_id_of(principal)) is not None:
        raise BannedFromRoom("You are banned from this room.")
    return access


async def writable_room(
    session: AsyncSession, room_id: uuid.UUID, principal: Principal
) -> tuple[Room, Member]:
    """The room and membership of a principal allowed to post in it right now."""
    access = await room_access(session, room_id, principal)
    member = access.member
    if member is None:
        raise NotAMember("Join the room first.")
    if await active_ban(session, room_id, member.user_id) is not None:
        raise BannedFromRoom("You are banned from this room.")
    if is_muted(member):
        raise MutedInRoom("You are muted in this room.")
    return access.room, member


def is_muted(member: Member, *, now: datetime | None = None) -> bool:
    return member.muted_until is not None and member.muted_until > (now or utcnow())


def moderates(principal: Principal, member: Member | None) -> bool:
    """Room owner or moderator, or a platform moderator."""
    if member is not None and member.role in _MODERATING_ROLES:
        return True
    return principal.can(MODERATE_PERMISSION)


def ensure_moderator(principal: Principal, member: Member | None) -> None:
    if not moderates(principal, member):
        raise NotRoomModerator("Only the room's owner or moderators may do this.")


def may_delete_any_message(principal: Principal, member: Member | None) -> bool:
    if member is not None and member.role in _MODERATING_ROLES:
        return True
    return principal.can(DELETE_ANY_MESSAGE_PERMISSION)


async def member_ids(session: AsyncSession, room_id: uuid.UUID) -> list[uuid.UUID]:
    result = await session.scalars(select(Member.user_id).where(Member.room_id == room_id))
    return list(result)
