"""Identity settings (env prefix ``ENGINEROOM_IDENTITY_``), documented in docs/identity.md.

One class for the whole module: tokens, passwords, sessions, the account lifecycle and
its brute-force limits. Durations accept seconds (``900``) or ISO 8601 (``PT15M``); rate
limits are strings such as ``"5/15 minutes"`` (see ``core/ratelimit.py``). One
``IdentitySettings`` goes with each platform ``Settings`` object:
``identity_settings(settings)`` reads it from the environment the first time and
``configure(settings, ...)`` lets tests and embedders pass their own.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Generic, TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engineroom.core.ratelimit import parse_limit
from engineroom.settings import Settings

T = TypeVar("T")

_DURATIONS = (
    "access_token_ttl",
    "realworld_token_ttl",
    "refresh_token_ttl",
    "session_idle_timeout",
    "session_absolute_lifetime",
    "verify_email_ttl",
    "reset_password_ttl",
    "change_email_ttl",
)
_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")


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

    # ---- account lifecycle -------------------------------------------------------------
    verify_email_ttl: timedelta = Field(default=timedelta(hours=48))
    reset_password_ttl: timedelta = Field(default=timedelta(hours=1))
    change_email_ttl: timedelta = Field(default=timedelta(hours=24))
    account_links_url: str | None = None
    """Base URL of the pages that handle mailed links (``<base>/reset-password?token=``).
    Defaults to ``ENGINEROOM_PUBLIC_URL`` + ``/account``. Never derived from the request's
    Host header, which a client chooses (password-reset poisoning); without either
    setting, mails carry the token alone."""

    # ---- brute-force limits (see ``throttle``) ---------------------------------------
    login_limit_per_account_address: str = "5/15 minutes"
    """Failed logins to one account from one client address; a success clears it."""
    login_limit_per_address: str = "30/15 minutes"
    """Failed logins from one client address, all accounts; a success clears it."""
    login_limit_per_address_daily: str = "500/day"
    """Every login from one address; never cleared (bounds guessing between successes)."""
    login_limit_per_account: str = "50/hour"
    """Logins to one account from addresses it was never used from; decays on its own."""
    known_address_ttl: timedelta = Field(default=timedelta(days=30))
    """How long an address that signed in to an account stays exempt from the per-account
    limit (so a distributed attack cannot lock the owner out of their usual places)."""
    code_limit_per_address: str = "30/15 minutes"
    """Second-factor codes tried from one client address, all accounts (each account also
    has its own limit in ``mfa``); a success clears it."""
    mail_limit_per_address: str = "10/hour"
    """Reset, verification and email-change mails requested from one client address."""
    mail_limit_per_recipient: str = "3/hour"
    """Mails of one kind requested for one account or address (known or not)."""
    token_limit_per_address: str = "30/hour"
    """Attempts to redeem mailed tokens from one client address."""

    @field_validator("totp_encryption_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator(*_DURATIONS, "known_address_ttl", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        # pydantic reads a string only as ISO 8601 or [D,]HH:MM:SS; an environment value
        # such as "900" means seconds here.
        if isinstance(value, str) and _SECONDS.fullmatch(value.strip()):
            return float(value)
        return value

    @field_validator(*_DURATIONS)
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @field_validator(
        "login_limit_per_account_address",
        "login_limit_per_address",
        "login_limit_per_address_daily",
        "login_limit_per_account",
        "code_limit_per_address",
        "mail_limit_per_address",
        "mail_limit_per_recipient",
        "token_limit_per_address",
    )
    @classmethod
    def _limit(cls, value: str) -> str:
        parse_limit(value)
        return value

    @field_validator("account_links_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else None

    def links_base(self, settings: Settings) -> str | None:
        """Where mailed links point (``None``: mails carry the token alone)."""
        if self.account_links_url:
            return self.account_links_url
        if settings.public_url:
            return settings.public_url.rstrip("/") + "/account"
        return None

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
