"""API keys for machines: ``er_<prefix>_<secret>``, shown once, stored hashed.

The prefix (12 lowercase letters and digits) is stored in clear and shown in listings so
that people can tell their keys apart; it is also how a presented key is looked up. The
secret (43 base62 characters, about 256 bits) is never stored: the database keeps the
SHA-256 of the whole key, which is enough for a value with that much entropy (no slow
hash is needed, and none could help a guessable key anyway).

A key acts for its owner with the owner's current permissions, narrowed by its scopes: a
scope the owner no longer holds grants nothing, and a key is refused as soon as it is
revoked, has expired, or its owner is disabled.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.auth import Credentials, Principal
from engineroom.core.clock import utcnow
from engineroom.core.errors import Conflict, Forbidden, NotFound, Unauthorized
from engineroom.core.platform import Platform
from engineroom.identity.crypto import constant_time_equals, hash_token
from engineroom.identity.models import ApiKey
from engineroom.identity.session_store import write_later
from engineroom.identity.sessions import account_state

KEY_PREFIX = "er_"
PREFIX_LENGTH = 12
SECRET_LENGTH = 43
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_KEY_PATTERN = re.compile(
    rf"er_(?P<prefix>[a-z0-9]{{{PREFIX_LENGTH}}})_(?P<secret>[A-Za-z0-9]{{{SECRET_LENGTH}}})"
)
_NAME = r"[a-z][a-z0-9_-]*"
# "*", or one to three names, or one or two names followed by a final ":*".
_SCOPE_PATTERN = re.compile(rf"\*|{_NAME}(?::{_NAME}){{0,2}}|{_NAME}(?::{_NAME})?:\*")
MAX_SCOPES = 32
MAX_SCOPE_LENGTH = 150
MAX_ACTIVE_KEYS = 100
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per key: a busy key costs no write per call."""


class ApiKeyInvalid(Unauthorized):
    code = "api_key_invalid"

    def __init__(self, message: str = "The API key is not valid.") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ApiKeyExpired(Unauthorized):
    code = "api_key_expired"

    def __init__(self, message: str = "The API key has expired.") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class ApiKeyScopeNotAllowed(Forbidden):
    """A requested scope goes beyond what the creating credential may do."""

    code = "api_key_scope_not_allowed"


class ApiKeyLimitReached(Conflict):
    code = "api_key_limit_reached"


class ApiKeyForbidden(Forbidden):
    """API keys are managed by their owner signed in, not by another API key."""

    code = "api_key_forbidden"


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    secret: str


def generate_key() -> tuple[str, str]:
    """A new ``(prefix, full_key)`` pair."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    return prefix, f"{KEY_PREFIX}{prefix}_{secret}"


def looks_like_api_key(value: str) -> bool:
    """True for values in the key format's namespace (a bearer value that is no JWT)."""
    return value.startswith(KEY_PREFIX)


def parse_key(value: str) -> ParsedKey | None:
    match = _KEY_PATTERN.fullmatch(value)
    if match is None:
        return None
    return ParsedKey(prefix=match["prefix"], secret=match["secret"])


def key_hash(full_key: str) -> str:
    return hash_token(full_key)


def validate_scopes(scopes: Sequence[str]) -> list[str]:
    """Check the syntax of each scope; returns them sorted and without duplicates."""
    if len(scopes) > MAX_SCOPES:
        raise ValueError(f"at most {MAX_SCOPES} scopes")
    for scope in scopes:
        if len(scope) > MAX_SCOPE_LENGTH or not _SCOPE_PATTERN.fullmatch(scope):
            raise ValueError(
                f"scope {scope[:MAX_SCOPE_LENGTH]!r} is not module:resource:action "
                "(lowercase, a final '*' allowed)"
            )
    return sorted(set(scopes))


def allowed_scopes(creator: Principal, requested: Sequence[str] | None) -> list[str] | None:
    """The scopes a new key gets: never more than the credential creating it may do.

    ``None`` (no narrowing) is only granted to an unscoped creator; a scoped creator's key
    inherits the creator's scopes instead. Raises ``ApiKeyScopeNotAllowed`` for a scope
    outside the creator's permissions (and scopes).
    """
    if requested is None:
        return None if creator.scopes is None else sorted(creator.scopes)
    refused = [scope for scope in requested if not creator.can(scope)]
    if refused:
        raise ApiKeyScopeNotAllowed(
            f"You cannot grant scopes you do not hold: {', '.join(refused)}."
        )
    return list(requested)


async def create_api_key(
    session: AsyncSession,
    *,
    creator: Principal,
    name: str,
    scopes: Sequence[str] | None,
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """Create a key for the creator's user; returns the row and the key (shown once)."""
    if creator.kind != "user":
        raise ApiKeyForbidden("API keys can only be created by their owner signed in.")
    granted = allowed_scopes(creator, scopes)
    user_id = uuid.UUID(creator.subject)
    now = utcnow()
    active = await session.scalar(
        select(ApiKey.id)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .where(or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
        .offset(MAX_ACTIVE_KEYS - 1)
        .limit(1)
    )
    if active is not None:
        raise ApiKeyLimitReached(f"At most {MAX_ACTIVE_KEYS} active API keys; revoke one first.")
    prefix, full_key = generate_key()
    row = ApiKey(
        user_id=user_id,
        name=name,
        prefix=prefix,
        key_hash=key_hash(full_key),
        scopes=granted,
        expires_at=expires_at,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row, full_key


async def list_api_keys(session: AsyncSession, user_id: uuid.UUID) -> list[ApiKey]:
    """Every key of the user, revoked and expired ones included (newest first)."""
    result = await session.scalars(
        select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id.desc())
    )
    return list(result)


async def get_api_key(session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    if row is None or row.user_id != user_id:
        # Someone else's key answers like a missing one: ids reveal nothing.
        raise ApiKeyNotFound(f"No API key {key_id}.")
    return row


async def revoke_api_key(session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """Revoke one of the user's keys (idempotent: revoking twice keeps the first time)."""
    row = await get_api_key(session, user_id, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return row


async def revoke_all_api_keys(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Revoke every active key of the user; returns how many."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def find_active_key(session: AsyncSession, presented: str, now: datetime) -> ApiKey:
    """The key row for a presented key; raises ``ApiKeyInvalid`` or ``ApiKeyExpired``."""
    parsed = parse_key(presented)
    if parsed is None:
        raise ApiKeyInvalid("The API key is malformed.")
    row = await session.scalar(select(ApiKey).where(ApiKey.prefix == parsed.prefix))
    if row is None or not constant_time_equals(row.key_hash, key_hash(presented)):
        raise ApiKeyInvalid()
    if row.revoked_at is not None:
        raise ApiKeyInvalid("The API key has been revoked.")
    if row.expires_at is not None and row.expires_at <= now:
        raise ApiKeyExpired()
    return row


def needs_touch(row: ApiKey, now: datetime) -> bool:
    return row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION


async def touch_last_used(session: AsyncSession, key_id: uuid.UUID, now: datetime) -> bool:
    """Record a use; a guarded update, so concurrent calls write once per resolution."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .where(
            or_(
                ApiKey.last_used_at.is_(None),
                ApiKey.last_used_at <= now - LAST_USED_RESOLUTION,
            )
        )
        .values(last_used_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


async def resolve_api_key(credentials: Credentials, request: Request) -> Principal:
    """The resolver's ``api_key`` handler (``X-API-Key``, or a bearer value ``er_...``)."""
    platform: Platform = request.app.state.platform
    now = utcnow()
    async with platform.database.read_only() as db:
        row = await find_active_key(db, credentials.value, now)
        # Read inside the transaction: its end expires the ORM objects.
        key_id, scopes, touch = row.id, row.scopes, needs_touch(row, now)
        account = await account_state(db, row.user_id)
    if account is None or account.disabled:
        raise ApiKeyInvalid("The owner of this API key is disabled.")
    principal = Principal(
        subject=str(account.user_id),
        kind="api_key",
        username=account.username,
        roles=account.roles,
        permissions=account.permissions,
        scopes=None if scopes is None else frozenset(scopes),
        credential_id=str(key_id),
        via=credentials.scheme,
    )
    if touch:

        async def record_use(db: AsyncSession) -> None:
            await touch_last_used(db, key_id, now)

        write_later(platform, record_use, what="api_key.last_used")
    return principal
