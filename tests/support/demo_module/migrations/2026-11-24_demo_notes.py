"""demo notes

Revision ID: 5c0ec8c89b0c
Revises: (base)
Create Date: 2026-11-24 16:40:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engineroom.core.models import UTCDateTime

revision: str = "5c0ec8c89b0c"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("demo",)
depends_on: str | Sequence[str] | None = "98770258dba6"


def upgrade() -> None:
    op.create_table(
        "demo_note",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demo_note")),
    )


def downgrade() -> None:
    op.drop_table("demo_note")
