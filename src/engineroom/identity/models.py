"""The identity module's tables (all prefixed ``identity_``).

Strings that are indexed carry a length: MariaDB cannot index an unbounded TEXT column.
Foreign keys stay inside the module; other modules store a user's id, never a reference.
Rows that belong to a user cascade on delete so deleting an account leaves nothing behind,
except the audit log, which outlives the account on purpose.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from engineroom.core.clock import new_id, utcnow
from engineroom.core.models import Base, UTCDateTime

EMAIL_LENGTH = 320
USERNAME_LENGTH = 64
HASH_LENGTH = 64
"""SHA-256 in hex."""
PASSWORD_HASH_LENGTH = 255
IP_LENGTH = 45
USER_AGENT_LENGTH = 512
IMAGE_LENGTH = 2048
ROLE_NAME_LENGTH = 64
PERMISSION_LENGTH = 150

_USER_FK = "identity_user.id"


def _user_fk() -> ForeignKey:
    return ForeignKey(_USER_FK, ondelete="CASCADE")


class User(Base):
    __tablename__ = "identity_user"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(EMAIL_LENGTH), unique=True)
    """Normalized: trimmed and lower-cased."""
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), unique=True)
    username_key: Mapped[str] = mapped_column(String(USERNAME_LENGTH), unique=True)
    """Lower-cased username: usernames are unique whatever their case."""
    password_hash: Mapped[str] = mapped_column(String(PASSWORD_HASH_LENGTH))
    bio: Mapped[str | None] = mapped_column(Text, default=None)
    image: Mapped[str | None] = mapped_column(String(IMAGE_LENGTH), default=None)
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None


class Role(Base):
    __tablename__ = "identity_role"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(ROLE_NAME_LENGTH), unique=True)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RolePermission(Base):
    __tablename__ = "identity_role_permission"

    role_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identity_role.id", ondelete="CASCADE"), primary_key=True
    )
    permission: Mapped[str] = mapped_column(String(PERMISSION_LENGTH), primary_key=True)


class UserRole(Base):
    __tablename__ = "identity_user_role"

    user_id: Mapped[uuid.UUID] = mapped_column(_user_fk(), primary_key=True)
    role_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identity_role.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SigningKey(Base):
    """A JWT signing key pair. ``retired_at`` stops signing, ``expires_at`` stops verifying."""

    __tablename__ = "identity_signing_key"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_key: Mapped[str] = mapped_column(Text)
    """PKCS#8 PEM, encrypted with ``crypto.encrypt`` (purpose ``signing-key``)."""
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class RefreshToken(Base):
    __tablename__ = "identity_refresh_token"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(_user_fk(), index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    successor_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    grace_pair: Mapped[str | None] = mapped_column(Text, default=None)
    """The pair handed out at rotation, encrypted, kept for the grace window only."""
    scopes: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    ip: Mapped[str | None] = mapped_column(String(IP_LENGTH), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_LENGTH), default=None)


class UserSession(Base):
    """A cookie session. ``id`` is the hash of the id in the cookie, never the id itself."""

    __tablename__ = "identity_session"

    id: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(_user_fk(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    csrf_secret: Mapped[str] = mapped_column(String(255))
    ip: Mapped[str | None] = mapped_column(String(IP_LENGTH), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_LENGTH), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ApiKey(Base):
    __tablename__ = "identity_api_key"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(_user_fk(), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Totp(Base):
    __tablename__ = "identity_totp"

    user_id: Mapped[uuid.UUID] = mapped_column(_user_fk(), primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    """Encrypted at rest (``crypto.encrypt``, purpose ``totp``)."""
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_used_step: Mapped[int | None] = mapped_column(BigInteger, default=None)


class RecoveryCode(Base):
    __tablename__ = "identity_recovery_code"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(_user_fk(), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class OneTimeToken(Base):
    """Single-use tokens mailed to the user (verify email, reset password, change email)."""

    __tablename__ = "identity_one_time_token"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(_user_fk(), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    new_email: Mapped[str | None] = mapped_column(String(EMAIL_LENGTH), default=None)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEvent(Base):
    """Who did what, when, from where, and how it ended. No foreign key: it outlives users."""

    __tablename__ = "identity_audit_event"
    __table_args__ = (
        Index("ix_identity_audit_event_user_id_occurred_at", "user_id", "occurred_at"),
        Index("ix_identity_audit_event_action_occurred_at", "action", "occurred_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    ip: Mapped[str | None] = mapped_column(String(IP_LENGTH), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_LENGTH), default=None)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
