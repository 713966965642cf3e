"""Settings of the account lifecycle and its protections (env prefix ``ENGINEROOM_IDENTITY_``).

They sit beside ``IdentitySettings`` (same prefix, other names) and are read the same way:
``lifecycle_settings(settings)`` reads the environment once per platform ``Settings``
object, ``configure_lifecycle(settings, ...)`` lets tests and embedders pass their own.

Rate limits are strings such as ``"5/15 minutes"`` (see ``core/ratelimit.py``).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engineroom.core.ratelimit import parse_limit
from engineroom.identity.config import PerSettings
from engineroom.settings import Settings


class LifecycleSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ENGINEROOM_IDENTITY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    verify_email_ttl: timedelta = Field(default=timedelta(hours=48))
    reset_password_ttl: timedelta = Field(default=timedelta(hours=1))
    change_email_ttl: timedelta = Field(default=timedelta(hours=24))
    account_links_url: str | None = None
    """Base URL of the pages that handle mailed links (``<base>/reset-password?token=``).
    Defaults to ``ENGINEROOM_PUBLIC_URL`` + ``/account``. Never derived from the request's
    Host header, which a client chooses (password-reset poisoning); without either
    setting, mails carry the token alone."""

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

    @field_validator("verify_email_ttl", "reset_password_ttl", "change_email_ttl")
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
        if self.account_links_url:
            return self.account_links_url
        if settings.public_url:
            return settings.public_url.rstrip("/") + "/account"
        return None


_LIFECYCLE = PerSettings(LifecycleSettings)


def lifecycle_settings(settings: Settings) -> LifecycleSettings:
    """The lifecycle settings that go with ``settings`` (read from the environment once)."""
    return _LIFECYCLE.get(settings)


def configure_lifecycle(settings: Settings, lifecycle: LifecycleSettings) -> None:
    """Use ``lifecycle`` for everything running with ``settings``."""
    _LIFECYCLE.set(settings, lifecycle)
