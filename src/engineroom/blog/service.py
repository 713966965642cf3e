"""Articles: reading, writing, favorites. Business rules live here; nothing commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.blog import repository, slugs
from engineroom.blog.authors import ensure_author, viewer_id, writer_id
from engineroom.blog.errors import ArticleNotFound, InvalidInput, NotArticleAuthor
from engineroom.blog.events import (
    ARTICLE_CREATED,
    ARTICLE_DELETED,
    ARTICLE_PUBLISHED,
    ARTICLE_UPDATED,
)
from engineroom.blog.markdown import render_markdown
from engineroom.blog.models import DESCRIPTION_LENGTH, TAG_LENGTH, TITLE_LENGTH, Article
from engineroom.blog.readcache import mark_changed
from engineroom.blog.repository import AnyRow
from engineroom.blog.search import SearchIndex
from engineroom.blog.views import ArticlePage, ArticleQuery, ArticleView, ProfileView
from engineroom.core.auth import Principal
from engineroom.core.clock import new_id, utcnow
from engineroom.core.events import publish

BODY_LENGTH = 100_000
MAX_TAGS = 20
SLUG_ATTEMPTS = 6
DELETE_ANY_ARTICLE = "blog:article:delete"
NUL_MESSAGE = "must not contain NUL characters"


@dataclass(frozen=True)
class ArticleFields:
    """What a client sent; ``None`` means "not given" (on update: leave unchanged)."""

    title: str | None = None
    description: str | None = None
    body: str | None = None
    tags: Sequence[str] | None = None
    published: bool | None = None


# ---- validation ------------------------------------------------------------------------


def _text(
    errors: dict[str, list[str]], name: str, value: str | None, limit: int, *, required: bool
) -> str | None:
    if value is None:
        if required:
            errors.setdefault(name, []).append("can't be blank")
        return None
    stripped = value.strip()
    if "\x00" in value:
        # Databases refuse NUL in text (PostgreSQL) or cut it off; say so instead.
        errors.setdefault(name, []).append(NUL_MESSAGE)
    elif not stripped:
        errors.setdefault(name, []).append("can't be blank")
    elif len(value) > limit:
        errors.setdefault(name, []).append(f"is too long (maximum is {limit} characters)")
    # Titles and descriptions are one line of text; bodies keep their Markdown as sent.
    return value if name == "body" else stripped


def normalize_tags(errors: dict[str, list[str]], tags: Sequence[str] | None) -> list[str] | None:
    """Trimmed, de-duplicated and sorted; blank tags dropped."""
    if tags is None:
        return None
    cleaned = sorted({tag.strip() for tag in tags if tag.strip()})
    if len(cleaned) > MAX_TAGS:
        errors.setdefault("tagList", []).append(f"has too many tags (maximum is {MAX_TAGS})")
    if any("\x00" in tag for tag in cleaned):
        errors.setdefault("tagList", []).append(NUL_MESSAGE)
    if any(len(tag) > TAG_LENGTH for tag in cleaned):
        errors.setdefault("tagList", []).append(
            f"has a tag that is too long (maximum is {TAG_LENGTH} characters)"
        )
    return cleaned


def _validated(fields: ArticleFields, *, creating: bool) -> ArticleFields:
    errors: dict[str, list[str]] = {}
    checked = ArticleFields(
        title=_text(errors, "title", fields.title, TITLE_LENGTH, required=creating),
        description=_text(
            errors, "description", fields.description, DESCRIPTION_LENGTH, required=creating
        ),
        body=_text(errors, "body", fields.body, BODY_LENGTH, required=creating),
        tags=normalize_tags(errors, fields.tags),
        published=fields.published,
    )
    if errors:
        raise InvalidInput("The article is not valid.", field_errors=errors)
    return checked


# ---- views -------------------------------------------------------------------------------


def profile_from_row(row: AnyRow, *, author_id: uuid.UUID, following: bool) -> ProfileView:
    return ProfileView(
        user_id=author_id,
        username=row.username,
        bio=row.bio,
        image=row.image,
        following=following,
    )


def article_from_row(
    row: AnyRow, *, favorited: bool, following: bool, with_body: bool
) -> ArticleView:
    return ArticleView(
        id=row.id,
        slug=row.slug,
        title=row.title,
        description=row.description,
        body=row.body if with_body else None,
        body_html=row.body_html if with_body else None,
        tag_list=tuple(row.tag_list),
        created_at=row.created_at,
        updated_at=row.updated_at,
        published_at=row.published_at,
        favorited=favorited,
        favorites_count=row.favorites_count,
        author=profile_from_row(row, author_id=row.author_id, following=following),
    )


def _views(rows: Sequence[AnyRow], *, with_body: bool) -> list[ArticleView]:
    return [
        article_from_row(
            row,
            favorited=bool(row.favorited),
            following=bool(row.following),
            with_body=with_body,
        )
        for row in rows
    ]


async def favorited_flags(
    session: AsyncSession, viewer: uuid.UUID | None, article_ids: Sequence[uuid.UUID]
) -> list[bool]:
    """Whether ``viewer`` favorited each article (one statement for all of them)."""
    if viewer is None:
        return [False] * len(article_ids)
    found = await repository.favorited_among(session, viewer, article_ids)
    return [article_id in found for article_id in article_ids]


def _visible(row: AnyRow, viewer: uuid.UUID | None) -> bool:
    return row.published_at is not None or row.author_id == viewer


# ---- reads -------------------------------------------------------------------------------


async def list_articles(
    session: AsyncSession,
    *,
    query: ArticleQuery,
    principal: Principal | None,
    search: SearchIndex,
    limit: int,
    offset: int,
    with_body: bool = False,
) -> ArticlePage:
    """A page of articles matching ``query``, newest first (best match first when searching).

    ``favorited`` and ``author.following`` are filled for ``principal`` in the same
    statement; without one they are false.
    """
    viewer = viewer_id(principal)
    rows, total = await repository.list_articles(
        session, query, search, limit=limit, offset=offset, viewer=viewer, with_body=with_body
    )
    return ArticlePage(_views(rows, with_body=with_body), total)


async def get_article(
    session: AsyncSession, *, slug: str, principal: Principal | None
) -> ArticleView:
    """The article at ``slug``; drafts exist for their author only."""
    viewer = viewer_id(principal)
    row = await repository.article_row_by_slug(session, slug, viewer)
    if row is None or not _visible(row, viewer):
        raise ArticleNotFound(f"No article at '{slug}'.")
    return _views([row], with_body=True)[0]


async def popular_tags(session: AsyncSession, *, limit: int = 1000) -> list[str]:
    """Tags of published articles, the most used first."""
    return await repository.popular_tags(session, limit)


# ---- writes ------------------------------------------------------------------------------


async def create_article(
    session: AsyncSession, *, principal: Principal, fields: ArticleFields, search: SearchIndex
) -> ArticleView:
    checked = _validated(fields, creating=True)
    title, description, body = checked.title or "", checked.description or "", checked.body or ""
    author_id = await ensure_author(session, principal)
    now = utcnow()
    tags = list(checked.tags or [])
    article = Article(
        id=new_id(),
        title=title,
        description=description,
        body=body,
        body_html=render_markdown(body),
        tag_list=tags,
        author_id=author_id,
        favorites_count=0,
        published_at=None if checked.published is False else now,
        created_at=now,
        updated_at=now,
    )
    article.slug = await _insert_with_free_slug(session, article, title)
    await repository.replace_tags(session, article.id, tags)
    await search.put(session, article.id, title, description, body)
    _announce(session, ARTICLE_CREATED, article)
    return await get_article(session, slug=article.slug, principal=principal)


async def _insert_with_free_slug(session: AsyncSession, article: Article, title: str) -> str:
    """Insert (or re-slug) ``article`` under the first free slug, even against concurrent
    writers of the same title: the unique index decides, inside a savepoint, so that
    losing a race costs one retry and not the transaction."""
    for slug in slugs.candidates(title, SLUG_ATTEMPTS):
        if await repository.slug_taken(session, slug):
            continue
        article.slug = slug
        try:
            async with session.begin_nested():
                session.add(article)
                await session.flush()
        except IntegrityError:
            continue
        return slug
    raise InvalidInput("No free slug for this title.", field_errors={"title": ["is taken"]})


async def _owned_article(
    session: AsyncSession, slug: str, principal: Principal, *, permission: str | None
) -> Article:
    user_id = writer_id(principal)
    article = await repository.article_by_slug(session, slug)
    if article is None or (article.published_at is None and article.author_id != user_id):
        raise ArticleNotFound(f"No article at '{slug}'.")
    if article.author_id == user_id:
        return article
    if permission is not None and principal.can(permission):
        return article
    raise NotArticleAuthor("Only the author may change this article.")


async def update_article(
    session: AsyncSession,
    *,
    slug: str,
    principal: Principal,
    fields: ArticleFields,
    search: SearchIndex,
) -> ArticleView:
    """Change an article; a new title gives it a new slug (the old one stops resolving)."""
    checked = _validated(fields, creating=False)
    await ensure_author(session, principal)
    article = await _owned_article(session, slug, principal, permission=None)
    was_draft, old_title = article.published_at is None, article.title
    _apply(article, checked)
    if checked.title is not None and checked.title != old_title:
        article.slug = await _new_slug(session, article, checked.title)
    if checked.tags is not None:
        await repository.replace_tags(session, article.id, list(checked.tags))
    await session.flush()
    await search.put(session, article.id, article.title, article.description, article.body)
    _announce(session, ARTICLE_UPDATED, article)
    if was_draft and article.published_at is not None:
        _announce(session, ARTICLE_PUBLISHED, article)
    return await get_article(session, slug=article.slug, principal=principal)


def _apply(article: Article, checked: ArticleFields) -> None:
    if checked.title is not None:
        article.title = checked.title
    if checked.description is not None:
        article.description = checked.description
    if checked.body is not None:
        article.body = checked.body
        article.body_html = render_markdown(checked.body)
    if checked.tags is not None:
        article.tag_list = list(checked.tags)
    now = utcnow()
    if checked.published is True and article.published_at is None:
        article.published_at = now
    elif checked.published is False:
        article.published_at = None
    article.updated_at = now


async def _new_slug(session: AsyncSession, article: Article, title: str) -> str:
    for slug in slugs.candidates(title, SLUG_ATTEMPTS):
        if slug == article.slug:
            return slug
        if await repository.slug_taken(session, slug):
            continue
        previous = article.slug
        article.slug = slug
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            article.slug = previous
            continue
        return slug
    raise InvalidInput("No free slug for this title.", field_errors={"title": ["is taken"]})


async def delete_article(
    session: AsyncSession, *, slug: str, principal: Principal, search: SearchIndex
) -> None:
    """Delete an article (its tags, favorites and comments go too); moderators may delete any."""
    article = await _owned_article(session, slug, principal, permission=DELETE_ANY_ARTICLE)
    await search.remove(session, [article.id])
    article_id, author_id, old_slug = article.id, article.author_id, article.slug
    session.expunge(article)
    await repository.delete_article(session, article_id)
    publish(
        session,
        ARTICLE_DELETED,
        {"article_id": str(article_id), "slug": old_slug, "author_id": str(author_id)},
    )
    mark_changed(session)


async def favorite(
    session: AsyncSession, *, slug: str, principal: Principal, on: bool
) -> ArticleView:
    """Favorite (``on``) or unfavorite an article; both are idempotent."""
    user_id = await ensure_author(session, principal)
    row = await repository.article_row_by_slug(session, slug)
    if row is None or not _visible(row, user_id):
        raise ArticleNotFound(f"No article at '{slug}'.")
    if on:
        await repository.add_favorite(session, user_id, row.id)
    else:
        await repository.remove_favorite(session, user_id, row.id)
    mark_changed(session)
    return await get_article(session, slug=slug, principal=principal)


def _announce(session: AsyncSession, event_type: str, article: Article) -> None:
    publish(
        session,
        event_type,
        {
            "article_id": str(article.id),
            "slug": article.slug,
            "author_id": str(article.author_id),
            "published": article.published_at is not None,
        },
    )
    mark_changed(session)
