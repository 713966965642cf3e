"""Room moderation: kick, ban, unban, mute, unmute, roles and ownership.

Who may act (``access.ensure_moderator``): the room's owner and moderators, and platform
moderators (identity permission ``chat:room:moderate``). On whom:

- nobody kicks, bans or mutes the owner, and nobody acts on themselves this way;
- room moderators do not act on other moderators: only the owner (and platform
  moderators) may;
- only the owner makes or unmakes moderators and hands ownership over (the previous
  owner becomes a moderator).

Direct rooms have no moderation at all (409). A kick removes the membership (the user may
join a public room again); a ban removes it too, withdraws any invite and keeps the user
out until it is lifted or expires; a mute keeps a member from writing until it ends
(``access.writable_room``).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import access, events
from engineroom.chat import rooms_repository as repo
from engineroom.chat.errors import (
    BanNotFound,
    MemberNotFound,
    ModerationRefused,
    NotRoomOwner,
)
from engineroom.chat.membership import remove_member
from engineroom.chat.models import Ban, Member, MemberRole
from engineroom.chat.rooms import (
    MemberView,
    Page,
    RoomView,
    actor_id,
    ensure_not_direct,
    find_user,
    locked_room,
    page_of,
    usernames,
    visible_room,
)
from engineroom.core.auth import Principal
from engineroom.core.clock import isoformat_z, utcnow

NO_MODERATION = "Direct rooms have no moderation: no kicks, bans, mutes or roles."


async def _moderated(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID
) -> access.RoomAccess:
    """The locked room, once the caller is known to moderate it."""
    found = await locked_room(session, room_id, principal)
    ensure_not_direct(found.room, NO_MODERATION)
    access.ensure_moderator(principal, found.member)
    return found


def _ensure_outranks(
    principal: Principal, actor: Member | None, target: uuid.UUID, role: str | None, verb: str
) -> None:
    """Refuse acting on oneself, on the owner, and (for moderators) on moderators."""
    if target == actor_id(principal):
        raise ModerationRefused(f"You cannot {verb} yourself.")
    if role == MemberRole.OWNER.value:
        raise ModerationRefused(f"Nobody may {verb} the room's owner.")
    if role == MemberRole.MODERATOR.value:
        actor_owns = actor is not None and actor.role == MemberRole.OWNER.value
        if not actor_owns and not principal.can(access.MODERATE_PERMISSION):
            raise ModerationRefused(f"Only the room's owner may {verb} a moderator.")


async def _target_member(session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID) -> Member:
    member = await access.get_member(session, room_id, user_id)
    if member is None:
        raise MemberNotFound(f"User {user_id} is not a member of this room.")
    return member


async def _view(session: AsyncSession, member: Member) -> MemberView:
    names = await usernames(session, [member.user_id])
    return MemberView(member, names.get(member.user_id))


# ---- kick and ban ------------------------------------------------------------------------


async def kick(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    me = actor_id(principal)
    found = await _moderated(session, principal, room_id)
    target = await _target_member(session, room_id, user_id)
    _ensure_outranks(principal, found.member, user_id, target.role, "kick")
    await remove_member(session, found.room, target)
    events.record(
        session,
        events.MEMBER_KICKED,
        room_id=room_id,
        live={"user_id": str(user_id), "by": str(me), "member_count": found.room.member_count},
        users=[user_id],
        unsubscribe=[str(user_id)],
    )


async def ban(
    session: AsyncSession,
    principal: Principal,
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    reason: str | None,
    minutes: int | None,
) -> Ban:
    """Ban a member or any other user (again: the new reason and expiry replace the old)."""
    me = actor_id(principal)
    found = await _moderated(session, principal, room_id)
    target = await access.get_member(session, room_id, user_id)
    if target is None:
        await find_user(session, user_id=user_id, username=None)
    _ensure_outranks(principal, found.member, user_id, target.role if target else None, "ban")
    if target is not None:
        await remove_member(session, found.room, target)
    invite = await repo.get_invite(session, room_id, user_id)
    if invite is not None:
        await session.delete(invite)
    now = utcnow()
    expires_at = now + timedelta(minutes=minutes) if minutes is not None else None
    banned = await session.get(Ban, (room_id, user_id))
    if banned is None:
        banned = Ban(room_id=room_id, user_id=user_id)
        session.add(banned)
    banned.banned_by, banned.reason = me, reason
    banned.created_at, banned.expires_at = now, expires_at
    await session.flush()
    events.record(
        session,
        events.MEMBER_BANNED,
        room_id=room_id,
        live={
            "user_id": str(user_id),
            "by": str(me),
            "reason": reason,
            "expires_at": isoformat_z(expires_at) if expires_at else None,
            "member_count": found.room.member_count,
        },
        users=[user_id],
        # Also a non-member reading a public room: a ban ends reading too.
        unsubscribe=[str(user_id)],
    )
    return banned


async def unban(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    me = actor_id(principal)
    await _moderated(session, principal, room_id)
    banned = await session.get(Ban, (room_id, user_id))
    active = await access.active_ban(session, room_id, user_id)
    if banned is not None:
        await session.delete(banned)
    if active is None:
        raise BanNotFound(f"User {user_id} is not banned from this room.")
    events.record(
        session,
        events.MEMBER_UNBANNED,
        room_id=room_id,
        live={"user_id": str(user_id), "by": str(me)},
        users=[user_id],
    )


async def list_bans(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, page: repo.PageRequest
) -> Page[Ban]:
    """The room's bans in force, the newest first."""
    found = await visible_room(session, room_id, principal)
    ensure_not_direct(found.room, NO_MODERATION)
    access.ensure_moderator(principal, found.member)
    rows = await repo.active_bans_of_room(session, room_id, page, now=utcnow())
    return page_of(rows, page, lambda found: repo.Key(found.created_at, found.user_id))


# ---- mute --------------------------------------------------------------------------------


async def mute(
    session: AsyncSession,
    principal: Principal,
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    minutes: int,
) -> MemberView:
    me = actor_id(principal)
    found = await _moderated(session, principal, room_id)
    target = await _target_member(session, room_id, user_id)
    _ensure_outranks(principal, found.member, user_id, target.role, "mute")
    target.muted_until = utcnow() + timedelta(minutes=minutes)
    events.record(
        session,
        events.MEMBER_MUTED,
        room_id=room_id,
        live={
            "user_id": str(user_id),
            "by": str(me),
            "muted_until": isoformat_z(target.muted_until),
        },
        users=[user_id],
    )
    return await _view(session, target)


async def unmute(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, user_id: uuid.UUID
) -> MemberView:
    """End a mute (a member who is not muted is answered as is)."""
    me = actor_id(principal)
    found = await _moderated(session, principal, room_id)
    target = await _target_member(session, room_id, user_id)
    _ensure_outranks(principal, found.member, user_id, target.role, "unmute")
    if target.muted_until is not None:
        was_muted = access.is_muted(target)
        target.muted_until = None
        if was_muted:
            events.record(
                session,
                events.MEMBER_UNMUTED,
                room_id=room_id,
                live={"user_id": str(user_id), "by": str(me)},
                users=[user_id],
            )
    return await _view(session, target)


# ---- roles and ownership -----------------------------------------------------------------


async def _owned(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID
) -> tuple[access.RoomAccess, Member]:
    found = await locked_room(session, room_id, principal)
    ensure_not_direct(found.room, NO_MODERATION)
    owner = found.member
    if owner is None or owner.role != MemberRole.OWNER.value:
        raise NotRoomOwner("Only the room's owner may change roles or hand ownership over.")
    return found, owner


def _record_role(
    session: AsyncSession, member: Member, previous: str, by: uuid.UUID, reason: str
) -> None:
    events.record(
        session,
        events.MEMBER_ROLE_CHANGED,
        room_id=member.room_id,
        live={
            "user_id": str(member.user_id),
            "role": member.role,
            "previous_role": previous,
            "by": str(by),
            "reason": reason,
        },
        users=[member.user_id],
    )


async def set_role(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> MemberView:
    """Make a member a moderator or a plain member again (the owner only)."""
    _, owner = await _owned(session, principal, room_id)
    target = await _target_member(session, room_id, user_id)
    if target.user_id == owner.user_id:
        raise ModerationRefused("The owner's role changes only by handing ownership over.")
    if target.role != role:
        previous, target.role = target.role, role
        _record_role(session, target, previous, owner.user_id, "changed")
    return await _view(session, target)


async def transfer_ownership(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, user_id: uuid.UUID
) -> RoomView:
    """Hand the room over to another member; the previous owner becomes a moderator."""
    found, owner = await _owned(session, principal, room_id)
    target = await _target_member(session, room_id, user_id)
    if target.user_id == owner.user_id:
        raise ModerationRefused("You already own this room.")
    previous = target.role
    target.role = MemberRole.OWNER.value
    owner.role = MemberRole.MODERATOR.value
    _record_role(session, target, previous, owner.user_id, "ownership_transferred")
    _record_role(session, owner, MemberRole.OWNER.value, owner.user_id, "ownership_transferred")
    return RoomView(found.room, owner, owner.user_id)
