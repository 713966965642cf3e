"""Admin routes under ``/api/v1/identity``: users (``identity:user:manage``) and the audit
log (``identity:audit:read``: admins and moderators)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.auth import Principal, require
from engineroom.core.deps import PlatformDep, ReadSessionDep, SessionDep
from engineroom.core.errors import Forbidden, Unauthorized, error_responses
from engineroom.identity import audit, lifecycle, repository
from engineroom.identity.csrf import CsrfFailed
from engineroom.identity.errors import UserNotFound
from engineroom.identity.refresh import ClientInfo
from engineroom.identity.router import PREFIX
from engineroom.identity.schemas_lifecycle import (
    AdminUserRead,
    AuditEventList,
    AuditEventRead,
    UserList,
)

READ_AUDIT = "identity:audit:read"
UserManager = Annotated[Principal, Depends(require(lifecycle.MANAGE_USERS))]
AuditReader = Annotated[Principal, Depends(require(READ_AUDIT))]
Client = Annotated[ClientInfo, Depends(audit.client_of)]
_AUTH_ERRORS = (Unauthorized, Forbidden)

router = APIRouter(prefix=PREFIX, tags=["identity"])


async def _read(session: AsyncSession, user_id: uuid.UUID) -> AdminUserRead:
    user = await lifecycle.user_or_404(session, user_id)
    roles = await repository.role_names_of(session, [user.id])
    return AdminUserRead.of(user, roles.get(user.id, []))


@router.get(
    "/users",
    response_model=UserList,
    summary="List and search users",
    description="In registration order, a page at a time: pass `next_cursor` back as "
    "`cursor`. `q` matches part of the email or username, in any case.",
    responses=error_responses(*_AUTH_ERRORS, lifecycle.UserCursorInvalid),
)
async def list_users(
    _: UserManager,
    session: ReadSessionDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
    status: lifecycle.UserStatus | None = None,
    role: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=lifecycle.MAX_PAGE)] = 50,
) -> UserList:
    page = await lifecycle.search_users(
        session,
        lifecycle.UserFilter(query=q, status=status, role=role),
        cursor=cursor,
        limit=limit,
    )
    return UserList(
        users=[AdminUserRead.of(user, page.roles.get(user.id, [])) for user in page.users],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/users/{user_id}",
    response_model=AdminUserRead,
    summary="One user, as admins see them",
    responses=error_responses(*_AUTH_ERRORS, UserNotFound),
)
async def get_user(user_id: uuid.UUID, _: UserManager, session: ReadSessionDep) -> AdminUserRead:
    return await _read(session, user_id)


@router.post(
    "/users/{user_id}/disable",
    response_model=AdminUserRead,
    summary="Disable a user",
    description="Ends every session and refresh token of the user and refuses new "
    "sign-ins and API keys; access tokens already issued expire within their lifetime. "
    "Publishes `identity.user.disabled`. Disabling twice is not an error.",
    responses=error_responses(*_AUTH_ERRORS, CsrfFailed, UserNotFound, lifecycle.CannotManageSelf),
)
async def disable_user(
    user_id: uuid.UUID,
    admin: UserManager,
    session: SessionDep,
    platform: PlatformDep,
    client: Client,
) -> AdminUserRead:
    await lifecycle.disable_user(session, platform, actor=admin, user_id=user_id, client=client)
    return await _read(session, user_id)


@router.post(
    "/users/{user_id}/enable",
    response_model=AdminUserRead,
    summary="Enable a disabled user",
    description="Publishes `identity.user.enabled`. Enabling twice is not an error.",
    responses=error_responses(*_AUTH_ERRORS, CsrfFailed, UserNotFound),
)
async def enable_user(
    user_id: uuid.UUID, admin: UserManager, session: SessionDep, client: Client
) -> AdminUserRead:
    await lifecycle.enable_user(session, actor=admin, user_id=user_id, client=client)
    return await _read(session, user_id)


def _utc(moment: datetime | None) -> datetime | None:
    # A time without offset is read as UTC, the only zone the API speaks.
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@router.get(
    "/audit-events",
    response_model=AuditEventList,
    summary="Search the audit log",
    description="Newest first, a page at a time (pass `next_cursor` back as `cursor`). "
    "`since` is inclusive, `until` exclusive; times without an offset are UTC.",
    responses=error_responses(*_AUTH_ERRORS, audit.AuditCursorInvalid),
)
async def list_audit_events(
    _: AuditReader,
    session: ReadSessionDep,
    user_id: uuid.UUID | None = None,
    actor_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=64, examples=["login"])] = None,
    outcome: Literal["success", "failure", "blocked"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 50,
) -> AuditEventList:
    filters = audit.AuditFilter(
        user_id=user_id,
        actor_id=actor_id,
        action=action,
        outcome=outcome,
        since=_utc(since),
        until=_utc(until),
    )
    page = await audit.search(session, filters, cursor=cursor, limit=limit)
    return AuditEventList(
        events=[AuditEventRead.of(event) for event in page.events], next_cursor=page.next_cursor
    )
