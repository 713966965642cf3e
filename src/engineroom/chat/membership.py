"""Membership: join, leave, the members list, invites, and forgetting a deleted user.

Rules (docs/chat.md, "Rooms and membership"):

- Public rooms are joined directly; invite-only and private rooms need a pending invite.
  A banned user cannot join (an expired ban is dropped when it is next looked at).
- A new member starts with everything already in the room counted as read.
- When the owner leaves, the moderator who joined first becomes owner, else the member
  who joined first. The last member leaving leaves the room empty and ownerless; it is
  kept (with its history) and platform moderators may delete it.
- Who invites: any member of a public or private room, the owner and moderators of an
  invite-only room, and platform moderators. Inviting a member (409), an invited user
  (409) or a banned user (403: lift the ban first) is refused.

Whoever leaves or is removed gets ``unsubscribe`` in the event's payload: after commit
their live subscriptions to the room's channel end (``authorizer.end_room_subscriptions``).
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import access, events
from engineroom.chat import rooms_repository as repo
from engineroom.chat.errors import (
    AlreadyInvited,
    AlreadyMember,
    BannedFromRoom,
    InviteNotFound,
    InviteRequired,
    NotAMember,
    NotRoomModerator,
)
from engineroom.chat.models import Ban, Invite, Member, MemberRole, Room, RoomKind
from engineroom.chat.rooms import (
    InviteView,
    MemberView,
    Page,
    RoomView,
    actor_id,
    ensure_not_direct,
    find_user,
    locked_room,
    member_json,
    page_of,
    usernames,
    visible_room,
)
from engineroom.core.auth import Principal
from engineroom.core.clock import isoformat_z, utcnow

INVITE_REVOKED = "chat.invite.revoked"
"""Recorded when an invite is withdrawn (the invited user hears of it personally)."""
DIRECT_NO_MEMBERSHIP = "Direct rooms always have exactly their two users."


# ---- adding and removing members ---------------------------------------------------------


async def add_member(
    session: AsyncSession, room: Room, user_id: uuid.UUID, *, invite: Invite | None
) -> Member:
    """Make ``user_id`` a member of the locked ``room`` (consuming ``invite`` if any)."""
    member = Member(
        room_id=room.id,
        user_id=user_id,
        role=MemberRole.MEMBER.value,
        joined_at=utcnow(),
        last_read_seq=room.last_seq,
    )
    session.add(member)
    room.member_count += 1
    if invite is not None:
        await session.delete(invite)
        events.record(
            session,
            events.INVITE_ACCEPTED,
            room_id=room.id,
            live={"user_id": str(user_id), "invited_by": str(invite.invited_by)},
            users=[invite.invited_by],
        )
    await session.flush()
    events.record(
        session,
        events.MEMBER_JOINED,
        room_id=room.id,
        live={"member": member_json(member), "member_count": room.member_count},
        users=[user_id],
    )
    return member


async def remove_member(session: AsyncSession, room: Room, member: Member) -> Member | None:
    """Remove ``member`` from the locked ``room``; the new owner if the owner left."""
    await session.delete(member)
    room.member_count -= 1
    await session.flush()
    if member.role != MemberRole.OWNER.value:
        return None
    successor = await repo.longest_standing(
        session, room.id, role=MemberRole.MODERATOR, besides=member.user_id
    ) or await repo.longest_standing(
        session, room.id, role=MemberRole.MEMBER, besides=member.user_id
    )
    if successor is not None:
        previous = successor.role
        successor.role = MemberRole.OWNER.value
        events.record(
            session,
            events.MEMBER_ROLE_CHANGED,
            room_id=room.id,
            live={
                "user_id": str(successor.user_id),
                "role": successor.role,
                "previous_role": previous,
                "by": None,
                "reason": "owner_left",
            },
            users=[successor.user_id],
        )
    return successor


async def check_not_banned(session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """403 while a ban is in force; an expired ban row is dropped on the way."""
    ban = await session.get(Ban, (room_id, user_id))
    if ban is None:
        return
    if await access.active_ban(session, room_id, user_id) is None:
        await session.delete(ban)  # expired: nothing to keep
        return
    raise BannedFromRoom("You are banned from this room.")


# ---- join and leave ----------------------------------------------------------------------


async def join(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID
) -> tuple[RoomView, bool]:
    """Join a room; returns the room and whether the caller was not a member before."""
    me = actor_id(principal)
    found = await locked_room(session, room_id, principal)
    room = found.room
    ensure_not_direct(room, DIRECT_NO_MEMBERSHIP)
    if found.member is not None:
        return RoomView(room, found.member, me), False
    await check_not_banned(session, room.id, me)
    invite = await repo.get_invite(session, room.id, me)
    if room.kind != RoomKind.PUBLIC.value and invite is None:
        raise InviteRequired("Joining this room needs an invite from its members.")
    member = await add_member(session, room, me, invite=invite)
    return RoomView(room, member, me), True


async def leave(session: AsyncSession, principal: Principal, room_id: uuid.UUID) -> None:
    me = actor_id(principal)
    found = await locked_room(session, room_id, principal)
    room = found.room
    ensure_not_direct(room, "Direct conversations cannot be left.")
    if found.member is None:
        raise NotAMember("You are not a member of this room.")
    successor = await remove_member(session, room, found.member)
    events.record(
        session,
        events.MEMBER_LEFT,
        room_id=room.id,
        live={
            "user_id": str(me),
            "member_count": room.member_count,
            "new_owner_id": str(successor.user_id) if successor else None,
        },
        users=[me],
        unsubscribe=[str(me)],
    )


async def list_members(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, page: repo.PageRequest
) -> Page[MemberView]:
    """The members in the order they joined (members only; anyone for public rooms)."""
    await access.readable_room(session, room_id, principal)
    rows = await repo.members_of_room(session, room_id, page)
    found = page_of(rows, page, lambda member: repo.Key(member.joined_at, member.user_id))
    names = await usernames(session, [member.user_id for member in found.items])
    views = [MemberView(member, names.get(member.user_id)) for member in found.items]
    return Page(views, found.next_cursor)


# ---- invites -----------------------------------------------------------------------------


def _ensure_may_invite(principal: Principal, room: Room, member: Member | None) -> None:
    if principal.can(access.MODERATE_PERMISSION):
        return
    if room.kind == RoomKind.INVITE_ONLY.value:
        if not access.moderates(principal, member):
            raise NotRoomModerator("Only the owner and moderators invite people to this room.")
    elif member is None:
        raise NotAMember("Only members invite people to this room.")


def _invite_json(invite: Invite, room: Room, username: str | None) -> dict[str, object]:
    return {
        "user_id": str(invite.user_id),
        "username": username,
        "invited_by": str(invite.invited_by),
        "created_at": isoformat_z(invite.created_at),
        "room": {"id": str(room.id), "kind": room.kind, "name": room.name, "topic": room.topic},
    }


async def create_invite(
    session: AsyncSession,
    principal: Principal,
    room_id: uuid.UUID,
    *,
    user_id: uuid.UUID | None = None,
    username: str | None = None,
) -> InviteView:
    me = actor_id(principal)
    found = await locked_room(session, room_id, principal)
    room = found.room
    ensure_not_direct(room, "Direct rooms take no invites.")
    _ensure_may_invite(principal, room, found.member)
    invitee = await find_user(session, user_id=user_id, username=username)
    if await access.get_member(session, room.id, invitee.id) is not None:
        raise AlreadyMember(f"{invitee.username} is already a member of this room.")
    if await access.active_ban(session, room.id, invitee.id) is not None:
        raise BannedFromRoom(f"{invitee.username} is banned from this room; lift the ban first.")
    if await repo.get_invite(session, room.id, invitee.id) is not None:
        raise AlreadyInvited(f"{invitee.username} is already invited to this room.")
    invite = Invite(room_id=room.id, user_id=invitee.id, invited_by=me, created_at=utcnow())
    session.add(invite)
    await session.flush()
    events.record(
        session,
        events.INVITE_CREATED,
        room_id=room.id,
        live={"invite": _invite_json(invite, room, invitee.username)},
        users=[invitee.id],
    )
    return InviteView(invite, room, invitee.username)


async def my_invites(
    session: AsyncSession, principal: Principal, page: repo.PageRequest
) -> Page[InviteView]:
    """The caller's pending invites, the newest first."""
    me = actor_id(principal)
    rows = await repo.invites_of_user(session, me, page)
    found = page_of(rows, page, lambda row: repo.Key(row[0].created_at, row[0].room_id))
    views = [InviteView(invite, room, principal.username) for invite, room in found.items]
    return Page(views, found.next_cursor)


async def room_invites(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, page: repo.PageRequest
) -> Page[InviteView]:
    """A room's pending invites, for those who may invite to it."""
    found = await visible_room(session, room_id, principal)
    _ensure_may_invite(principal, found.room, found.member)
    rows = await repo.invites_of_room(session, room_id, page)
    cut = page_of(rows, page, lambda invite: repo.Key(invite.created_at, invite.user_id))
    names = await usernames(session, [invite.user_id for invite in cut.items])
    views = [InviteView(invite, found.room, names.get(invite.user_id)) for invite in cut.items]
    return Page(views, cut.next_cursor)


async def _my_invite(session: AsyncSession, room_id: uuid.UUID, me: uuid.UUID) -> Invite:
    invite = await repo.get_invite(session, room_id, me)
    if invite is None:
        raise InviteNotFound("You have no pending invite to this room.")
    return invite


async def accept_invite(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID
) -> RoomView:
    me = actor_id(principal)
    room = await repo.lock_room(session, room_id)
    invite = await _my_invite(session, room_id, me)
    if room is None:  # cannot happen: the invite's foreign key keeps the room
        raise InviteNotFound("You have no pending invite to this room.")
    member = await access.get_member(session, room_id, me)
    if member is not None:
        await session.delete(invite)
        return RoomView(room, member, me)
    await check_not_banned(session, room_id, me)
    member = await add_member(session, room, me, invite=invite)
    return RoomView(room, member, me)


async def decline_invite(session: AsyncSession, principal: Principal, room_id: uuid.UUID) -> None:
    me = actor_id(principal)
    invite = await _my_invite(session, room_id, me)
    await session.delete(invite)
    events.record(
        session,
        events.INVITE_DECLINED,
        room_id=room_id,
        live={"user_id": str(me), "invited_by": str(invite.invited_by)},
        users=[invite.invited_by, me],
    )


async def revoke_invite(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """Withdraw an invite: whoever sent it, or the room's moderators."""
    me = actor_id(principal)
    found = await locked_room(session, room_id, principal)
    invite = await repo.get_invite(session, room_id, user_id)
    if invite is None:
        raise InviteNotFound("That user has no pending invite to this room.")
    if invite.invited_by != me and not access.moderates(principal, found.member):
        raise NotRoomModerator("Only who sent the invite, or the room's moderators, revoke it.")
    await session.delete(invite)
    events.record(
        session,
        INVITE_REVOKED,
        room_id=room_id,
        live={"user_id": str(user_id), "by": str(me)},
        users=[user_id],
    )


# ---- deleted accounts --------------------------------------------------------------------


async def forget_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Remove a deleted account's memberships (handing ownership over), invites and bans."""
    for room_id in await repo.room_ids_of_user(session, user_id):
        room = await repo.lock_room(session, room_id)
        member = await access.get_member(session, room_id, user_id)
        if room is None or member is None:
            continue
        successor = await remove_member(session, room, member)
        events.record(
            session,
            events.MEMBER_LEFT,
            room_id=room_id,
            live={
                "user_id": str(user_id),
                "member_count": room.member_count,
                "new_owner_id": str(successor.user_id) if successor else None,
                "reason": "account_deleted",
            },
            unsubscribe=[str(user_id)],
        )
    await repo.delete_invites_of_user(session, user_id)
    await repo.delete_bans_of_user(session, user_id)
