"""Cookie sessions for browsers: server-side records, a cookie that carries only the id.

* Every login makes a new random id (256 bits), so an id planted before login (session
  fixation) never becomes an authenticated session; the session the browser had before
  is revoked.
* A session ends after ``session_idle_timeout`` without use or ``session_absolute_lifetime``
  after login, whichever comes first; the idle deadline moves forward at most once a
  minute (``TOUCH_INTERVAL``), so an active session costs no write per request.
* Each request re-reads the record and the user: revoking a session, disabling the user or
  changing the password (every session older than the change ends) takes effect at once.
* The cookie is ``HttpOnly``, ``SameSite=Lax``, ``Path=/``; over TLS it is also ``Secure``
  and named with the ``__Host-`` prefix, which browsers only accept from a secure origin
  without a ``Domain``, so a sibling subdomain cannot plant or overwrite it.
* Unsafe methods authenticated by the cookie need the CSRF token (see ``csrf``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.auth import SESSION_COOKIE_NAMES, Credentials, Principal
from engineroom.core.clock import utcnow
from engineroom.core.errors import NotFound, Unauthorized
from engineroom.core.platform import Platform
from engineroom.identity.config import identity_settings
from engineroom.identity.crypto import hash_token, new_token
from engineroom.identity.csrf import check_csrf, csrf_token, new_csrf_secret
from engineroom.identity.models import USER_AGENT_LENGTH, Role, RolePermission, User, UserRole
from engineroom.identity.refresh import ClientInfo
from engineroom.identity.session_store import SessionRecord, session_store, write_later

SECURE_COOKIE_NAME, PLAIN_COOKIE_NAME = SESSION_COOKIE_NAMES
TOUCH_INTERVAL = timedelta(minutes=1)
_TOKEN_BYTES = 32
_MAX_TOKEN_LENGTH = 128
_IP_LENGTH = 45


class SessionInvalid(Unauthorized):
    code = "session_invalid"

    def __init__(self, message: str = "The session has ended; sign in again.") -> None:
        super().__init__(message)


class SessionNotFound(NotFound):
    code = "session_not_found"


@dataclass(frozen=True)
class NewSession:
    token: str
    """The cookie value: shown to the browser once, stored only as its hash."""
    record: SessionRecord
    csrf_token: str


@dataclass(frozen=True)
class CurrentSession:
    """The session that authenticated this request (kept on ``request.state``)."""

    record: SessionRecord
    csrf_token: str


def session_id(token: str) -> str:
    return hash_token(token)


async def start_session(
    db: AsyncSession,
    platform: Platform,
    user: User,
    *,
    client: ClientInfo,
    previous_token: str | None = None,
) -> NewSession:
    """Open a session for ``user`` (after every login factor has passed)."""
    store = session_store(platform)
    config = identity_settings(platform.settings)
    now = utcnow()
    if previous_token:
        previous = await store.get(db, session_id(previous_token))
        if previous is not None:
            await store.revoke(db, previous.user_id, previous.id, now)
    token = new_token(_TOKEN_BYTES)
    expires_at = now + config.session_absolute_lifetime
    record = SessionRecord(
        id=session_id(token),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at,
        idle_expires_at=min(expires_at, now + config.session_idle_timeout),
        csrf_secret=new_csrf_secret(),
        ip=client.ip[:_IP_LENGTH] if client.ip else None,
        user_agent=client.user_agent[:USER_AGENT_LENGTH] if client.user_agent else None,
    )
    await store.add(db, record)
    return NewSession(
        token=token,
        record=record,
        csrf_token=csrf_token(platform.settings, token, record.csrf_secret),
    )


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


@dataclass(frozen=True)
class AccountState:
    """What resolving a credential needs to know about its account, read in one query."""

    user_id: uuid.UUID
    username: str
    disabled: bool
    password_changed_at: datetime
    roles: frozenset[str]
    permissions: frozenset[str]


async def account_state(db: AsyncSession, user_id: uuid.UUID) -> AccountState | None:
    """The account, its roles and their permissions (``None``: no such account).

    One round trip instead of two: every request carrying a session cookie or an API key
    pays for it, and on SQLite each statement is a hop to the driver's thread.
    """
    rows = (
        await db.execute(
            select(
                User.username,
                User.disabled_at,
                User.password_changed_at,
                Role.name,
                RolePermission.permission,
            )
            .select_from(User)
            .outerjoin(UserRole, UserRole.user_id == User.id)
            .outerjoin(Role, Role.id == UserRole.role_id)
            .outerjoin(RolePermission, RolePermission.role_id == Role.id)
            .where(User.id == user_id)
        )
    ).all()
    if not rows:
        return None
    username, disabled_at, password_changed_at = rows[0][0], rows[0][1], rows[0][2]
    return AccountState(
        user_id=user_id,
        username=username,
        disabled=disabled_at is not None,
        password_changed_at=password_changed_at,
        roles=frozenset(row[3] for row in rows if row[3] is not None),
        permissions=frozenset(row[4] for row in rows if row[4] is not None),
    )


async def _load(platform: Platform, token: str, now: datetime) -> tuple[SessionRecord, Principal]:
    """The live session of a cookie and its principal (without CSRF check)."""
    if len(token) > _MAX_TOKEN_LENGTH:
        raise SessionInvalid()
    async with platform.database.read_only() as db:
        record = await session_store(platform).get(db, session_id(token))
        if record is None or not record.is_active(now):
            raise SessionInvalid()
        account = await account_state(db, record.user_id)
    if account is None or account.disabled:
        raise SessionInvalid()
    if account.password_changed_at > record.created_at:
        raise SessionInvalid("The password has changed since this sign-in; sign in again.")
    principal = Principal(
        subject=str(account.user_id),
        kind="user",
        username=account.username,
        roles=account.roles,
        permissions=account.permissions,
        credential_id=record.id,
        via="session",
    )
    return record, principal


async def resolve_session(credentials: Credentials, request: Request) -> Principal:
    """The resolver's ``session`` handler: the cookie's principal, CSRF-checked."""
    platform = _platform(request)
    settings = platform.settings
    now = utcnow()
    record, principal = await _load(platform, credentials.value, now)
    expected = csrf_token(settings, credentials.value, record.csrf_secret)
    check_csrf(request, expected=expected, trusted_origins=settings.cors_origins)
    if now - record.last_seen_at >= TOUCH_INTERVAL:
        config = identity_settings(settings)
        idle_until = min(record.expires_at, now + config.session_idle_timeout)
        store = session_store(platform)

        async def touch(db: AsyncSession) -> None:
            await store.touch(db, record, seen_at=now, idle_until=idle_until)

        write_later(platform, touch, what="session.touch")
    request.state.identity_session = CurrentSession(record=record, csrf_token=expected)
    return principal


async def end_cookie_session(
    db: AsyncSession, platform: Platform, request: Request
) -> SessionRecord | None:
    """Sign out: end the session of the request's cookie, if it is still live.

    Works without a resolved principal, so that a browser with a dead session can still
    clear its cookie; a live session is only ended with its CSRF token.
    """
    token = session_cookie(request)
    if not token:
        return None
    store = session_store(platform)
    record = await store.get(db, session_id(token))
    if record is None:
        return None
    expected = csrf_token(platform.settings, token, record.csrf_secret)
    check_csrf(request, expected=expected, trusted_origins=platform.settings.cors_origins)
    await store.revoke(db, record.user_id, record.id, utcnow())
    return record


def current_session(request: Request) -> CurrentSession | None:
    """The session that authenticated this request, if a cookie did."""
    found = getattr(request.state, "identity_session", None)
    return found if isinstance(found, CurrentSession) else None


async def list_sessions(
    db: AsyncSession, platform: Platform, user_id: uuid.UUID
) -> list[SessionRecord]:
    return await session_store(platform).list_for_user(db, user_id, utcnow())


async def revoke_session(
    db: AsyncSession, platform: Platform, user_id: uuid.UUID, target: str
) -> None:
    """Revoke one of the user's sessions by its public id; 404 if not theirs or gone."""
    if not await session_store(platform).revoke(db, user_id, target, utcnow()):
        raise SessionNotFound("No active session with this id.")


async def revoke_other_sessions(
    db: AsyncSession, platform: Platform, user_id: uuid.UUID, *, keep: str | None
) -> int:
    """Revoke every session of the user but ``keep``; returns how many ended."""
    return await session_store(platform).revoke_user(db, user_id, utcnow(), keep=keep)


async def revoke_all_sessions(db: AsyncSession, platform: Platform, user_id: uuid.UUID) -> int:
    """End every session of the user (password reset, account disabled or deleted)."""
    return await session_store(platform).revoke_user(db, user_id, utcnow())


def _is_tls(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, new: NewSession) -> None:
    secure = _is_tls(request)
    lifetime = new.record.expires_at - new.record.created_at
    response.set_cookie(
        SECURE_COOKIE_NAME if secure else PLAIN_COOKIE_NAME,
        new.token,
        max_age=int(lifetime.total_seconds()),
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    secure = _is_tls(request)
    for name in SESSION_COOKIE_NAMES:
        if name == SECURE_COOKIE_NAME and not secure:
            # Browsers drop a __Host- cookie not set over TLS: nothing to clear over HTTP.
            continue
        response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="lax")


def session_cookie(request: Request) -> str | None:
    for name in SESSION_COOKIE_NAMES:
        value = request.cookies.get(name)
        if value:
            return value
    return None
