"""The blog module's tables (all prefixed ``blog_``).

Users live in the identity module: these tables store user ids only, never a reference
to identity's tables, and ``blog_author`` is the blog's own projection of the few user
fields it shows (fed by identity's events, seeded from a writer's token). Indexed strings
carry a length because MariaDB cannot index unbounded TEXT.

The full-text index (``blog_article_fts``) is built by the migration with each dialect's
own DDL and has no model; see ``search.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from engineroom.core.clock import new_id, utcnow
from engineroom.core.models import Base, UTCDateTime

USERNAME_LENGTH = 64
IMAGE_LENGTH = 2048
SLUG_LENGTH = 160
TITLE_LENGTH = 200
DESCRIPTION_LENGTH = 1000
TAG_LENGTH = 64

# SQLite only auto-increments an INTEGER PRIMARY KEY; the others get a BIGINT.
_COMMENT_ID = BigInteger().with_variant(Integer(), "sqlite")


class Author(Base):
    """Who wrote something: the blog's projection of an identity user."""

    __tablename__ = "blog_author"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH))
    username_key: Mapped[str] = mapped_column(String(USERNAME_LENGTH), unique=True)
    """Lower-cased username; identity keeps usernames unique whatever their case."""
    bio: Mapped[str | None] = mapped_column(Text(), default=None)
    image: Mapped[str | None] = mapped_column(String(IMAGE_LENGTH), default=None)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime())
    """When the identity event this row reflects happened: an older event never wins."""


class Article(Base):
    __tablename__ = "blog_article"
    __table_args__ = (
        # The public lists: published articles, newest first (optionally by one author).
        Index("ix_blog_article_published_at_id", "published_at", "id"),
        Index("ix_blog_article_author_id_published_at", "author_id", "published_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(SLUG_LENGTH), unique=True)
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH))
    description: Mapped[str] = mapped_column(String(DESCRIPTION_LENGTH))
    body: Mapped[str] = mapped_column(Text())
    body_html: Mapped[str] = mapped_column(Text())
    """``body`` rendered from Markdown and sanitized once, when written."""
    tag_list: Mapped[list[str]] = mapped_column(JSON())
    """Sorted copy of the article's tags (``blog_article_tag`` is what filters use)."""
    author_id: Mapped[uuid.UUID] = mapped_column()
    favorites_count: Mapped[int] = mapped_column(Integer(), default=0)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    """``None`` while the article is a draft, seen by its author only."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ArticleTag(Base):
    __tablename__ = "blog_article_tag"

    article_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("blog_article.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(TAG_LENGTH), primary_key=True, index=True)


class Favorite(Base):
    __tablename__ = "blog_favorite"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    article_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("blog_article.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Follow(Base):
    __tablename__ = "blog_follow"

    follower_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    followee_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Comment(Base):
    __tablename__ = "blog_comment"

    # RealWorld gives comments integer ids.
    id: Mapped[int] = mapped_column(_COMMENT_ID, primary_key=True, autoincrement=True)
    article_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("blog_article.id", ondelete="CASCADE"), index=True
    )
    author_id: Mapped[uuid.UUID] = mapped_column(index=True)
    body: Mapped[str] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
