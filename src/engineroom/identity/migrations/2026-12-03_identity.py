"""Identity: users, roles, signing keys, refresh tokens, sessions, API keys, MFA, audit.

The built-in roles (admin, moderator, member) are created here with their permissions.

Revision ID: 825a7a125215
Revises: (base)
Create Date: 2026-12-03 20:04:50+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engineroom.core.clock import new_id, utcnow
from engineroom.core.models import UTCDateTime

revision: str = "825a7a125215"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("identity",)
depends_on: str | Sequence[str] | None = "98770258dba6"

# A copy, not an import: a migration must keep doing what it did when it was written.
BUILTIN_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("Every permission.", ("*",)),
    "moderator": (
        "Removes other people's content and reads the audit log.",
        (
            "blog:article:delete",
            "blog:comment:delete",
            "chat:message:delete",
            "chat:room:moderate",
            "identity:audit:read",
        ),
    ),
    "member": ("Every registered user; acts on their own resources only.", ()),
}


def upgrade() -> None:
    op.create_table(
        "identity_audit_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_audit_event")),
    )
    op.create_index(
        "ix_identity_audit_event_action_occurred_at",
        "identity_audit_event",
        ["action", "occurred_at"],
    )
    op.create_index(
        "ix_identity_audit_event_user_id_occurred_at",
        "identity_audit_event",
        ["user_id", "occurred_at"],
    )

    op.create_table(
        "identity_role",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_role")),
        sa.UniqueConstraint("name", name=op.f("uq_identity_role_name")),
    )
    op.create_table(
        "identity_signing_key",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_identity_signing_key")),
    )
    op.create_table(
        "identity_user",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("username_key", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("bio", sa.Text(), nullable=True),
        sa.Column("image", sa.String(length=2048), nullable=True),
        sa.Column("email_verified_at", UTCDateTime(), nullable=True),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.Column("mfa_enabled", sa.Boolean(), nullable=False),
        sa.Column("password_changed_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_user")),
        sa.UniqueConstraint("email", name=op.f("uq_identity_user_email")),
        sa.UniqueConstraint("username", name=op.f("uq_identity_user_username")),
        sa.UniqueConstraint("username_key", name=op.f("uq_identity_user_username_key")),
    )
    op.create_table(
        "identity_api_key",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=255), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["identity_user.id"],
            name=op.f("fk_identity_api_key_user_id_identity_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_api_key")),
        sa.UniqueConstraint("prefix", name=op.f("uq_identity_api_key_prefix")),
    )
    op.create_index(op.f("ix_identity_api_key_user_id"), "identity_api_key", ["user_id"])

    op.create_table(
        "identity_one_time_token",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("new_email", sa.String(length=320), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["identity_user.id"],
            name=op.f("fk_identity_one_time_token_user_id_identity_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_one_time_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_one_time_token_token_hash")),
    )
    op.create_index(
        op.f("ix_identity_one_time_token_user_id"), "identity_one_time_token", ["user_id"]
    )

    op.create_table(
        "identity_recovery_code",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=255), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["identity_user.id"],
            name=op.f("fk_identity_recovery_code_user_id_identity_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_recovery_code")),
    )
    op.create_index(
        op.f("ix_identity_recovery_code_user_id"), "identity_recovery_code", ["user_id"]
    )

    op.create_table(
        "identity_refresh_token",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("rotated_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("successor_id", sa.Uuid(), nullable=True),
        sa.Column("grace_pair", sa.Text(), nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["identity_user.id"],
            name=op.f("fk_identity_refresh_token_user_id_identity_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_refresh_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_refresh_token_token_hash")),
    )
    op.create_index(
        op.f("ix_identity_refresh_token_family_id"), "identity_refresh_token", ["family_id"]
    )
    op.create_index(
        op.f("ix_identity_refresh_token_user_id"), "identity_refresh_token", ["user_id"]
    )

    op.create_table(
        "identity_role_permission",
        sa.Column("role_id", sa.Uuid(), nullable=False),
        sa.Column("permission", sa.String(length=150), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["identity_role.id"],
            name=op.f("fk_identity_role_permission_role_id_identity_role"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role_id", "permission", name=op.f("pk_identity_role_permission")),
    )
    op.create_table(
        "identity_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("idle_expires_at", UTCDateTime(), nullable=False),
        sa.Column("csrf_secret", sa.String(length=255), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["identity_user.id"],
            name=op.f("fk_identity_session_user_id_identity_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_session")),
    )
    op.create_index(op.f("ix_identity_session_user_id"), "identity_session", ["user_id"])

    op.create_table(
        "identity_totp",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("confirmed_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["identity_user.id"],
            name=op.f("fk_identity_totp_user_id_identity_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_identity_totp")),
    )
    op.create_table(
        "identity_user_role",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["identity_role.id"],
            name=op.f("fk_identity_user_role_role_id_identity_role"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["identity_user.id"],
            name=op.f("fk_identity_user_role_user_id_identity_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "role_id", name=op.f("pk_identity_user_role")),
    )
    op.create_index(op.f("ix_identity_user_role_role_id"), "identity_user_role", ["role_id"])

    _seed_builtin_roles()


def _seed_builtin_roles() -> None:
    role = sa.table(
        "identity_role",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("description", sa.Text()),
        sa.column("builtin", sa.Boolean()),
        sa.column("created_at", UTCDateTime()),
    )
    grant = sa.table(
        "identity_role_permission",
        sa.column("role_id", sa.Uuid()),
        sa.column("permission", sa.String()),
    )
    roles: list[dict[str, object]] = []
    grants: list[dict[str, object]] = []
    for name, (description, permissions) in BUILTIN_ROLES.items():
        role_id = new_id()
        roles.append(
            {
                "id": role_id,
                "name": name,
                "description": description,
                "builtin": True,
                "created_at": utcnow(),
            }
        )
        grants.extend({"role_id": role_id, "permission": p} for p in permissions)
    op.bulk_insert(role, roles)
    op.bulk_insert(grant, grants)


def downgrade() -> None:
    # Dropping a table drops its indexes on every engine; children before parents.
    for table in (
        "identity_user_role",
        "identity_totp",
        "identity_session",
        "identity_role_permission",
        "identity_refresh_token",
        "identity_recovery_code",
        "identity_one_time_token",
        "identity_api_key",
        "identity_user",
        "identity_signing_key",
        "identity_role",
        "identity_audit_event",
    ):
        op.drop_table(table)
