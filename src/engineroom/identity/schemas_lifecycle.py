"""Bodies of the account lifecycle, admin and audit routes (``/api/v1/identity``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engineroom.identity.models import AuditEvent, User
from engineroom.identity.verification import TOKEN_MAX_LENGTH

_TOKEN_EXAMPLE = "kQ3v1m0yXj3bq2m4cD1h8wq9fVgqk0u2yQZl0Jr4Z7E"
_USER_ID_EXAMPLE = "0193a3c2-7d4e-7b1a-9c55-3f1e2d4b6a70"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenBody(_Input):
    """A token from a mailed link."""

    token: str = Field(min_length=1, max_length=TOKEN_MAX_LENGTH, examples=[_TOKEN_EXAMPLE])


class PasswordForgotRequest(_Input):
    email: str = Field(min_length=1, max_length=320, examples=["alice@example.com"])


class PasswordResetRequest(_Input):
    token: str = Field(min_length=1, max_length=TOKEN_MAX_LENGTH, examples=[_TOKEN_EXAMPLE])
    new_password: str = Field(max_length=1024, examples=["a new long passphrase"])


class EmailChangeRequest(_Input):
    new_email: str = Field(min_length=1, max_length=320, examples=["alice@new.example.com"])
    password: str = Field(max_length=1024, description="The current password.")


class AccountDeleteRequest(_Input):
    password: str = Field(max_length=1024, description="The current password.")


class Accepted(BaseModel):
    """The request was taken; what follows arrives by mail."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"detail": "If an account uses this address, a reset link is on its way."}]
        }
    )

    detail: str


class EmailStatus(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "alice@example.com", "email_verified": True}]}
    )

    email: str
    email_verified: bool

    @classmethod
    def of(cls, user: User) -> EmailStatus:
        return cls(email=user.email, email_verified=user.email_verified_at is not None)


class AdminUserRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _USER_ID_EXAMPLE,
                    "email": "alice@example.com",
                    "username": "alice",
                    "bio": None,
                    "image": None,
                    "email_verified": True,
                    "mfa_enabled": False,
                    "roles": ["member"],
                    "disabled": False,
                    "disabled_at": None,
                    "created_at": "2026-12-03T20:04:50.123Z",
                }
            ]
        }
    )

    id: uuid.UUID
    email: str
    username: str
    bio: str | None
    image: str | None
    email_verified: bool
    mfa_enabled: bool
    roles: list[str]
    disabled: bool
    disabled_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, user: User, roles: list[str]) -> AdminUserRead:
        return cls(
            id=user.id,
            email=user.email,
            username=user.username,
            bio=user.bio,
            image=user.image,
            email_verified=user.email_verified_at is not None,
            mfa_enabled=user.mfa_enabled,
            roles=sorted(roles),
            disabled=user.disabled_at is not None,
            disabled_at=user.disabled_at,
            created_at=user.created_at,
        )


class UserList(BaseModel):
    users: list[AdminUserRead]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page.",
        examples=["AZOjwn1OexqcVT8eLUtqcA"],
    )


class AuditEventRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0193a3c2-8a10-7c3e-8f21-6b0d1e2f3a4b",
                    "occurred_at": "2026-12-03T20:05:12.345Z",
                    "user_id": _USER_ID_EXAMPLE,
                    "actor_id": _USER_ID_EXAMPLE,
                    "action": "login",
                    "outcome": "failure",
                    "ip": "203.0.113.7",
                    "user_agent": "curl/8.5.0",
                    "details": {"error": "invalid_credentials"},
                }
            ]
        }
    )

    id: uuid.UUID
    occurred_at: datetime
    user_id: uuid.UUID | None
    actor_id: uuid.UUID | None
    action: str
    outcome: str
    ip: str | None
    user_agent: str | None
    details: dict[str, Any] | None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventRead:
        return cls(
            id=event.id,
            occurred_at=event.occurred_at,
            user_id=event.user_id,
            actor_id=event.actor_id,
            action=event.action,
            outcome=event.outcome,
            ip=event.ip,
            user_agent=event.user_agent,
            details=event.details,
        )


class AuditEventList(BaseModel):
    events: list[AuditEventRead]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )
