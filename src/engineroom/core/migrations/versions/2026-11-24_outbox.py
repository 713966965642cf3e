"""The transactional outbox: events, per-subscriber deliveries, dead letters.

Revision ID: 98770258dba6
Revises: (base)
Create Date: 2026-11-24 17:46:21+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engineroom.core.models import UTCDateTime

revision: str = "98770258dba6"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("core",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "core_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("dispatched_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_core_outbox")),
    )
    op.create_index(op.f("ix_core_outbox_type"), "core_outbox", ["type"])
    op.create_index(op.f("ix_core_outbox_dispatched_at"), "core_outbox", ["dispatched_at"])

    op.create_table(
        "core_event_delivery",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("subscriber", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_core_event_delivery")),
        sa.UniqueConstraint(
            "event_id", "subscriber", name=op.f("uq_core_event_delivery_event_id_subscriber")
        ),
    )
    op.create_index(
        "ix_core_event_delivery_status_next_attempt_at",
        "core_event_delivery",
        ["status", "next_attempt_at"],
    )

    op.create_table(
        "core_dead_letter",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("subscriber", sa.String(length=200), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_core_dead_letter")),
    )
    op.create_index(op.f("ix_core_dead_letter_event_id"), "core_dead_letter", ["event_id"])


def downgrade() -> None:
    # Dropping a table drops its indexes on every engine.
    op.drop_table("core_dead_letter")
    op.drop_table("core_event_delivery")
    op.drop_table("core_outbox")
