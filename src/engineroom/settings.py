"""One settings class for the whole platform (env prefix ``ENGINEROOM_``, ``.env`` supported).

Every setting is documented in the README's settings table; keep the two in step.
"""

from __future__ import annotations

import os
import secrets
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SECRET_KEY_FILENAME = "secret_key"
MIN_SECRET_KEY_LENGTH = 32


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


class SettingsError(Exception):
    """A setting is wrong; the message names it in one line."""


_DATABASE_SCHEMES = (
    "sqlite+aiosqlite://",
    "postgresql+asyncpg://",
    "mysql+asyncmy://",
    "mariadb+asyncmy://",
)


def _require_scheme(value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if not value.startswith(schemes):
        raise ValueError(f"must start with one of {', '.join(schemes)}")
    return value


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ENGINEROOM_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path("var")
    modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Modules to serve; empty means every module in the catalog."""
    database_url: str | None = None
    database_replica_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    database_pool_size: int = Field(default=10, ge=1, le=500)
    database_echo: bool = False
    redis_url: str | None = None
    broker_url: str | None = None
    smtp_url: str | None = None
    mail_from: str = "engineroom <no-reply@localhost>"
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1", "*.localhost"]
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    tracing_exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = None
    graphql_max_depth: int = Field(default=10, ge=1, le=100)
    graphql_max_cost: int = Field(default=5000, ge=1)
    outbox_poll_interval: float = Field(default=0.5, gt=0, le=60)
    outbox_max_attempts: int = Field(default=8, ge=1, le=100)
    outbox_backoff_base: float = Field(default=0.5, gt=0)
    outbox_backoff_max: float = Field(default=300.0, gt=0)
    public_url: str | None = None

    @field_validator(
        "modules", "database_replica_urls", "cors_origins", "allowed_hosts", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("database_url", "redis_url", "broker_url", "smtp_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        return _require_scheme(value, _DATABASE_SCHEMES)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        return _require_scheme(value, ("redis://", "rediss://", "unix://"))

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        return _require_scheme(value, ("amqp://", "amqps://", "redis://", "rediss://"))

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: str | None) -> str | None:
        return _require_scheme(value, ("smtp://", "smtps://"))

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.tracing_exporter == "otlp" and not self.otlp_endpoint:
            raise ValueError(
                "ENGINEROOM_OTLP_ENDPOINT: required when ENGINEROOM_TRACING_EXPORTER=otlp"
            )
        return self

    # ---- derived values -------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'engineroom.db').as_posix()}"

    @property
    def database_dialect(self) -> Literal["sqlite", "postgresql", "mysql"]:
        url = self.resolved_database_url
        if url.startswith("sqlite"):
            return "sqlite"
        if url.startswith("postgresql"):
            return "postgresql"
        return "mysql"

    @property
    def is_embedded_database(self) -> bool:
        return self.database_dialect == "sqlite"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def is_development(self) -> bool:
        return self.environment is not Environment.PRODUCTION

    @cached_property
    def secret(self) -> str:
        """The signing/encryption root secret; see ``load_secret_key``."""
        return load_secret_key(self)


def load_secret_key(settings: Settings) -> str:
    """Return the root secret.

    Production takes it from ``SECRET_KEY`` or ``SECRET_KEY_FILE`` and refuses to start
    without one. Elsewhere a key is generated once into ``<data dir>/secret_key`` (0600)
    so restarts keep sessions and tokens valid.
    """
    if settings.secret_key is not None:
        value = settings.secret_key.get_secret_value()
        _check_secret_length(value, "ENGINEROOM_SECRET_KEY")
        return value
    if settings.secret_key_file is not None:
        try:
            value = settings.secret_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            message = f"cannot read {settings.secret_key_file}: {exc.strerror}"
            raise SettingsError(f"ENGINEROOM_SECRET_KEY_FILE: {message}") from exc
        _check_secret_length(value, "ENGINEROOM_SECRET_KEY_FILE")
        return value
    if settings.environment is Environment.PRODUCTION:
        raise SettingsError(
            "ENGINEROOM_SECRET_KEY: required in production (or ENGINEROOM_SECRET_KEY_FILE)"
        )
    path = settings.data_dir / SECRET_KEY_FILENAME
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return value


def _check_secret_length(value: str, name: str) -> None:
    if len(value) < MIN_SECRET_KEY_LENGTH:
        raise SettingsError(f"{name}: must be at least {MIN_SECRET_KEY_LENGTH} characters")


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning a validation error into one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    name = f"ENGINEROOM_{location.upper()}" if location else "settings"
    message = first["msg"].removeprefix("Value error, ")
    if not location:
        return message
    if "secret" in location:
        return f"{name}: {message}"
    return f"{name}: {message} (got {first['input']!r})"
