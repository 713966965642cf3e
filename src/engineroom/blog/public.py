"""The blog module's facade: what other modules may rely on.

The blog's events and their payloads are its contract:

- ``blog.article.created`` / ``.updated`` / ``.published`` / ``.deleted``:
  ``{"article_id", "slug", "author_id", "published"}`` (``deleted`` without ``published``);
- ``blog.comment.created`` / ``.deleted``: ``{"comment_id", "article_id", "author_id"}``.
"""

from __future__ import annotations

from engineroom.blog.events import (
    ARTICLE_CREATED,
    ARTICLE_DELETED,
    ARTICLE_PUBLISHED,
    ARTICLE_UPDATED,
    COMMENT_CREATED,
    COMMENT_DELETED,
)

EVENT_ARTICLE_CREATED = ARTICLE_CREATED
EVENT_ARTICLE_UPDATED = ARTICLE_UPDATED
EVENT_ARTICLE_PUBLISHED = ARTICLE_PUBLISHED
EVENT_ARTICLE_DELETED = ARTICLE_DELETED
EVENT_COMMENT_CREATED = COMMENT_CREATED
EVENT_COMMENT_DELETED = COMMENT_DELETED

__all__ = [
    "EVENT_ARTICLE_CREATED",
    "EVENT_ARTICLE_DELETED",
    "EVENT_ARTICLE_PUBLISHED",
    "EVENT_ARTICLE_UPDATED",
    "EVENT_COMMENT_CREATED",
    "EVENT_COMMENT_DELETED",
]
