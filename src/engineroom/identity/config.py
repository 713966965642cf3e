"""Identity settings (env prefix ``ENGINEROOM_IDENTITY_``), documented in the README table.

Durations accept seconds (``900``) or ISO 8601 (``PT15M``). One ``IdentitySettings`` goes
with each platform ``Settings`` object: ``identity_settings(settings)`` reads it from the
environment the first time and ``configure(settings, ...)`` lets tests and embedders pass
their own.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Generic, TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engineroom.settings import Settings

T = TypeVar("T")


def _default_hash_concurrency() -> int:
    return max(1, os.cpu_count() or 1)


class IdentitySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ENGINEROOM_IDENTITY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    access_token_ttl: timedelta = Field(default=timedelta(minutes=15))
    realworld_token_ttl: timedelta = Field(default=timedelta(hours=24))
    """RealWorld clients have no refresh flow, so their tokens live longer."""
    refresh_token_ttl: timedelta = Field(default=timedelta(days=30))
    refresh_grace_seconds: float = Field(default=10.0, ge=0, le=300)
    """A rotated refresh token presented again within this window gets the same new pair."""
    session_idle_timeout: timedelta = Field(default=timedelta(hours=12))
    session_absolute_lifetime: timedelta = Field(default=timedelta(days=14))
    totp_encryption_key: SecretStr | None = None
    """Dedicated key for TOTP secrets at rest; derived from the root secret when unset."""
    signing_key_cache_seconds: float = Field(default=60.0, gt=0, le=3600)
    """How long a process trusts its cached signing keys before reading them again (a key
    rotated by the CLI reaches running servers within this time)."""
    issuer: str | None = None
    """The JWT ``iss``; defaults to ``ENGINEROOM_PUBLIC_URL`` or ``engineroom``."""
    password_memory_cost: int = Field(default=19456, ge=8192, le=4_194_304)
    """Argon2id memory in KiB (OWASP minimum: 19 MiB)."""
    password_time_cost: int = Field(default=2, ge=1, le=50)
    password_parallelism: int = Field(default=1, ge=1, le=64)
    password_hash_concurrency: int = Field(default_factory=_default_hash_concurrency, ge=1)
    """How many hashes run at once in the worker threads; more wait their turn."""

    @field_validator("totp_encryption_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator(
        "access_token_ttl",
        "realworld_token_ttl",
        "refresh_token_ttl",
        "session_idle_timeout",
        "session_absolute_lifetime",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    def issuer_for(self, settings: Settings) -> str:
        return self.issuer or (settings.public_url or "engineroom").rstrip("/")

    @property
    def longest_access_ttl(self) -> timedelta:
        """How long a retired signing key must keep verifying."""
        return max(self.access_token_ttl, self.realworld_token_ttl)


class PerSettings(Generic[T]):
    """Module settings that go with one platform ``Settings`` object.

    Read from the environment on first use (``factory``), or set explicitly by tests and
    embedders. Settings objects are not hashable (list fields), so entries are keyed by
    identity and dropped together with the object.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._by_settings: dict[int, T] = {}

    def get(self, settings: Settings) -> T:
        found = self._by_settings.get(id(settings))
        if found is None:
            found = self._factory()
            self.set(settings, found)
        return found

    def set(self, settings: Settings, value: T) -> None:
        key = id(settings)
        if key not in self._by_settings:
            weakref.finalize(settings, self._by_settings.pop, key, None)
        self._by_settings[key] = value


_IDENTITY = PerSettings(IdentitySettings)


def identity_settings(settings: Settings) -> IdentitySettings:
    """The identity settings that go with ``settings`` (read from the environment once)."""
    return _IDENTITY.get(settings)


def configure(settings: Settings, identity: IdentitySettings) -> None:
    """Use ``identity`` for everything running with ``settings``."""
    _IDENTITY.set(settings, identity)
