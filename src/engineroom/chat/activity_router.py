"""REST for read receipts, unread counts and presence under ``/api/v1/chat``.

Typing has no route: it is WebSocket-only (``chat.typing``), like everything ephemeral.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from engineroom.chat import receipts
from engineroom.chat.activity import Activity, activity_of, room_statuses
from engineroom.chat.activity_schemas import (
    MAX_PAGE_SIZE,
    MAX_PRESENCE_USERS,
    PAGE_SIZE,
    PresenceRead,
    ReadPosition,
    ReadStateRead,
    ReceiptPageRead,
    RoomPresenceRead,
    UnreadRead,
)
from engineroom.chat.config import ChatSettings, chat_settings
from engineroom.chat.errors import (
    BannedFromRoom,
    MessageNotFound,
    NotAMember,
    ReadPositionOutOfRange,
    RealtimeUnavailable,
    RoomNotFound,
)
from engineroom.chat.realtime.runtime import find_runtime
from engineroom.core.auth import CurrentPrincipal
from engineroom.core.deps import PlatformDep, ReadSessionDep, SessionDep
from engineroom.core.errors import AppError, RateLimited, Unauthorized, error_responses
from engineroom.core.platform import Platform
from engineroom.core.ratelimit import RateLimit

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])

Cursor = Annotated[uuid.UUID | None, Query(description="`next_cursor` of the previous page.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def _responses(*errors: type[AppError]) -> dict[int | str, dict[str, object]]:
    return dict(error_responses(Unauthorized, *errors))


def _chat(platform: Platform) -> ChatSettings:
    runtime = find_runtime(platform)
    return runtime.chat if runtime is not None else chat_settings(platform.settings)


@lru_cache(maxsize=8)
def _read_limiter(limit: str) -> Callable[[Request, Response], Awaitable[None]]:
    return RateLimit(limit, scope="chat.read")


async def limit_reads(
    request: Request, response: Response, principal: CurrentPrincipal, platform: PlatformDep
) -> None:
    """Rate-limit read-position updates per user (the principal is resolved first)."""
    del principal  # resolved for its side effect: the limit keys on the user
    await _read_limiter(_chat(platform).read_rate_limit)(request, response)


async def _activity(platform: PlatformDep) -> Activity:
    runtime = find_runtime(platform)
    activity = activity_of(runtime) if runtime is not None else None
    if activity is None:
        raise RealtimeUnavailable("The real-time transport is not running in this process.")
    return activity


ActivityDep = Annotated[Activity, Depends(_activity)]


# ---- receipts and unread counts ------------------------------------------------------------


@router.post(
    "/rooms/{room_id}/read",
    response_model=ReadStateRead,
    summary="Mark a room read up to a message",
    description="Give the message's `message_id` or its `seq`. The position never moves "
    "backwards: an older position changes nothing and answers the current state. The "
    "caller's other devices receive `read.updated` on their personal channel.",
    dependencies=[Depends(limit_reads)],
    responses=_responses(
        RoomNotFound,
        NotAMember,
        BannedFromRoom,
        MessageNotFound,
        ReadPositionOutOfRange,
        RateLimited,
    ),
)
async def mark_read(
    room_id: uuid.UUID, body: ReadPosition, session: SessionDep, principal: CurrentPrincipal
) -> ReadStateRead:
    state = await receipts.mark_read(
        session, principal, room_id=room_id, message_id=body.message_id, seq=body.seq
    )
    return ReadStateRead.of(state)


@router.post(
    "/read-all",
    response_model=UnreadRead,
    summary="Mark every room read",
    description="Moves the read position of each of the caller's rooms to its newest "
    "message and answers the counts afterwards.",
    dependencies=[Depends(limit_reads)],
    responses=_responses(RateLimited),
)
async def mark_all_read(session: SessionDep, principal: CurrentPrincipal) -> UnreadRead:
    return UnreadRead.of(await receipts.mark_all_read(session, principal))


@router.get(
    "/unread",
    response_model=UnreadRead,
    summary="Unread and mention counts of my rooms",
    description="Every room the caller is a member of, with the read position, the "
    "room's newest seq and the exact unread and mention counts, plus the totals.",
    responses=_responses(),
)
async def unread(session: ReadSessionDep, principal: CurrentPrincipal) -> UnreadRead:
    return UnreadRead.of(await receipts.unread_summary(session, principal))


@router.get(
    "/rooms/{room_id}/receipts",
    response_model=ReceiptPageRead,
    summary="Who read up to where in a room",
    description="Each member's read position, by user id, a page at a time.",
    responses=_responses(RoomNotFound, NotAMember, BannedFromRoom),
)
async def room_receipts(
    room_id: uuid.UUID,
    session: ReadSessionDep,
    principal: CurrentPrincipal,
    cursor: Cursor = None,
    limit: Limit = PAGE_SIZE,
) -> ReceiptPageRead:
    page = await receipts.room_receipts(
        session, principal, room_id=room_id, cursor=cursor, limit=limit
    )
    return ReceiptPageRead.of(page)


# ---- presence ------------------------------------------------------------------------------


@router.get(
    "/presence",
    response_model=PresenceRead,
    summary="Users' statuses",
    description="`online` (a connected device in use), `away` (every connected device "
    f"reported away) or `offline`, for up to {MAX_PRESENCE_USERS} users.",
    responses=_responses(RealtimeUnavailable),
)
async def presence(
    principal: CurrentPrincipal,
    activity: ActivityDep,
    user_id: Annotated[list[uuid.UUID], Query(min_length=1, max_length=MAX_PRESENCE_USERS)],
) -> PresenceRead:
    del principal  # any signed-in user may see statuses
    return PresenceRead(statuses=await activity.presence.statuses(user_id))


@router.get(
    "/rooms/{room_id}/presence",
    response_model=RoomPresenceRead,
    summary="The statuses of a room's members",
    description="A page of members (by user id) with their status.",
    responses=_responses(RoomNotFound, NotAMember, BannedFromRoom, RealtimeUnavailable),
)
async def room_presence(
    room_id: uuid.UUID,
    session: ReadSessionDep,
    principal: CurrentPrincipal,
    activity: ActivityDep,
    cursor: Cursor = None,
    limit: Limit = PAGE_SIZE,
) -> RoomPresenceRead:
    page = await room_statuses(
        session, principal, activity.presence, room_id=room_id, cursor=cursor, limit=limit
    )
    return RoomPresenceRead(statuses=page.statuses, next_cursor=page.next_cursor)
