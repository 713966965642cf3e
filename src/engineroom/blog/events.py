"""Events the blog publishes, and its handlers for identity's events."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.blog import repository
from engineroom.blog.readcache import mark_changed
from engineroom.blog.search import search_index
from engineroom.core.events import Event, Subscription
from engineroom.identity.public import (
    EVENT_USER_DELETED,
    EVENT_USER_REGISTERED,
    EVENT_USER_UPDATED,
)

ARTICLE_CREATED = "blog.article.created"
ARTICLE_UPDATED = "blog.article.updated"
ARTICLE_PUBLISHED = "blog.article.published"
ARTICLE_DELETED = "blog.article.deleted"
COMMENT_CREATED = "blog.comment.created"
COMMENT_DELETED = "blog.comment.deleted"


class _UserSnapshot(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: uuid.UUID
    username: str
    bio: str | None = None
    image: str | None = None


class _UserRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: uuid.UUID


async def on_user_changed(event: Event, session: AsyncSession) -> None:
    """Registered or updated: the payload is the user's full snapshot after the change."""
    user = _UserSnapshot.model_validate(event.payload)
    await repository.save_author(
        session,
        user_id=user.user_id,
        username=user.username,
        bio=user.bio,
        image=user.image,
        synced_at=event.occurred_at,
    )
    mark_changed(session)


async def on_user_deleted(event: Event, session: AsyncSession) -> None:
    """A deleted account takes its articles, comments, favorites and follows with it."""
    user_id = _UserRef.model_validate(event.payload).user_id
    article_ids = await repository.article_ids_by_author(session, user_id)
    await search_index(repository.dialect_of(session)).remove(session, article_ids)
    for article_id in article_ids:
        await repository.delete_article(session, article_id)
    await repository.forget_user(session, user_id)
    await repository.delete_author(session, user_id)
    mark_changed(session)


SUBSCRIPTIONS = (
    Subscription("blog.author_registered", EVENT_USER_REGISTERED, on_user_changed),
    Subscription("blog.author_updated", EVENT_USER_UPDATED, on_user_changed),
    Subscription("blog.author_deleted", EVENT_USER_DELETED, on_user_deleted),
)
