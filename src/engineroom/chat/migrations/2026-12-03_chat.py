"""Chat: rooms, members, bans, invites, messages (with threads) and reactions.

The message full-text index is each database's own and is created below, after the
tables: an FTS5 virtual table on SQLite, a tsvector table with a GIN index on
PostgreSQL, a FULLTEXT table on MariaDB/MySQL.

Revision ID: 9fbd5adc752d
Revises: (base)
Create Date: 2026-12-03 22:54:06+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from engineroom.core.models import UTCDateTime

revision: str = "9fbd5adc752d"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("chat",)
depends_on: str | Sequence[str] | None = "98770258dba6"


def upgrade() -> None:
    op.create_table(
        "chat_room",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("topic", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("direct_key", sa.String(length=80), nullable=True),
        sa.Column("last_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_room")),
        sa.UniqueConstraint("direct_key", name=op.f("uq_chat_room_direct_key")),
    )
    op.create_index(
        "ix_chat_room_kind_created_at", "chat_room", ["kind", "created_at"], unique=False
    )

    op.create_table(
        "chat_ban",
        sa.Column("room_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("banned_by", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["chat_room.id"],
            name=op.f("fk_chat_ban_room_id_chat_room"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("room_id", "user_id", name=op.f("pk_chat_ban")),
    )
    op.create_table(
        "chat_invite",
        sa.Column("room_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("invited_by", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["chat_room.id"],
            name=op.f("fk_chat_invite_room_id_chat_room"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("room_id", "user_id", name=op.f("pk_chat_invite")),
    )
    op.create_index(op.f("ix_chat_invite_user_id"), "chat_invite", ["user_id"], unique=False)

    op.create_table(
        "chat_member",
        sa.Column("room_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.Column(
            "last_read_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("last_read_at", UTCDateTime(), nullable=True),
        sa.Column("muted_until", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["chat_room.id"],
            name=op.f("fk_chat_member_room_id_chat_room"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("room_id", "user_id", name=op.f("pk_chat_member")),
    )
    op.create_index(op.f("ix_chat_member_user_id"), "chat_member", ["user_id"], unique=False)

    op.create_table(
        "chat_message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("room_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("thread_root_id", sa.Uuid(), nullable=True),
        sa.Column("reply_count", sa.Integer(), nullable=False),
        sa.Column("last_reply_at", UTCDateTime(), nullable=True),
        sa.Column("mentions", sa.JSON(), nullable=False),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("edited_at", UTCDateTime(), nullable=True),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.Column("deleted_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["chat_room.id"],
            name=op.f("fk_chat_message_room_id_chat_room"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_message")),
        sa.UniqueConstraint("room_id", "seq", name=op.f("uq_chat_message_room_id_seq")),
    )
    op.create_index(op.f("ix_chat_message_author_id"), "chat_message", ["author_id"], unique=False)
    op.create_index(
        "ix_chat_message_thread_root_id_seq",
        "chat_message",
        ["thread_root_id", "seq"],
        unique=False,
    )

    op.create_table(
        "chat_reaction",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "emoji",
            sa.String(length=64).with_variant(
                mysql.VARCHAR(length=64, collation="utf8mb4_bin"), "mysql", "mariadb"
            ),
            nullable=False,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["chat_message.id"],
            name=op.f("fk_chat_reaction_message_id_chat_message"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "user_id", "emoji", name=op.f("pk_chat_reaction")),
    )
    _create_message_search_index(op.get_bind().dialect.name)


def _create_message_search_index(dialect: str) -> None:
    # The SQLite and MariaDB rows carry their room, so that a deleted room's rows can be
    # removed after its messages are gone; PostgreSQL's rows go with their message.
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE chat_message_fts USING fts5("
            "message_id UNINDEXED, room_id UNINDEXED, body, "
            "tokenize = 'porter unicode61 remove_diacritics 2')"
        )
    elif dialect == "postgresql":
        op.execute(
            "CREATE TABLE chat_message_fts ("
            "message_id uuid PRIMARY KEY REFERENCES chat_message (id) ON DELETE CASCADE, "
            "document tsvector NOT NULL)"
        )
        op.execute(
            "CREATE INDEX ix_chat_message_fts_document ON chat_message_fts USING gin (document)"
        )
    else:
        op.execute(
            "CREATE TABLE chat_message_fts ("
            "message_id CHAR(32) NOT NULL PRIMARY KEY, room_id CHAR(32) NOT NULL, "
            "body LONGTEXT NOT NULL, KEY ix_chat_message_fts_room_id (room_id), "
            "FULLTEXT KEY ft_chat_message_fts (body)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS chat_message_fts")
    op.drop_table("chat_reaction")
    op.drop_index("ix_chat_message_thread_root_id_seq", table_name="chat_message")
    op.drop_index(op.f("ix_chat_message_author_id"), table_name="chat_message")

    op.drop_table("chat_message")
    op.drop_index(op.f("ix_chat_member_user_id"), table_name="chat_member")

    op.drop_table("chat_member")
    op.drop_index(op.f("ix_chat_invite_user_id"), table_name="chat_invite")

    op.drop_table("chat_invite")
    op.drop_table("chat_ban")
    op.drop_index("ix_chat_room_kind_created_at", table_name="chat_room")

    op.drop_table("chat_room")
