"""JWT signing keys: Ed25519 pairs with a ``kid``, stored encrypted, cached in the process.

The newest key that is not retired signs. Every key that has not expired verifies, so a
rotation leaves tokens signed by the old key valid until they expire. A process reloads
its cache every ``signing_key_cache_seconds`` (so a rotation done by the CLI reaches
running servers) and when it meets a ``kid`` it does not know (a key made by another process),
at most once per ``MISS_RELOAD_INTERVAL`` so forged ``kid`` values cannot flood the
database.
"""

from __future__ import annotations

import asyncio
import base64
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.clock import utcnow
from engineroom.core.platform import Platform
from engineroom.identity import crypto
from engineroom.identity.config import identity_settings
from engineroom.identity.models import SigningKey
from engineroom.settings import Settings

ALGORITHM = "EdDSA"
KEY_PURPOSE = "signing-key"
MISS_RELOAD_INTERVAL = 1.0
# Retired keys verify a little past the longest token lifetime (clock skew between hosts).
EXPIRY_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    private_key: Ed25519PrivateKey | None
    public_key: Ed25519PublicKey
    public_jwk: dict[str, Any]
    created_at: datetime
    retired: bool


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(kid: str, public_key: Ed25519PublicKey) -> dict[str, Any]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw), "kid": kid, "alg": ALGORITHM}


def new_signing_key(settings: Settings) -> SigningKey:
    """A fresh key row (not yet added to a session)."""
    private_key = Ed25519PrivateKey.generate()
    kid = crypto.new_token(12)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKey(
        kid=kid,
        algorithm=ALGORITHM,
        private_key=crypto.encrypt(settings, KEY_PURPOSE, pem),
        public_jwk=public_jwk(kid, private_key.public_key()),
        created_at=utcnow(),
    )


def _load(settings: Settings, row: SigningKey) -> LoadedKey:
    pem = crypto.decrypt(settings, KEY_PURPOSE, row.private_key)
    private_key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise crypto.DecryptionError(f"signing key {row.kid} is not Ed25519")
    return LoadedKey(
        kid=row.kid,
        private_key=private_key if row.retired_at is None else None,
        public_key=private_key.public_key(),
        public_jwk=dict(row.public_jwk),
        created_at=row.created_at,
        retired=row.retired_at is not None,
    )


async def verifying_rows(session: AsyncSession) -> list[SigningKey]:
    now = utcnow()
    rows = await session.scalars(select(SigningKey).order_by(SigningKey.created_at))
    return [row for row in rows if row.expires_at is None or row.expires_at > now]


async def create_key_if_none(session: AsyncSession, settings: Settings) -> bool:
    """Make the first signing key when no key can sign; ``True`` if one was made."""
    rows = await verifying_rows(session)
    if any(row.retired_at is None for row in rows):
        return False
    session.add(new_signing_key(settings))
    await session.flush()
    return True


async def rotate(session: AsyncSession, settings: Settings) -> SigningKey:
    """Retire every signing key (they keep verifying until their tokens expire), add one."""
    now = utcnow()
    keep_until = now + identity_settings(settings).longest_access_ttl + EXPIRY_MARGIN
    for row in await verifying_rows(session):
        if row.retired_at is None:
            row.retired_at = now
            row.expires_at = keep_until
    fresh = new_signing_key(settings)
    # Strictly newer than any retired key, whatever the clock resolution.
    fresh.created_at = now + timedelta(microseconds=1)
    session.add(fresh)
    await session.flush()
    return fresh


class KeyRing:
    """One platform's cached view of the signing keys."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._keys: dict[str, LoadedKey] = {}
        self._signer: LoadedKey | None = None
        self._loaded_at = -1e9
        self._lock = asyncio.Lock()

    async def reload(self, *, create: bool = False) -> None:
        """Read the keys again; with ``create``, first make one if none can sign.

        A plain reload only reads (the read pool): it happens in the middle of requests
        that may hold the SQLite write lock, and a second writer there would wait on
        itself. Creating is for start-up, or a database that has no key at all.

        Callers that find the cache stale together share one read: a plain reload that
        finds the keys read again since it was asked for returns at once. (Without that,
        every request in flight when the cache went stale read and decrypted the keys in
        turn behind the lock, and under load requests waited seconds once a minute.)
        """
        asked_at = time.monotonic()
        async with self._lock:
            if not create and self._loaded_at >= asked_at:
                return
            settings = self._platform.settings
            database = self._platform.database
            if create:
                async with database.unit_of_work() as session:
                    await create_key_if_none(session, settings)
                    loaded = [_load(settings, row) for row in await verifying_rows(session)]
            else:
                async with database.read_only() as session:
                    loaded = [_load(settings, row) for row in await verifying_rows(session)]
            self._keys = {key.kid: key for key in loaded}
            signers = [key for key in loaded if key.private_key is not None]
            self._signer = max(signers, key=lambda key: key.created_at) if signers else None
            self._loaded_at = time.monotonic()

    def _stale(self, interval: float | None = None) -> bool:
        if interval is None:
            interval = identity_settings(self._platform.settings).signing_key_cache_seconds
        return time.monotonic() - self._loaded_at > interval

    async def signer(self) -> tuple[str, Ed25519PrivateKey]:
        """The ``kid`` and private key that sign new tokens."""
        if self._signer is None or self._stale():
            await self.reload()
        if self._signer is None:
            await self.reload(create=True)
        signer = self._signer
        if signer is None or signer.private_key is None:
            raise RuntimeError("no signing key could be loaded or created")
        return signer.kid, signer.private_key

    async def verifier(self, kid: str) -> LoadedKey | None:
        if self._stale() or (kid not in self._keys and self._stale(MISS_RELOAD_INTERVAL)):
            await self.reload()
        return self._keys.get(kid)

    async def jwks(self) -> list[dict[str, Any]]:
        if self._stale():
            await self.reload()
        return [key.public_jwk for key in self._keys.values()]


_RINGS: weakref.WeakKeyDictionary[Platform, KeyRing] = weakref.WeakKeyDictionary()


def key_ring(platform: Platform) -> KeyRing:
    ring = _RINGS.get(platform)
    if ring is None:
        ring = _RINGS[platform] = KeyRing(platform)
    return ring
