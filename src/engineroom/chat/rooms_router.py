"""Rooms and membership under ``/api/v1/chat``: parse, call one service function, shape.

Lists take ``limit`` with either ``cursor`` (the ``next_cursor`` of the previous page) or
``offset``. Writes that create something (rooms, direct rooms, invites) are rate limited
per user.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from engineroom.chat import membership, moderation, rooms
from engineroom.chat.errors import (
    AlreadyInvited,
    AlreadyMember,
    BannedFromRoom,
    BanNotFound,
    CannotDirectMessageSelf,
    DirectRoomRestricted,
    InvalidCursor,
    InviteNotFound,
    InviteRequired,
    MemberNotFound,
    ModerationRefused,
    NotAMember,
    NotAUser,
    NotRoomModerator,
    NotRoomOwner,
    RoomNotFound,
    UserNotFound,
)
from engineroom.chat.rooms_repository import MAX_PAGE, PageRequest
from engineroom.chat.rooms_schemas import (
    BanCreate,
    BanList,
    BanRead,
    InviteList,
    InviteRead,
    MemberList,
    MemberRead,
    MuteCreate,
    OwnershipTransfer,
    RoleChange,
    RoomCreate,
    RoomList,
    RoomRead,
    RoomUpdate,
    UserRef,
)
from engineroom.core.auth import CurrentPrincipal, Principal
from engineroom.core.deps import ReadSessionDep, SessionDep
from engineroom.core.errors import AppError, RateLimited, Unauthorized, error_responses
from engineroom.core.ratelimit import RateLimit

PREFIX = "/api/v1/chat"
WRITE_LIMIT = "60/minute"
"""Rooms, direct rooms and invites one user may create per minute."""
MAX_OFFSET = 100_000
_CURSOR = "The `next_cursor` of the previous page."

router = APIRouter(prefix=PREFIX, tags=["chat"])


async def chat_user(principal: CurrentPrincipal) -> Principal:
    rooms.actor_id(principal)
    return principal


ChatUser = Annotated[Principal, Depends(chat_user)]


def paging(
    cursor: Annotated[str | None, Query(max_length=64, description=_CURSOR)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")] = 0,
) -> PageRequest:
    if cursor is not None and offset:
        raise InvalidCursor("Page with either cursor or offset, not both.")
    return PageRequest(limit=limit, offset=offset, cursor=cursor)


Paging = Annotated[PageRequest, Depends(paging)]


_write_limit = RateLimit(WRITE_LIMIT, scope="chat.rooms.write")


async def limit_writes(request: Request, response: Response, principal: ChatUser) -> None:
    """Per user: the principal is resolved first, so the limit keys on the user."""
    del principal
    await _write_limit(request, response)


WriteLimit = Depends(limit_writes)

_BASE: tuple[type[AppError], ...] = (Unauthorized, NotAUser)
_ROOM = (*_BASE, RoomNotFound)
_MODERATION = (*_ROOM, NotRoomModerator, DirectRoomRestricted, MemberNotFound, ModerationRefused)
_WRITES = (RateLimited,)


# ---- rooms -------------------------------------------------------------------------------


@router.post(
    "/rooms",
    status_code=201,
    response_model=RoomRead,
    summary="Create a room (the caller owns it)",
    responses=error_responses(*_BASE, *_WRITES),
    dependencies=[WriteLimit],
)
async def create_room(body: RoomCreate, principal: ChatUser, session: SessionDep) -> RoomRead:
    view = await rooms.create_room(
        session, principal, name=body.name, kind=body.kind, topic=body.topic
    )
    return RoomRead.of(view)


@router.get(
    "/rooms",
    response_model=RoomList,
    summary="My rooms, the most recently active first",
    responses=error_responses(*_BASE, InvalidCursor),
)
async def my_rooms(principal: ChatUser, session: ReadSessionDep, page: Paging) -> RoomList:
    found = await rooms.my_rooms(session, principal, page)
    return RoomList(rooms=[RoomRead.of(v) for v in found.items], next_cursor=found.next_cursor)


@router.get(
    "/directory",
    response_model=RoomList,
    summary="Public and invite-only rooms, the newest first",
    description="`q` keeps the rooms whose name contains it (in any case). Private and "
    "direct rooms are never listed.",
    responses=error_responses(*_BASE, InvalidCursor),
)
async def directory(
    principal: ChatUser,
    session: ReadSessionDep,
    page: Paging,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> RoomList:
    found = await rooms.directory(session, principal, page, query=q or None)
    return RoomList(rooms=[RoomRead.of(v) for v in found.items], next_cursor=found.next_cursor)


@router.get(
    "/rooms/{room_id}",
    response_model=RoomRead,
    summary="A room, with my membership",
    responses=error_responses(*_ROOM),
)
async def get_room(room_id: uuid.UUID, principal: ChatUser, session: ReadSessionDep) -> RoomRead:
    return RoomRead.of(await rooms.get_room(session, principal, room_id))


@router.patch(
    "/rooms/{room_id}",
    response_model=RoomRead,
    summary="Rename a room or change its topic (owner and moderators)",
    responses=error_responses(*_ROOM, NotRoomModerator, DirectRoomRestricted),
)
async def update_room(
    room_id: uuid.UUID, body: RoomUpdate, principal: ChatUser, session: SessionDep
) -> RoomRead:
    changes = body.model_dump(exclude_unset=True)
    view = await rooms.update_room(session, principal, room_id, changes=changes)
    return RoomRead.of(view)


@router.delete(
    "/rooms/{room_id}",
    status_code=204,
    summary="Delete a room and everything in it (owner, or a platform moderator)",
    responses=error_responses(*_ROOM, NotRoomOwner),
)
async def delete_room(room_id: uuid.UUID, principal: ChatUser, session: SessionDep) -> Response:
    await rooms.delete_room(session, principal, room_id)
    return Response(status_code=204)


@router.post(
    "/direct",
    status_code=201,
    response_model=RoomRead,
    summary="The direct room with another user (created on first use)",
    description="201 when the room was created, 200 when it existed.",
    responses=error_responses(*_BASE, UserNotFound, CannotDirectMessageSelf, *_WRITES),
    dependencies=[WriteLimit],
)
async def direct_room(
    body: UserRef, principal: ChatUser, session: SessionDep, response: Response
) -> RoomRead:
    view, created = await rooms.direct_room(
        session, principal, user_id=body.user_id, username=body.username
    )
    response.status_code = 201 if created else 200
    return RoomRead.of(view)


# ---- membership --------------------------------------------------------------------------


@router.post(
    "/rooms/{room_id}/join",
    status_code=201,
    response_model=RoomRead,
    summary="Join a room",
    description="Public rooms directly; invite-only and private rooms with a pending "
    "invite. 201 when joined, 200 when already a member.",
    responses=error_responses(*_ROOM, BannedFromRoom, InviteRequired, DirectRoomRestricted),
)
async def join_room(
    room_id: uuid.UUID, principal: ChatUser, session: SessionDep, response: Response
) -> RoomRead:
    view, joined = await membership.join(session, principal, room_id)
    response.status_code = 201 if joined else 200
    return RoomRead.of(view)


@router.post(
    "/rooms/{room_id}/leave",
    status_code=204,
    summary="Leave a room",
    description="An owner who leaves hands the room to the moderator who joined first, "
    "else to the member who joined first.",
    responses=error_responses(*_ROOM, NotAMember, DirectRoomRestricted),
)
async def leave_room(room_id: uuid.UUID, principal: ChatUser, session: SessionDep) -> Response:
    await membership.leave(session, principal, room_id)
    return Response(status_code=204)


@router.get(
    "/rooms/{room_id}/members",
    response_model=MemberList,
    summary="Members of a room, in the order they joined",
    responses=error_responses(*_ROOM, NotAMember, BannedFromRoom, InvalidCursor),
)
async def list_members(
    room_id: uuid.UUID, principal: ChatUser, session: ReadSessionDep, page: Paging
) -> MemberList:
    found = await membership.list_members(session, principal, room_id, page)
    return MemberList(
        members=[MemberRead.of(v) for v in found.items], next_cursor=found.next_cursor
    )


# ---- invites -----------------------------------------------------------------------------


@router.post(
    "/rooms/{room_id}/invites",
    status_code=201,
    response_model=InviteRead,
    summary="Invite a user to a room",
    description="Members of public and private rooms, and the owner and moderators of "
    "invite-only rooms, invite by `user_id` or `username`.",
    responses=error_responses(
        *_ROOM,
        NotAMember,
        NotRoomModerator,
        DirectRoomRestricted,
        UserNotFound,
        AlreadyMember,
        AlreadyInvited,
        BannedFromRoom,
        *_WRITES,
    ),
    dependencies=[WriteLimit],
)
async def create_invite(
    room_id: uuid.UUID, body: UserRef, principal: ChatUser, session: SessionDep
) -> InviteRead:
    view = await membership.create_invite(
        session, principal, room_id, user_id=body.user_id, username=body.username
    )
    return InviteRead.of(view)


@router.get(
    "/rooms/{room_id}/invites",
    response_model=InviteList,
    summary="Pending invites of a room (for those who may invite)",
    responses=error_responses(*_ROOM, NotAMember, NotRoomModerator, InvalidCursor),
)
async def room_invites(
    room_id: uuid.UUID, principal: ChatUser, session: ReadSessionDep, page: Paging
) -> InviteList:
    found = await membership.room_invites(session, principal, room_id, page)
    return InviteList(
        invites=[InviteRead.of(v) for v in found.items], next_cursor=found.next_cursor
    )


@router.delete(
    "/rooms/{room_id}/invites/{user_id}",
    status_code=204,
    summary="Revoke an invite (its sender, or the room's moderators)",
    responses=error_responses(*_ROOM, InviteNotFound, NotRoomModerator),
)
async def revoke_invite(
    room_id: uuid.UUID, user_id: uuid.UUID, principal: ChatUser, session: SessionDep
) -> Response:
    await membership.revoke_invite(session, principal, room_id, user_id)
    return Response(status_code=204)


@router.get(
    "/invites",
    response_model=InviteList,
    summary="My pending invites, the newest first",
    responses=error_responses(*_BASE, InvalidCursor),
)
async def my_invites(principal: ChatUser, session: ReadSessionDep, page: Paging) -> InviteList:
    found = await membership.my_invites(session, principal, page)
    return InviteList(
        invites=[InviteRead.of(v) for v in found.items], next_cursor=found.next_cursor
    )


@router.post(
    "/invites/{room_id}/accept",
    response_model=RoomRead,
    summary="Accept an invite: join the room",
    responses=error_responses(*_BASE, InviteNotFound, BannedFromRoom),
)
async def accept_invite(room_id: uuid.UUID, principal: ChatUser, session: SessionDep) -> RoomRead:
    return RoomRead.of(await membership.accept_invite(session, principal, room_id))


@router.post(
    "/invites/{room_id}/decline",
    status_code=204,
    summary="Decline an invite",
    responses=error_responses(*_BASE, InviteNotFound),
)
async def decline_invite(room_id: uuid.UUID, principal: ChatUser, session: SessionDep) -> Response:
    await membership.decline_invite(session, principal, room_id)
    return Response(status_code=204)


# ---- moderation --------------------------------------------------------------------------


@router.delete(
    "/rooms/{room_id}/members/{user_id}",
    status_code=204,
    summary="Kick a member (they may join a public room again)",
    responses=error_responses(*_MODERATION),
)
async def kick_member(
    room_id: uuid.UUID, user_id: uuid.UUID, principal: ChatUser, session: SessionDep
) -> Response:
    await moderation.kick(session, principal, room_id, user_id)
    return Response(status_code=204)


@router.put(
    "/rooms/{room_id}/bans/{user_id}",
    response_model=BanRead,
    summary="Ban a user from a room (a member is removed)",
    description="Without `minutes` the ban lasts until lifted. Banning again replaces "
    "the reason and expiry.",
    responses=error_responses(*_MODERATION, UserNotFound),
)
async def ban_user(
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    body: BanCreate,
    principal: ChatUser,
    session: SessionDep,
) -> BanRead:
    ban = await moderation.ban(
        session, principal, room_id, user_id, reason=body.reason, minutes=body.minutes
    )
    return BanRead.of(ban)


@router.delete(
    "/rooms/{room_id}/bans/{user_id}",
    status_code=204,
    summary="Lift a ban",
    responses=error_responses(*_ROOM, NotRoomModerator, DirectRoomRestricted, BanNotFound),
)
async def unban_user(
    room_id: uuid.UUID, user_id: uuid.UUID, principal: ChatUser, session: SessionDep
) -> Response:
    await moderation.unban(session, principal, room_id, user_id)
    return Response(status_code=204)


@router.get(
    "/rooms/{room_id}/bans",
    response_model=BanList,
    summary="Bans in force in a room, the newest first",
    responses=error_responses(*_ROOM, NotRoomModerator, DirectRoomRestricted, InvalidCursor),
)
async def list_bans(
    room_id: uuid.UUID, principal: ChatUser, session: ReadSessionDep, page: Paging
) -> BanList:
    found = await moderation.list_bans(session, principal, room_id, page)
    return BanList(bans=[BanRead.of(b) for b in found.items], next_cursor=found.next_cursor)


@router.put(
    "/rooms/{room_id}/members/{user_id}/mute",
    response_model=MemberRead,
    summary="Mute a member for some minutes (they read but cannot send)",
    responses=error_responses(*_MODERATION),
)
async def mute_member(
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    body: MuteCreate,
    principal: ChatUser,
    session: SessionDep,
) -> MemberRead:
    view = await moderation.mute(session, principal, room_id, user_id, minutes=body.minutes)
    return MemberRead.of(view)


@router.delete(
    "/rooms/{room_id}/members/{user_id}/mute",
    response_model=MemberRead,
    summary="Unmute a member",
    responses=error_responses(*_MODERATION),
)
async def unmute_member(
    room_id: uuid.UUID, user_id: uuid.UUID, principal: ChatUser, session: SessionDep
) -> MemberRead:
    return MemberRead.of(await moderation.unmute(session, principal, room_id, user_id))


@router.put(
    "/rooms/{room_id}/members/{user_id}/role",
    response_model=MemberRead,
    summary="Make a member a moderator, or a moderator a member (the owner only)",
    responses=error_responses(*_MODERATION, NotRoomOwner),
)
async def change_role(
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    body: RoleChange,
    principal: ChatUser,
    session: SessionDep,
) -> MemberRead:
    view = await moderation.set_role(session, principal, room_id, user_id, body.role)
    return MemberRead.of(view)


@router.post(
    "/rooms/{room_id}/transfer",
    response_model=RoomRead,
    summary="Hand the room over to another member (the owner only)",
    description="The previous owner becomes a moderator.",
    responses=error_responses(*_MODERATION, NotRoomOwner),
)
async def transfer_ownership(
    room_id: uuid.UUID, body: OwnershipTransfer, principal: ChatUser, session: SessionDep
) -> RoomRead:
    view = await moderation.transfer_ownership(session, principal, room_id, body.user_id)
    return RoomRead.of(view)
