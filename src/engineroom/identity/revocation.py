"""Ending every sign-in of an account: refresh tokens and cookie sessions.

Used when the account's secret or standing changes (password reset or change, disable,
delete). Refresh tokens are revoked in the caller's transaction; sessions in whichever
store holds them (with Redis, at once: a revocation that outlives a rolled-back request
errs on the safe side). Access tokens already issued stay valid until they expire (the
access token lifetime, 15 minutes by default): they are verified without a database.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.platform import Platform
from engineroom.identity.accounts import revoke_refresh_tokens
from engineroom.identity.sessions import revoke_other_sessions


async def revoke_sign_ins(
    session: AsyncSession,
    platform: Platform,
    user_id: uuid.UUID,
    *,
    keep_session: str | None = None,
) -> int:
    """Revoke the account's refresh tokens and sessions (except ``keep_session``, the
    public id of the caller's own session); returns how many sessions ended."""
    await revoke_refresh_tokens(session, user_id)
    return await revoke_other_sessions(session, platform, user_id, keep=keep_session)
