"""Token pairs: a JWT access token and an opaque refresh token stored as its SHA-256.

Refresh tokens rotate on every use; the tokens descending from one login form a family.
Presenting a token that was already rotated means it was copied: the whole family is
revoked. The exception is the grace window right after a rotation (``refresh_grace_
seconds``): two tabs of one client refreshing at once both present the same token, and
the second gets the very pair the first got (kept encrypted on the rotated row for the
window) instead of logging the user out. Concurrent refreshes are serialised by a row
lock (``SELECT ... FOR UPDATE``; SQLite serialises writers by itself).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.clock import new_id, utcnow
from engineroom.core.platform import Platform
from engineroom.identity import crypto, repository
from engineroom.identity.config import identity_settings
from engineroom.identity.models import USER_AGENT_LENGTH, RefreshToken, User
from engineroom.identity.tokens import issue_access_token

REFRESH_PREFIX = "ert_"
GRACE_PURPOSE = "refresh-grace"
_REFRESH_BYTES = 32
# Built once, its compiled form cached: every login and refresh inserts one row.
_INSERT = insert(cast(Table, RefreshToken.__table__))


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    scope: str | None = None

    def to_json(self) -> bytes:
        data = asdict(self)
        data["access_expires_at"] = self.access_expires_at.isoformat()
        data["refresh_expires_at"] = self.refresh_expires_at.isoformat()
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TokenPair:
        data = json.loads(raw)
        data["access_expires_at"] = datetime.fromisoformat(data["access_expires_at"])
        data["refresh_expires_at"] = datetime.fromisoformat(data["refresh_expires_at"])
        return cls(**data)


@dataclass(frozen=True)
class ClientInfo:
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class RefreshOutcome:
    """What a refresh did. ``pair`` is ``None`` when it was refused.

    A refusal may still have written (a reused token revokes its family), so callers
    commit before they answer 401.
    """

    pair: TokenPair | None
    user: User | None = None
    reuse_detected: bool = False


async def issue_pair(
    session: AsyncSession,
    platform: Platform,
    user: User,
    *,
    scopes: Iterable[str] | None = None,
    client: ClientInfo | None = None,
    family_id: uuid.UUID | None = None,
    parent_id: uuid.UUID | None = None,
    refresh_expires_at: datetime | None = None,
    grants: repository.Grants | None = None,
) -> tuple[TokenPair, uuid.UUID]:
    """A new access token and a new refresh token (a new family unless ``family_id``),
    and the id of the refresh token's row.

    ``grants`` are the user's roles and permissions when the caller has just read them.
    The row is inserted at once by a prepared Core statement, not added to the session:
    the ORM unit of work (identity map, flush planning) costs more than the insert on a
    path every login takes.
    """
    config = identity_settings(platform.settings)
    scope_list = sorted(set(scopes)) if scopes is not None else None
    if grants is None:
        grants = await repository.grants_of(session, user.id)
    access = await issue_access_token(
        platform,
        user_id=user.id,
        username=user.username,
        roles=grants.roles,
        permissions=grants.permissions,
        scopes=scope_list,
    )
    raw = REFRESH_PREFIX + crypto.new_token(_REFRESH_BYTES)
    client = client or ClientInfo()
    now = utcnow()
    row_id = new_id()
    expires_at = refresh_expires_at or now + config.refresh_token_ttl
    await session.execute(
        _INSERT,
        {
            "id": row_id,
            "user_id": user.id,
            "family_id": family_id or new_id(),
            "token_hash": crypto.hash_token(raw),
            "parent_id": parent_id,
            "created_at": now,
            "expires_at": expires_at,
            "rotated_at": None,
            "revoked_at": None,
            "successor_id": None,
            "grace_pair": None,
            "scopes": scope_list,
            "ip": client.ip,
            "user_agent": client.user_agent[:USER_AGENT_LENGTH] if client.user_agent else None,
        },
    )
    pair = TokenPair(
        access_token=access.token,
        access_expires_at=access.expires_at,
        refresh_token=raw,
        refresh_expires_at=expires_at,
        scope=" ".join(scope_list) if scope_list is not None else None,
    )
    return pair, row_id


async def _locked(session: AsyncSession, raw: str) -> RefreshToken | None:
    result = await session.scalars(
        select(RefreshToken)
        .where(RefreshToken.token_hash == crypto.hash_token(raw))
        .with_for_update()
    )
    return result.one_or_none()


async def refresh(
    session: AsyncSession, platform: Platform, raw: str, *, client: ClientInfo | None = None
) -> RefreshOutcome:
    """Rotate ``raw``: a new pair, the grace pair, or a refusal (see the module docstring)."""
    now = utcnow()
    row = await _locked(session, raw)
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return RefreshOutcome(pair=None)
    if row.rotated_at is not None:
        return await _rotated_again(session, platform, row, now)
    account = await repository.account_by_id(session, row.user_id)
    if account is None or not account.user.is_active:
        await revoke_family(session, row.family_id)
        return RefreshOutcome(pair=None, user=account.user if account is not None else None)
    user = account.user
    pair, successor_id = await issue_pair(
        session,
        platform,
        user,
        scopes=row.scopes,
        client=client,
        family_id=row.family_id,
        parent_id=row.id,
        # A family lives as long as its first token: rotation does not extend a login.
        refresh_expires_at=row.expires_at,
        grants=account.grants,
    )
    row.rotated_at = now
    row.successor_id = successor_id
    row.grace_pair = crypto.encrypt(platform.settings, GRACE_PURPOSE, pair.to_json())
    if row.parent_id is not None:
        # The parent's grace pair is this row's token: past its use, drop it.
        await session.execute(
            update(RefreshToken).where(RefreshToken.id == row.parent_id).values(grace_pair=None)
        )
    return RefreshOutcome(pair=pair, user=user)


async def _rotated_again(
    session: AsyncSession, platform: Platform, row: RefreshToken, now: datetime
) -> RefreshOutcome:
    grace = timedelta(seconds=identity_settings(platform.settings).refresh_grace_seconds)
    assert row.rotated_at is not None
    if row.grace_pair is not None and now - row.rotated_at <= grace:
        user = await repository.user_by_id(session, row.user_id)
        if user is not None and user.is_active:
            pair = TokenPair.from_json(
                crypto.decrypt(platform.settings, GRACE_PURPOSE, row.grace_pair)
            )
            return RefreshOutcome(pair=pair, user=user)
    await revoke_family(session, row.family_id)
    return RefreshOutcome(pair=None, reuse_detected=True)


async def revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), grace_pair=None)
    )


async def revoke(session: AsyncSession, raw: str) -> bool:
    """Logout: revoke the family of ``raw``. ``False`` if the token is unknown."""
    row = await _locked(session, raw)
    if row is None:
        return False
    await revoke_family(session, row.family_id)
    return True
