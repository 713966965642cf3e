"""Who a connection belongs to: the token of the connect (and refresh) command.

The transport asks a ``TokenVerifier``; the platform's verifier is the identity module's
``verify_access_token`` (signed JWTs checked locally, no database query). An expired token
is answered with the protocol's "token expired" error so that clients fetch a new one; any
other failure closes the connection as "invalid token".
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

import orjson

from engineroom.core.auth import Principal
from engineroom.core.platform import Platform
from engineroom.identity import public as identity


class TokenExpiredError(Exception):
    pass


class TokenInvalidError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    principal: Principal
    expires_at: float | None
    """Unix time after which the connection must be refreshed, ``None`` if never."""


class TokenVerifier(Protocol):
    async def __call__(self, token: str) -> VerifiedToken:
        """Return the verified token; raise ``TokenExpiredError`` or ``TokenInvalidError``."""


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without checking it (call after verification)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    return float(expiry) if isinstance(expiry, int | float) else None


class IdentityTokens:
    """Access tokens of the identity module, verified locally against its signing keys."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform

    async def __call__(self, token: str) -> VerifiedToken:
        try:
            principal = await identity.verify_access_token(self._platform, token)
        except identity.TokenExpired:
            raise TokenExpiredError from None
        except identity.TokenInvalid:
            raise TokenInvalidError from None
        return VerifiedToken(principal, jwt_expiry(token))
