"""Request and response bodies for cookie sessions, API keys and MFA."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from engineroom.core.clock import utcnow
from engineroom.identity.api_keys import MAX_SCOPES, validate_scopes
from engineroom.identity.mfa import Enrollment, MfaStatus
from engineroom.identity.models import ApiKey
from engineroom.identity.session_store import SessionRecord

_CODE_MAX = 64
_CHALLENGE_MAX = 2000


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- sessions ---------------------------------------------------------------------------


class SessionLoginRequest(_Input):
    email: str = Field(max_length=320, examples=["alice@example.com"])
    password: str = Field(max_length=1024)


class SessionRead(BaseModel):
    id: str = Field(description="The session's public id (not the cookie value).")
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime = Field(description="The absolute end of the session.")
    idle_expires_at: datetime = Field(description="The end if it is not used before then.")
    ip: str | None
    user_agent: str | None
    current: bool = Field(description="Whether this request came with this session's cookie.")

    @classmethod
    def of(cls, record: SessionRecord, *, current_id: str | None) -> SessionRead:
        return cls(
            id=record.id,
            created_at=record.created_at,
            last_seen_at=record.last_seen_at,
            expires_at=record.expires_at,
            idle_expires_at=record.idle_expires_at,
            ip=record.ip,
            user_agent=record.user_agent,
            current=record.id == current_id,
        )


class SessionStarted(BaseModel):
    """Signed in: the cookie is set; send ``csrf_token`` as ``X-CSRF-Token`` on writes."""

    session: SessionRead
    csrf_token: str


class SessionList(BaseModel):
    sessions: list[SessionRead]


class RevokedCount(BaseModel):
    revoked: int


# ---- MFA --------------------------------------------------------------------------------


class MfaLoginRequest(_Input):
    challenge: str = Field(max_length=_CHALLENGE_MAX, description="From the password step.")
    code: str = Field(
        max_length=_CODE_MAX,
        description="A 6-digit TOTP code or a recovery code.",
        examples=["123456"],
    )


class MfaCode(_Input):
    code: str = Field(max_length=_CODE_MAX, examples=["123456"])


class MfaDisableRequest(_Input):
    """Proof that the account holder asks: a code (TOTP or recovery) or the password."""

    code: str | None = Field(default=None, max_length=_CODE_MAX)
    password: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _exactly_one(self) -> MfaDisableRequest:
        if (self.code is None) == (self.password is None):
            raise ValueError("give either code or password")
        return self


class TotpEnrollmentRead(BaseModel):
    secret: str = Field(description="Base32, for manual entry in an authenticator app.")
    provisioning_uri: str = Field(description="otpauth:// URI, usually shown as a QR code.")

    @classmethod
    def of(cls, enrollment: Enrollment) -> TotpEnrollmentRead:
        return cls(secret=enrollment.secret, provisioning_uri=enrollment.provisioning_uri)


class RecoveryCodes(BaseModel):
    """Single-use codes for when the authenticator is lost; shown only this once."""

    recovery_codes: list[str]


class MfaStatusRead(BaseModel):
    enabled: bool
    pending: bool = Field(description="Enrollment started and not yet confirmed.")
    confirmed_at: datetime | None
    recovery_codes_remaining: int

    @classmethod
    def of(cls, status: MfaStatus) -> MfaStatusRead:
        return cls(
            enabled=status.enabled,
            pending=status.pending,
            confirmed_at=status.confirmed_at,
            recovery_codes_remaining=status.recovery_codes_remaining,
        )


# ---- API keys ---------------------------------------------------------------------------


class ApiKeyCreate(_Input):
    name: str = Field(min_length=1, max_length=100, examples=["deploy bot"])
    scopes: list[str] | None = Field(
        default=None,
        max_length=MAX_SCOPES,
        description="Permissions the key is narrowed to (each held by you); omit for all of yours.",
        examples=[["blog:article:create"]],
    )
    expires_at: AwareDatetime | None = Field(default=None, examples=["2030-01-01T00:00:00Z"])

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else validate_scopes(value)

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= utcnow():
            raise ValueError("must be in the future")
        return value


ApiKeyStatus = Literal["active", "expired", "revoked"]


class ApiKeyRead(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The visible start of the key: er_<prefix>_...")
    scopes: list[str] | None
    status: ApiKeyStatus
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    revoked_at: datetime | None

    @staticmethod
    def status_of(row: ApiKey, now: datetime) -> ApiKeyStatus:
        if row.revoked_at is not None:
            return "revoked"
        if row.expires_at is not None and row.expires_at <= now:
            return "expired"
        return "active"

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyRead:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            scopes=row.scopes,
            status=cls.status_of(row, utcnow()),
            created_at=row.created_at,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The whole key. It is shown only in this answer.")

    @classmethod
    def with_key(cls, row: ApiKey, key: str) -> ApiKeyCreated:
        return cls(**ApiKeyRead.of(row).model_dump(), key=key)


class ApiKeyList(BaseModel):
    api_keys: list[ApiKeyRead]
