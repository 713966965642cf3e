"""Small cryptographic helpers shared by the identity module.

Encryption at rest is AES-256-GCM with a key derived by HKDF-SHA256 from the root secret
and a purpose label, so a key leaked for one purpose opens nothing else. TOTP secrets use
``ENGINEROOM_IDENTITY_TOTP_ENCRYPTION_KEY`` when it is set, so they can be kept under a key
that lives apart from the root secret. The purpose is also the AEAD associated data: a
ciphertext cannot be moved from one column to another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engineroom.identity.config import identity_settings
from engineroom.settings import Settings

TOTP_PURPOSE = "totp"
_VERSION = "v1"
_NONCE_BYTES = 12


class DecryptionError(Exception):
    """The ciphertext is damaged, was made with another key, or for another purpose."""


@lru_cache(maxsize=64)
def _derive(secret: str, purpose: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"engineroom-identity",
        info=f"engineroom identity {purpose}".encode(),
    )
    return hkdf.derive(secret.encode())


def derive_key(settings: Settings, purpose: str) -> bytes:
    """A 32-byte key for ``purpose``, stable for a given root (or TOTP) secret."""
    if purpose == TOTP_PURPOSE:
        dedicated = identity_settings(settings).totp_encryption_key
        if dedicated is not None:
            return _derive(dedicated.get_secret_value(), purpose)
    return _derive(settings.secret, purpose)


def encrypt(settings: Settings, purpose: str, plaintext: bytes) -> str:
    """Encrypt for storage; the result is ASCII (``v1.<base64url(nonce + ciphertext)>``)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(derive_key(settings, purpose)).encrypt(nonce, plaintext, purpose.encode())
    return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"


def decrypt(settings: Settings, purpose: str, ciphertext: str) -> bytes:
    """Reverse ``encrypt``; raises ``DecryptionError`` on any tampering or key mismatch."""
    version, _, body = ciphertext.partition(".")
    if version != _VERSION or not body:
        raise DecryptionError("unknown ciphertext format")
    try:
        raw = base64.urlsafe_b64decode(body.encode("ascii"))
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        return AESGCM(derive_key(settings, purpose)).decrypt(nonce, sealed, purpose.encode())
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError("cannot decrypt") from exc


def hash_token(raw: str) -> str:
    """SHA-256 hex of a high-entropy token (what the database stores instead of it)."""
    return hashlib.sha256(raw.encode()).hexdigest()


def hmac_hex(settings: Settings, purpose: str, message: str) -> str:
    """HMAC-SHA256 under the purpose's derived key (for values derived from a secret)."""
    return hmac.new(derive_key(settings, purpose), message.encode(), hashlib.sha256).hexdigest()


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random token with ``nbytes`` of entropy."""
    return secrets.token_urlsafe(nbytes)


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
