"""The audit log: every authentication event, who, what, when, from where, and how it ended.

Two ways to write:

* ``record(session, ...)`` adds the entry to the caller's transaction, for changes: the
  entry exists exactly when the change does.
* ``record_failure(platform, ...)`` writes in a small transaction of its own, for refusals
  (a wrong password, a reused refresh token): the request that caused it rolls back, yet
  the attempt stays on record. The write runs as a task of its own because on SQLite the
  request's transaction holds the write lock until it ends; the task waits for that
  (busy timeout) instead of deadlocking with it. ``flush(platform)`` waits for pending
  writes (shutdown, tests).

Entries never hold secrets: no passwords, tokens or codes. ``details`` is a small JSON
object of non-secret facts (the method, a session or key id, the role, the typed email
of a failed login to an unknown account).

Queries (``search``) are keyset-paginated on ``(occurred_at, id)``, newest first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import structlog
from fastapi import Request
from sqlalchemy import Table, and_, bindparam, exists, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.clock import new_id, utcnow
from engineroom.core.errors import AppError, BadRequest, RateLimited
from engineroom.core.platform import Platform
from engineroom.identity.models import IP_LENGTH, USER_AGENT_LENGTH, AuditEvent, User
from engineroom.identity.refresh import ClientInfo

logger = structlog.get_logger("engineroom.identity.audit")

MAX_PAGE = 200
_DETAIL_STRING_MAX = 500
_PERSONAL_DETAILS = ("email", "new_email", "old_email")


class Action(StrEnum):
    REGISTER = "register"
    LOGIN = "login"
    LOGOUT = "logout"
    TOKEN_REFRESH = "token.refresh"
    REFRESH_REUSE = "token.reuse_detected"
    PASSWORD_CHANGE = "password.change"
    PASSWORD_RESET_REQUEST = "password.reset_request"
    PASSWORD_RESET = "password.reset"
    EMAIL_VERIFICATION_REQUEST = "email.verification_request"
    EMAIL_VERIFY = "email.verify"
    EMAIL_CHANGE_REQUEST = "email.change_request"
    EMAIL_CHANGE = "email.change"
    MFA_ENROLL = "mfa.enroll"
    MFA_DISABLE = "mfa.disable"
    MFA_CHALLENGE = "mfa.challenge"
    API_KEY_CREATE = "api_key.create"
    API_KEY_REVOKE = "api_key.revoke"
    SESSION_REVOKE = "session.revoke"
    ROLE_ASSIGN = "role.assign"
    ROLE_UNASSIGN = "role.unassign"
    USER_DISABLE = "user.disable"
    USER_ENABLE = "user.enable"
    USER_DELETE = "user.delete"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    BLOCKED = "blocked"
    """Refused by a rate limit before the credential was even checked."""


class AuditCursorInvalid(BadRequest):
    code = "cursor_invalid"


def client_of(request: Request) -> ClientInfo:
    """The address and user agent of a request, trimmed to what the log stores."""
    ip = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    return ClientInfo(
        ip=ip[:IP_LENGTH] if ip else None,
        user_agent=agent[:USER_AGENT_LENGTH] if agent else None,
    )


def _clean_details(details: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not details:
        return None
    cleaned: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, str):
            value = value[:_DETAIL_STRING_MAX]
        elif isinstance(value, uuid.UUID | datetime):
            value = str(value)
        elif not isinstance(value, int | float | bool | list | type(None)):
            value = str(value)[:_DETAIL_STRING_MAX]
        cleaned[str(key)] = value
    return cleaned


def _entry_values(
    action: Action,
    outcome: Outcome,
    *,
    user_id: uuid.UUID | None,
    actor_id: uuid.UUID | None,
    client: ClientInfo | None,
    details: Mapping[str, Any] | None,
) -> dict[str, Any]:
    client = client or ClientInfo()
    return {
        "id": new_id(),
        "occurred_at": utcnow(),
        "user_id": user_id,
        "actor_id": actor_id if actor_id is not None else user_id,
        "action": action.value,
        "outcome": outcome.value,
        "ip": client.ip[:IP_LENGTH] if client.ip else None,
        "user_agent": client.user_agent[:USER_AGENT_LENGTH] if client.user_agent else None,
        "details": _clean_details(details),
    }


def record(
    session: AsyncSession,
    action: Action,
    *,
    user_id: uuid.UUID | None,
    actor_id: uuid.UUID | None = None,
    client: ClientInfo | None = None,
    outcome: Outcome = Outcome.SUCCESS,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Add an entry to ``session``'s transaction (it commits or rolls back with it).

    ``user_id`` is the account concerned, ``actor_id`` who acted (defaults to the user;
    an admin disabling someone is the actor of that entry).
    """
    session.add(
        AuditEvent(
            **_entry_values(
                action, outcome, user_id=user_id, actor_id=actor_id, client=client, details=details
            )
        )
    )


_ENTRY_COLUMNS = (
    "id",
    "occurred_at",
    "user_id",
    "actor_id",
    "action",
    "outcome",
    "ip",
    "user_agent",
    "details",
)
_EVENTS = cast(Table, AuditEvent.__table__)
_USERS = cast(Table, User.__table__)
# INSERT ... SELECT <the entry> WHERE EXISTS (<the account as the check read it>), built
# once so that its compiled form is cached.
_LOGIN_ENTRY = insert(_EVENTS).from_select(
    list(_ENTRY_COLUMNS),
    select(*(bindparam(name, type_=_EVENTS.c[name].type) for name in _ENTRY_COLUMNS)).where(
        exists().where(
            _USERS.c.id == bindparam("account_id", type_=_USERS.c.id.type),
            _USERS.c.password_changed_at
            == bindparam("seen_changed_at", type_=_USERS.c.password_changed_at.type),
            _USERS.c.mfa_enabled == bindparam("seen_mfa_enabled", type_=_USERS.c.mfa_enabled.type),
            _USERS.c.disabled_at.is_(None),
        )
    ),
)


async def record_login(
    session: AsyncSession,
    user: User,
    *,
    client: ClientInfo | None,
    details: Mapping[str, Any] | None,
) -> bool:
    """Record the successful password check of ``user`` (``login``), in ``session``'s
    transaction, only if the account is still as the check read it: same password, MFA
    on or off as it was, not disabled, not deleted. ``False`` (nothing written) when it
    changed meanwhile: the login must then be refused.

    The check reads the account before hashing, outside the transaction (see
    ``accounts.authenticate``); one statement both confirms it in the transaction and
    writes the entry, where a second read would cost a round trip per login.
    """
    values = _entry_values(
        Action.LOGIN,
        Outcome.SUCCESS,
        user_id=user.id,
        actor_id=None,
        client=client,
        details=details,
    )
    result = await session.execute(
        _LOGIN_ENTRY,
        {
            **values,
            "account_id": user.id,
            "seen_changed_at": user.password_changed_at,
            "seen_mfa_enabled": user.mfa_enabled,
        },
    )
    return getattr(result, "rowcount", 0) == 1


_PENDING: weakref.WeakKeyDictionary[Platform, set[asyncio.Task[None]]] = weakref.WeakKeyDictionary()


def record_failure(
    platform: Platform,
    action: Action,
    *,
    user_id: uuid.UUID | None = None,
    email: str | None = None,
    actor_id: uuid.UUID | None = None,
    client: ClientInfo | None = None,
    outcome: Outcome = Outcome.FAILURE,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Write an entry in a transaction of its own, whatever becomes of the caller's.

    With ``email`` and no ``user_id`` (a failed login), the account is looked up in that
    transaction: the entry names the account when it exists, and keeps the typed email
    otherwise, and the request answers just as fast either way.
    """
    entry = AuditEvent(
        **_entry_values(
            action, outcome, user_id=user_id, actor_id=actor_id, client=client, details=details
        )
    )
    lookup = email.strip().lower() if email and user_id is None else None
    task = asyncio.get_running_loop().create_task(_write_alone(platform, entry, lookup))
    pending = _PENDING.setdefault(platform, set())
    pending.add(task)
    task.add_done_callback(pending.discard)


async def _write_alone(platform: Platform, entry: AuditEvent, email: str | None) -> None:
    try:
        async with platform.database.unit_of_work() as session:
            if email is not None:
                user_id = await session.scalar(select(User.id).where(User.email == email))
                if user_id is None:
                    entry.details = {**(entry.details or {}), "email": email[:_DETAIL_STRING_MAX]}
                else:
                    entry.user_id = entry.actor_id = user_id
            session.add(entry)
    except Exception:
        # The request has been answered already; a lost entry is logged, never raised.
        logger.exception("audit_write_failed", action=entry.action, outcome=entry.outcome)


@asynccontextmanager
async def failures_recorded(
    platform: Platform,
    action: Action,
    *,
    client: ClientInfo,
    user_id: uuid.UUID | None = None,
    email: str | None = None,
) -> AsyncIterator[None]:
    """Record an ``AppError`` raised in the block as a failed ``action`` (then re-raise it);
    a rate-limit refusal is recorded as ``blocked``."""
    try:
        yield
    except AppError as exc:
        outcome = Outcome.BLOCKED if isinstance(exc, RateLimited) else Outcome.FAILURE
        record_failure(
            platform,
            action,
            user_id=user_id,
            email=email,
            client=client,
            outcome=outcome,
            details={"error": exc.code},
        )
        raise


async def flush(platform: Platform) -> None:
    """Wait until every entry written with ``record_failure`` is stored."""
    while True:
        waiting = [task for task in _PENDING.get(platform, ()) if not task.done()]
        if not waiting:
            return
        await asyncio.gather(*waiting, return_exceptions=True)


async def forget_personal_details(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Drop emails from the entries of a deleted account; the facts stay, by id only."""
    rows = await session.scalars(
        select(AuditEvent).where(AuditEvent.user_id == user_id, AuditEvent.details.is_not(None))
    )
    for row in list(rows):
        details = dict(row.details or {})
        if any(key in details for key in _PERSONAL_DETAILS):
            for key in _PERSONAL_DETAILS:
                details.pop(key, None)
            row.details = details or None


# ---- queries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    user_id: uuid.UUID | None = None
    actor_id: uuid.UUID | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    """Inclusive."""
    until: datetime | None = None
    """Exclusive."""


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None


def encode_cursor(event: AuditEvent) -> str:
    raw = f"{event.occurred_at.astimezone(UTC).isoformat()}|{event.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, _, ident = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
        occurred_at = datetime.fromisoformat(moment)
        if occurred_at.tzinfo is None:
            raise ValueError("naive")
        return occurred_at, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise AuditCursorInvalid("The cursor is not valid; start from the first page.") from None


async def search(
    session: AsyncSession, filters: AuditFilter, *, cursor: str | None = None, limit: int = 50
) -> AuditPage:
    """Entries matching ``filters``, newest first, ``limit`` per page."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(AuditEvent)
    if filters.user_id is not None:
        query = query.where(AuditEvent.user_id == filters.user_id)
    if filters.actor_id is not None:
        query = query.where(AuditEvent.actor_id == filters.actor_id)
    if filters.action is not None:
        query = query.where(AuditEvent.action == filters.action)
    if filters.outcome is not None:
        query = query.where(AuditEvent.outcome == filters.outcome)
    if filters.since is not None:
        query = query.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.occurred_at < filters.until)
    if cursor is not None:
        at, ident = decode_cursor(cursor)
        query = query.where(
            or_(
                AuditEvent.occurred_at < at,
                and_(AuditEvent.occurred_at == at, AuditEvent.id < ident),
            )
        )
    rows = list(
        await session.scalars(
            query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(limit + 1)
        )
    )
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return AuditPage(events=rows[:limit], next_cursor=next_cursor)
