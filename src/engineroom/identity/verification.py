"""Single-use, expiring tokens mailed to the user: email verification and password reset.

A token is 256 random bits, URL-safe; the database keeps only its SHA-256
(``identity_one_time_token.token_hash``), so a copy of the table opens nothing. Redeeming
one is a guarded update (``used_at IS NULL``): of two concurrent uses exactly one wins.
Issuing a token deletes the account's earlier unused tokens of the same purpose, so only
the newest link works. Verification tokens carry the address they verify: after an email
change, a link sent to the old address verifies nothing.

The mails themselves are written by the jobs in ``lifecycle_mail``; this module holds the
rules that run inside a request.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.clock import utcnow
from engineroom.core.errors import BadRequest
from engineroom.core.platform import Platform
from engineroom.identity import audit, passwords, repository, throttle
from engineroom.identity.accounts import set_password
from engineroom.identity.config import identity_settings
from engineroom.identity.crypto import hash_token, new_token
from engineroom.identity.errors import AccountDisabled, ValidationFailed
from engineroom.identity.models import OneTimeToken, User
from engineroom.identity.refresh import ClientInfo
from engineroom.identity.revocation import revoke_sign_ins

TOKEN_BYTES = 32
TOKEN_MAX_LENGTH = 200


class Purpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"
    CHANGE_EMAIL = "change_email"


class OneTimeTokenInvalid(BadRequest):
    """Unknown, already used, or meant for something else."""

    code = "one_time_token_invalid"


class OneTimeTokenExpired(BadRequest):
    code = "one_time_token_expired"


async def issue_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    purpose: Purpose,
    ttl: timedelta,
    new_email: str | None = None,
) -> str:
    """A new token for ``purpose`` (earlier unused ones die); returns the raw value."""
    await session.execute(
        delete(OneTimeToken).where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose == purpose.value,
            OneTimeToken.used_at.is_(None),
        )
    )
    raw = new_token(TOKEN_BYTES)
    now = utcnow()
    session.add(
        OneTimeToken(
            user_id=user_id,
            purpose=purpose.value,
            token_hash=hash_token(raw),
            new_email=new_email,
            expires_at=now + ttl,
            created_at=now,
        )
    )
    await session.flush()
    return raw


async def redeem(session: AsyncSession, raw: str, purpose: Purpose) -> OneTimeToken:
    """Use the token up; ``OneTimeTokenInvalid`` or ``OneTimeTokenExpired`` otherwise."""
    if not raw or len(raw) > TOKEN_MAX_LENGTH:
        raise OneTimeTokenInvalid("The link is not valid.")
    row = await session.scalar(
        select(OneTimeToken).where(OneTimeToken.token_hash == hash_token(raw))
    )
    if row is None or row.purpose != purpose.value:
        raise OneTimeTokenInvalid("The link is not valid.")
    if row.used_at is not None:
        raise OneTimeTokenInvalid("The link has already been used.")
    now = utcnow()
    if row.expires_at <= now:
        raise OneTimeTokenExpired("The link has expired; ask for a new one.")
    result = await session.execute(
        update(OneTimeToken)
        .where(OneTimeToken.id == row.id, OneTimeToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise OneTimeTokenInvalid("The link has already been used.")
    row.used_at = now
    return row


async def discard_tokens(session: AsyncSession, user_id: uuid.UUID, purpose: Purpose) -> None:
    """Delete the account's unused tokens of ``purpose`` (a reset makes the others moot)."""
    await session.execute(
        delete(OneTimeToken).where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose == purpose.value,
            OneTimeToken.used_at.is_(None),
        )
    )


async def _owner(session: AsyncSession, row: OneTimeToken) -> User:
    user = await repository.user_by_id(session, row.user_id)
    if user is None:
        raise OneTimeTokenInvalid("The link is not valid.")
    return user


async def verify_email(session: AsyncSession, raw: str, *, client: ClientInfo) -> User:
    """Mark the address the token was sent to as verified."""
    row = await redeem(session, raw, Purpose.VERIFY_EMAIL)
    user = await _owner(session, row)
    if row.new_email is not None and row.new_email != user.email:
        raise OneTimeTokenInvalid("The link was for an address this account no longer uses.")
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    audit.record(session, audit.Action.EMAIL_VERIFY, user_id=user.id, client=client)
    await session.flush()
    return user


async def reset_password(
    session: AsyncSession,
    platform: Platform,
    *,
    raw: str,
    new_password: str,
    client: ClientInfo,
) -> User:
    """Set a new password with a reset token; every session and refresh token ends.

    A refused password rolls the redemption back with the rest, so the link keeps
    working. Using the link proves the mailbox: the email counts as verified.
    """
    row = await redeem(session, raw, Purpose.RESET_PASSWORD)
    user = await _owner(session, row)
    if not user.is_active:
        raise AccountDisabled("This account is disabled.")
    problems = passwords.password_problems(new_password, username=user.username, email=user.email)
    if problems:
        # Raising rolls the redemption back with everything else: the link still works.
        raise ValidationFailed({"new_password": problems})
    await set_password(session, identity_settings(platform.settings), user, new_password)
    await discard_tokens(session, user.id, Purpose.RESET_PASSWORD)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    ended = await revoke_sign_ins(session, platform, user.id)
    audit.record(
        session,
        audit.Action.PASSWORD_RESET,
        user_id=user.id,
        client=client,
        details={"sessions_revoked": ended},
    )
    await session.flush()
    # The owner proved control of the mailbox: let them in even during an attack.
    await throttle.forget_account_failures(platform, identifier=user.email)
    return user
