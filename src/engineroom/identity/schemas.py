"""Request and response bodies of the native identity API (``/api/v1/identity``).

Lengths are checked here only loosely (to bound the work a request can cause); the rules
that matter (username pattern, password policy, email syntax) are the service's, so both
APIs answer them the same way.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engineroom.core.clock import utcnow
from engineroom.identity.models import User
from engineroom.identity.refresh import TokenPair
from engineroom.identity.second_factor import SecondFactorChallenge

_TEXT_MAX = 10_000


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Input):
    email: str = Field(max_length=320, examples=["alice@example.com"])
    username: str = Field(max_length=64, examples=["alice"])
    password: str = Field(max_length=1024, examples=["a long passphrase"])


class LoginRequest(_Input):
    email: str = Field(max_length=320, examples=["alice@example.com"])
    password: str = Field(max_length=1024)
    scope: str | None = Field(
        default=None,
        max_length=2000,
        description="Space-separated permissions to narrow the tokens to.",
        examples=["blog:article:create blog:comment:create"],
    )


class RefreshRequest(_Input):
    refresh_token: str = Field(max_length=200)


class ProfileUpdate(_Input):
    """Fields to change; omitted ones stay, ``null`` clears ``bio``/``image``."""

    username: str | None = Field(default=None, max_length=64)
    bio: str | None = Field(default=None, max_length=_TEXT_MAX)
    image: str | None = Field(default=None, max_length=2048)


class PasswordChange(_Input):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class UserRead(BaseModel):
    id: uuid.UUID
    email: str
    username: str
    bio: str | None
    image: str | None
    email_verified: bool
    mfa_enabled: bool
    roles: list[str]
    created_at: datetime

    @classmethod
    def of(cls, user: User, roles: list[str]) -> UserRead:
        return cls(
            id=user.id,
            email=user.email,
            username=user.username,
            bio=user.bio,
            image=user.image,
            email_verified=user.email_verified_at is not None,
            mfa_enabled=user.mfa_enabled,
            roles=sorted(roles),
            created_at=user.created_at,
        )


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str
    refresh_expires_in: int
    scope: str | None = None

    @classmethod
    def of(cls, pair: TokenPair) -> TokenResponse:
        now = utcnow()
        return cls(
            access_token=pair.access_token,
            expires_in=max(0, int((pair.access_expires_at - now).total_seconds())),
            refresh_token=pair.refresh_token,
            refresh_expires_in=max(0, int((pair.refresh_expires_at - now).total_seconds())),
            scope=pair.scope,
        )


class MfaRequiredResponse(BaseModel):
    """The password was right; send a code with this challenge to get the tokens."""

    mfa_required: Literal[True] = True
    challenge: str
    methods: list[str]
    expires_in: int

    @classmethod
    def of(cls, challenge: SecondFactorChallenge) -> MfaRequiredResponse:
        return cls(
            challenge=challenge.challenge,
            methods=list(challenge.methods),
            expires_in=challenge.expires_in,
        )


class RoleCreate(_Input):
    name: str = Field(max_length=64, examples=["editor"])
    description: str | None = Field(default=None, max_length=500)
    permissions: list[str] = Field(
        default_factory=list, examples=[["blog:article:update", "blog:article:delete"]]
    )


class RoleRead(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    builtin: bool
    permissions: list[str]


class RoleList(BaseModel):
    roles: list[RoleRead]


class UserRoles(BaseModel):
    user_id: uuid.UUID
    roles: list[str]


class Jwks(BaseModel):
    keys: list[dict[str, str]]
