"""Blog: authors (projection), articles, tags, favorites, follows, comments, search index.

The full-text index is each database's own: an FTS5 virtual table on SQLite, a tsvector
table with a GIN index on PostgreSQL, a FULLTEXT table on MariaDB/MySQL.

Revision ID: 7b6484cc3449
Revises: (base)
Create Date: 2026-12-03 20:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from engineroom.core.models import UTCDateTime

revision: str = "7b6484cc3449"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("blog",)
depends_on: str | Sequence[str] | None = "98770258dba6"

_COMMENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "blog_author",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("username_key", sa.String(length=64), nullable=False),
        sa.Column("bio", sa.Text(), nullable=True),
        sa.Column("image", sa.String(length=2048), nullable=True),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_blog_author")),
        sa.UniqueConstraint("username_key", name=op.f("uq_blog_author_username_key")),
    )
    op.create_table(
        "blog_article",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=160), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("tag_list", sa.JSON(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("favorites_count", sa.Integer(), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_article")),
        sa.UniqueConstraint("slug", name=op.f("uq_blog_article_slug")),
    )
    op.create_index(
        "ix_blog_article_published_at_id", "blog_article", ["published_at", "id"], unique=False
    )
    op.create_index(
        "ix_blog_article_author_id_published_at",
        "blog_article",
        ["author_id", "published_at"],
        unique=False,
    )
    op.create_table(
        "blog_article_tag",
        sa.Column("article_id", sa.Uuid(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["blog_article.id"],
            name=op.f("fk_blog_article_tag_article_id_blog_article"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("article_id", "tag", name=op.f("pk_blog_article_tag")),
    )
    op.create_index(op.f("ix_blog_article_tag_tag"), "blog_article_tag", ["tag"], unique=False)
    op.create_table(
        "blog_favorite",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("article_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["blog_article.id"],
            name=op.f("fk_blog_favorite_article_id_blog_article"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "article_id", name=op.f("pk_blog_favorite")),
    )
    op.create_index(
        op.f("ix_blog_favorite_article_id"), "blog_favorite", ["article_id"], unique=False
    )
    op.create_table(
        "blog_follow",
        sa.Column("follower_id", sa.Uuid(), nullable=False),
        sa.Column("followee_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("follower_id", "followee_id", name=op.f("pk_blog_follow")),
    )
    op.create_index(
        op.f("ix_blog_follow_followee_id"), "blog_follow", ["followee_id"], unique=False
    )
    op.create_table(
        "blog_comment",
        sa.Column("id", _COMMENT_ID, autoincrement=True, nullable=False),
        sa.Column("article_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["blog_article.id"],
            name=op.f("fk_blog_comment_article_id_blog_article"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_comment")),
    )
    op.create_index(
        op.f("ix_blog_comment_article_id"), "blog_comment", ["article_id"], unique=False
    )
    op.create_index(op.f("ix_blog_comment_author_id"), "blog_comment", ["author_id"], unique=False)
    _create_search_index(op.get_bind().dialect.name)


def _create_search_index(dialect: str) -> None:
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE blog_article_fts USING fts5("
            "article_id UNINDEXED, title, description, body, "
            "tokenize = 'porter unicode61 remove_diacritics 2')"
        )
    elif dialect == "postgresql":
        op.execute(
            "CREATE TABLE blog_article_fts ("
            "article_id uuid PRIMARY KEY REFERENCES blog_article (id) ON DELETE CASCADE, "
            "document tsvector NOT NULL)"
        )
        op.execute(
            "CREATE INDEX ix_blog_article_fts_document ON blog_article_fts USING gin (document)"
        )
    else:
        op.execute(
            "CREATE TABLE blog_article_fts ("
            "article_id CHAR(32) NOT NULL PRIMARY KEY, title VARCHAR(200) NOT NULL, "
            "description VARCHAR(1000) NOT NULL, body LONGTEXT NOT NULL, "
            "FULLTEXT KEY ft_blog_article_fts (title, description, body), "
            "FULLTEXT KEY ft_blog_article_fts_title (title)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )


def downgrade() -> None:
    # Dropping a table drops its indexes (MariaDB refuses to drop an index a foreign key
    # still needs, so they are not dropped one by one first).
    op.execute("DROP TABLE IF EXISTS blog_article_fts")
    for table in (
        "blog_comment",
        "blog_follow",
        "blog_favorite",
        "blog_article_tag",
        "blog_article",
        "blog_author",
    ):
        op.drop_table(table)
