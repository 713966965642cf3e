"""JWT access tokens: issued with the current signing key, verified against cached keys.

Only ``EdDSA`` is accepted: the algorithm is checked against the allowlist before any key
is chosen, and the key's own algorithm is what verifies, so ``alg: none`` and HS256 signed
with the public key (the classic confusion attacks) are refused.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from engineroom.core.auth import Principal
from engineroom.core.clock import utcnow
from engineroom.core.platform import Platform
from engineroom.identity.config import identity_settings
from engineroom.identity.errors import TokenExpired, TokenInvalid
from engineroom.identity.keys import ALGORITHM, key_ring

AUDIENCE = "engineroom"
ALLOWED_ALGORITHMS = (ALGORITHM,)
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "jti")
LEEWAY = timedelta(seconds=30)
VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class AccessToken:
    token: str
    jti: str
    expires_at: datetime


async def issue_access_token(
    platform: Platform,
    *,
    user_id: uuid.UUID,
    username: str,
    roles: Iterable[str],
    permissions: Iterable[str],
    scopes: Iterable[str] | None = None,
    ttl: timedelta | None = None,
) -> AccessToken:
    """Sign an access token for the user (``ttl`` defaults to the access token TTL)."""
    settings = platform.settings
    config = identity_settings(settings)
    kid, private_key = await key_ring(platform).signer()
    now = utcnow()
    expires_at = now + (ttl or config.access_token_ttl)
    jti = str(uuid.uuid4())
    claims: dict[str, Any] = {
        "iss": config.issuer_for(settings),
        "aud": AUDIENCE,
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": jti,
        "username": username,
        "roles": sorted(roles),
        "perms": sorted(permissions),
    }
    if scopes is not None:
        claims["scope"] = " ".join(sorted(scopes))
    token = jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": kid})
    return AccessToken(token=token, jti=jti, expires_at=expires_at)


class _Verified:
    """Tokens this process verified recently: a hit skips the signature check.

    The key is the whole token, so only the very same bytes hit; an entry is used only
    while the token has not expired and its key still verifies.
    """

    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[Principal, int, str]] = OrderedDict()

    def get(self, token: str) -> tuple[Principal, int, str] | None:
        found = self.entries.get(token)
        if found is not None:
            self.entries.move_to_end(token)
        return found

    def put(self, token: str, principal: Principal, expires: int, kid: str) -> None:
        self.entries[token] = (principal, expires, kid)
        if len(self.entries) > VERIFIED_CACHE_SIZE:
            self.entries.popitem(last=False)


_VERIFIED: weakref.WeakKeyDictionary[Platform, _Verified] = weakref.WeakKeyDictionary()


def _verified(platform: Platform) -> _Verified:
    found = _VERIFIED.get(platform)
    if found is None:
        found = _VERIFIED[platform] = _Verified()
    return found


async def verify_access_token(platform: Platform, token: str) -> Principal:
    """The principal of a valid token; ``TokenExpired`` or ``TokenInvalid`` otherwise."""
    cache = _verified(platform)
    hit = cache.get(token)
    if hit is not None:
        known, expires, signed_by = hit
        if time.time() < expires and await key_ring(platform).verifier(signed_by) is not None:
            return known
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid() from exc
    kid = header.get("kid")
    if header.get("alg") not in ALLOWED_ALGORITHMS or not isinstance(kid, str):
        raise TokenInvalid()
    key = await key_ring(platform).verifier(kid)
    if key is None:
        raise TokenInvalid()
    try:
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=list(ALLOWED_ALGORITHMS),
            audience=AUDIENCE,
            issuer=identity_settings(platform.settings).issuer_for(platform.settings),
            leeway=LEEWAY,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpired() from exc
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid() from exc
    principal = principal_from_claims(claims)
    # Cached only up to ``exp`` itself: past it the full check applies the leeway again.
    cache.put(token, principal, int(claims["exp"]), kid)
    return principal


def _strings(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TokenInvalid()
    return frozenset(value)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    subject, username, scope = claims.get("sub"), claims.get("username"), claims.get("scope")
    if not isinstance(subject, str) or not isinstance(username, str):
        raise TokenInvalid()
    try:
        uuid.UUID(subject)
    except ValueError as exc:
        raise TokenInvalid() from exc
    if scope is not None and not isinstance(scope, str):
        raise TokenInvalid()
    return Principal(
        subject=subject,
        kind="user",
        username=username,
        roles=_strings(claims.get("roles", [])),
        permissions=_strings(claims.get("perms", [])),
        scopes=frozenset(scope.split()) if scope is not None else None,
        credential_id=str(claims["jti"]),
        via="bearer",
    )
