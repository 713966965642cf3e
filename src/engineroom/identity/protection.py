"""Sign-in steps with their brute-force limits and audit entries, for every login route.

The login routes (native token login, RealWorld login, cookie sign-in, the MFA steps,
refresh, logout) call these instead of the bare account functions, so each surface is
limited and recorded the same way: limits first (``throttle``), then the check, then the
audit entry (a success in the request's transaction, a refusal in its own, so a rolled
back request still leaves its failed attempt on record).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.platform import Platform
from engineroom.identity import accounts, audit, mfa, throttle
from engineroom.identity.config import identity_settings
from engineroom.identity.crypto import hash_token
from engineroom.identity.errors import InvalidCredentials
from engineroom.identity.models import RefreshToken, User
from engineroom.identity.refresh import ClientInfo, RefreshOutcome
from engineroom.identity.revocation import revoke_sign_ins


async def authenticate(
    session: AsyncSession, platform: Platform, client: ClientInfo, *, email: str, password: str
) -> accounts.SignIn:
    """``accounts.authenticate`` behind the login limits, audited as ``login``.

    Raises ``RateLimited`` (429, ``Retry-After``) when a limit is reached (see
    ``throttle``), and whatever ``accounts.authenticate`` raises otherwise.
    """
    address = throttle.address_key(client.ip or "")
    async with audit.failures_recorded(platform, audit.Action.LOGIN, client=client, email=email):
        known = await throttle.check_login(platform, identifier=email, address=address)
        try:
            signed_in = await accounts.authenticate(
                session, identity_settings(platform.settings), email=email, password=password
            )
            details: dict[str, object] = {"method": "password"}
            if signed_in.user.mfa_enabled:
                details["second_factor"] = "pending"
            # Written first, in the request's transaction: the statement that records the
            # success also confirms that the account did not change during the check.
            confirmed = await audit.record_login(
                session, signed_in.user, client=client, details=details
            )
            if not confirmed:
                raise InvalidCredentials()
        except InvalidCredentials:
            await throttle.login_failed(platform, identifier=email, address=address)
            raise
        await throttle.login_succeeded(platform, identifier=email, address=address, known=known)
    return signed_in


async def complete_mfa_login(
    session: AsyncSession,
    platform: Platform,
    client: ClientInfo,
    challenge: str,
    code: str,
    *,
    purpose: str,
) -> tuple[User, mfa.Method]:
    """``mfa.complete_login`` behind a per-address code limit, audited as ``mfa.challenge``
    (the account's own code limit is ``mfa``'s)."""
    address = throttle.address_key(client.ip or "")
    async with audit.failures_recorded(platform, audit.Action.MFA_CHALLENGE, client=client):
        await throttle.check_code_attempt(platform, address=address)
        try:
            user, method = await mfa.complete_login(
                session, platform, challenge, code, purpose=purpose
            )
        except mfa.MfaLoginFailed:
            await throttle.code_failed(platform, address=address)
            raise
        await throttle.code_succeeded(platform, address=address)
    audit.record(
        session,
        audit.Action.MFA_CHALLENGE,
        user_id=user.id,
        client=client,
        details={"method": method},
    )
    return user, method


async def record_refresh(
    session: AsyncSession, outcome: RefreshOutcome, refresh_token: str, client: ClientInfo
) -> None:
    """Audit a refresh, success or refusal (the refresh route commits refusals too)."""
    user_id = outcome.user.id if outcome.user is not None else None
    if user_id is None:
        user_id = await _token_owner(session, refresh_token)
    if outcome.pair is not None:
        audit.record(session, audit.Action.TOKEN_REFRESH, user_id=user_id, client=client)
    elif outcome.reuse_detected:
        audit.record(
            session,
            audit.Action.REFRESH_REUSE,
            user_id=user_id,
            client=client,
            outcome=audit.Outcome.FAILURE,
            details={"family": "revoked"},
        )
    else:
        audit.record(
            session,
            audit.Action.TOKEN_REFRESH,
            user_id=user_id,
            client=client,
            outcome=audit.Outcome.FAILURE,
        )


async def record_logout(session: AsyncSession, refresh_token: str, client: ClientInfo) -> None:
    """Audit a token logout (before the family is revoked); unknown tokens leave no entry."""
    user_id = await _token_owner(session, refresh_token)
    if user_id is not None:
        audit.record(
            session, audit.Action.LOGOUT, user_id=user_id, client=client, details={"via": "token"}
        )


async def _token_owner(session: AsyncSession, refresh_token: str) -> uuid.UUID | None:
    return await session.scalar(
        select(RefreshToken.user_id).where(RefreshToken.token_hash == hash_token(refresh_token))
    )


async def password_changed(
    session: AsyncSession,
    platform: Platform,
    user: User,
    client: ClientInfo,
    *,
    keep_session: str | None = None,
) -> None:
    """After a password change: end the other sign-ins and audit ``password.change``."""
    ended = await revoke_sign_ins(session, platform, user.id, keep_session=keep_session)
    audit.record(
        session,
        audit.Action.PASSWORD_CHANGE,
        user_id=user.id,
        client=client,
        details={"sessions_revoked": ended},
    )


def record(
    session: AsyncSession,
    action: audit.Action,
    client: ClientInfo,
    *,
    user_id: uuid.UUID | str,
    actor_id: uuid.UUID | str | None = None,
    **details: object,
) -> None:
    """A one-line audit entry for a route's success (keys, sessions, MFA, roles)."""
    audit.record(
        session,
        action,
        user_id=_uuid(user_id),
        actor_id=_uuid(actor_id) if actor_id is not None else None,
        client=client,
        details=details or None,
    )


def _uuid(value: uuid.UUID | str) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
