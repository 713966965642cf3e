"""What the service hands to the HTTP and GraphQL layers: frozen, already authorised."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ProfileView:
    user_id: uuid.UUID
    username: str
    bio: str | None
    image: str | None
    following: bool


@dataclass(frozen=True, slots=True)
class ArticleView:
    id: uuid.UUID
    slug: str
    title: str
    description: str
    body: str | None
    """``None`` in lists (RealWorld lists omit the body)."""
    body_html: str | None
    tag_list: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    favorited: bool
    favorites_count: int
    author: ProfileView

    @property
    def is_draft(self) -> bool:
        return self.published_at is None


@dataclass(frozen=True, slots=True)
class ArticlePage:
    articles: list[ArticleView]
    total: int
    """Every match, not just this page (RealWorld's ``articlesCount``)."""


@dataclass(frozen=True, slots=True)
class CommentView:
    id: int
    article_id: uuid.UUID
    body: str
    created_at: datetime
    updated_at: datetime
    author: ProfileView


@dataclass(frozen=True, slots=True)
class ArticleQuery:
    """Filters of an article list; every field narrows it."""

    tag: str | None = None
    author: str | None = None
    favorited_by: str | None = None
    search: str | None = None
    feed_of: uuid.UUID | None = None
    """Only articles by authors this user follows."""
    drafts_of: uuid.UUID | None = None
    """This user's drafts instead of published articles."""
