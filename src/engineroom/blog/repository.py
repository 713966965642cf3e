"""All of the blog's SQL, small and concrete.

Reads of article lists are built so that a page costs a constant number of statements:
the page, its total (``COUNT(*) OVER ()``, so usually the same statement) and its
authors come in one query; the caller's favorites and follows in one query each.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ColumnElement,
    CursorResult,
    Row,
    Select,
    delete,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from engineroom.blog.models import Article, ArticleTag, Author, Comment, Favorite, Follow
from engineroom.blog.search import SearchIndex
from engineroom.blog.views import ArticleQuery

AnyRow = Row[*tuple[Any, ...]]
AnySelect = Select[*tuple[Any, ...]]

_LIST_COLUMNS = (
    Article.id,
    Article.slug,
    Article.title,
    Article.description,
    Article.tag_list,
    Article.favorites_count,
    Article.published_at,
    Article.created_at,
    Article.updated_at,
    Article.author_id,
    Author.username,
    Author.bio,
    Author.image,
)


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def insert_ignore(session: AsyncSession, model: type[Any], values: dict[str, Any]) -> int:
    """Insert a row unless it would break a unique key; return how many rows went in."""
    dialect = dialect_of(session)
    statement: Any
    if dialect == "sqlite":
        statement = sqlite.insert(model).values(**values).on_conflict_do_nothing()
    elif dialect == "postgresql":
        statement = postgresql.insert(model).values(**values).on_conflict_do_nothing()
    else:
        statement = mysql.insert(model).values(**values).prefix_with("IGNORE")
    result = cast(CursorResult[Any], await session.execute(statement))
    return result.rowcount


async def execute_count(session: AsyncSession, statement: Any) -> int:
    """Run an UPDATE or DELETE and return how many rows it touched."""
    result = cast(CursorResult[Any], await session.execute(statement))
    return result.rowcount


# ---- authors ---------------------------------------------------------------------------


async def author_exists(session: AsyncSession, user_id: uuid.UUID) -> bool:
    found = await session.scalar(select(Author.user_id).where(Author.user_id == user_id))
    return found is not None


async def author_by_username(session: AsyncSession, username: str) -> Author | None:
    return await session.scalar(select(Author).where(Author.username_key == username.lower()))


async def authors_by_ids(
    session: AsyncSession, user_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Author]:
    if not user_ids:
        return {}
    rows = await session.scalars(select(Author).where(Author.user_id.in_(list(user_ids))))
    return {author.user_id: author for author in rows}


async def release_username(session: AsyncSession, username_key: str, owner: uuid.UUID) -> None:
    """Take ``username_key`` away from rows of other users (their rename is on its way)."""
    stale = await session.scalars(
        select(Author.user_id).where(Author.username_key == username_key, Author.user_id != owner)
    )
    for user_id in stale:
        await session.execute(
            update(Author).where(Author.user_id == user_id).values(username_key=f"~{user_id.hex}")
        )


async def save_author(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    username: str,
    bio: str | None,
    image: str | None,
    synced_at: datetime,
    insert_only: bool = False,
) -> None:
    """Insert or update an author, unless the row already reflects a newer change.

    ``insert_only``: leave an existing row alone (a seed from a token never improves on
    a row someone else just wrote; skipping the update also spares MariaDB a deadlock
    between a user's concurrent first writes).
    """
    key = username.lower()
    await release_username(session, key, user_id)
    values = {"username": username, "username_key": key, "bio": bio, "image": image}
    inserted = await insert_ignore(
        session, Author, {"user_id": user_id, "synced_at": synced_at, **values}
    )
    if inserted or insert_only:
        return
    await session.execute(
        update(Author)
        .where(Author.user_id == user_id, Author.synced_at <= synced_at)
        .values(synced_at=synced_at, **values)
    )


async def delete_author(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(delete(Author).where(Author.user_id == user_id))


# ---- article lists -----------------------------------------------------------------------


def _viewer_columns(viewer: uuid.UUID | None) -> tuple[Any, Any]:
    """``favorited`` and ``following`` for the caller, computed in the same statement."""
    if viewer is None:
        return literal(False, Boolean()).label("favorited"), literal(False, Boolean()).label(
            "following"
        )
    favorited = exists().where(Favorite.user_id == viewer, Favorite.article_id == Article.id)
    following = exists().where(
        Follow.follower_id == viewer, Follow.followee_id == Article.author_id
    )
    return favorited.label("favorited"), following.label("following")


def _filtered(
    query: ArticleQuery, search: SearchIndex, viewer: uuid.UUID | None
) -> tuple[AnySelect, list[Any]] | None:
    """The list statement (without paging) and its ordering; ``None`` matches nothing."""
    statement = select(
        *_LIST_COLUMNS, *_viewer_columns(viewer), func.count().over().label("total")
    ).join(Author, Author.user_id == Article.author_id)
    if query.drafts_of is not None:
        statement = statement.where(
            Article.author_id == query.drafts_of, Article.published_at.is_(None)
        )
        order: list[Any] = [Article.created_at.desc(), Article.id.desc()]
    else:
        statement = statement.where(Article.published_at.is_not(None))
        order = [Article.published_at.desc(), Article.id.desc()]
    conditions = _conditions(query)
    if conditions is None:
        return None
    statement = statement.where(*conditions)
    if query.search is not None:
        hits = search.matches(query.search)
        if hits is None:
            return None
        statement = statement.join(hits, hits.c.article_id == Article.id)
        order.insert(0, hits.c.score.desc())
    return statement, order


def _conditions(query: ArticleQuery) -> list[ColumnElement[bool]] | None:
    conditions: list[ColumnElement[bool]] = []
    if query.tag is not None:
        tagged = select(ArticleTag.article_id).where(ArticleTag.tag == query.tag)
        conditions.append(Article.id.in_(tagged))
    if query.author is not None:
        conditions.append(Author.username_key == query.author.lower())
    if query.favorited_by is not None:
        fan = aliased(Author)
        favorites = (
            select(Favorite.article_id)
            .join(fan, fan.user_id == Favorite.user_id)
            .where(fan.username_key == query.favorited_by.lower())
        )
        conditions.append(Article.id.in_(favorites))
    if query.feed_of is not None:
        followed = select(Follow.followee_id).where(Follow.follower_id == query.feed_of)
        conditions.append(Article.author_id.in_(followed))
    return conditions


async def list_articles(
    session: AsyncSession,
    query: ArticleQuery,
    search: SearchIndex,
    *,
    limit: int,
    offset: int,
    viewer: uuid.UUID | None = None,
    with_body: bool = False,
) -> tuple[Sequence[AnyRow], int]:
    """One page of articles with their authors (bodies only if asked) and, for ``viewer``,
    ``favorited``/``following``; and the total. One statement (two past the last page)."""
    built = _filtered(query, search, viewer)
    if built is None:
        return [], 0
    statement, order = built
    if with_body:
        statement = statement.add_columns(Article.body, Article.body_html)
    rows = (await session.execute(statement.order_by(*order).limit(limit).offset(offset))).all()
    if rows:
        return rows, int(rows[0].total)
    if offset == 0:
        return [], 0
    # Past the last page the window function has no row to ride on: count on its own.
    counted = select(func.count()).select_from(statement.with_only_columns(Article.id).subquery())
    return [], int(await session.scalar(counted) or 0)


async def article_row_by_slug(
    session: AsyncSession, slug: str, viewer: uuid.UUID | None = None
) -> AnyRow | None:
    statement = (
        select(*_LIST_COLUMNS, *_viewer_columns(viewer), Article.body, Article.body_html)
        .join(Author, Author.user_id == Article.author_id)
        .where(Article.slug == slug)
    )
    return (await session.execute(statement)).first()


async def article_rows_by_ids(
    session: AsyncSession, article_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, AnyRow]:
    if not article_ids:
        return {}
    statement = (
        select(*_LIST_COLUMNS, Article.body, Article.body_html)
        .join(Author, Author.user_id == Article.author_id)
        .where(Article.id.in_(list(article_ids)))
    )
    return {row.id: row for row in (await session.execute(statement)).all()}


async def favorited_among(
    session: AsyncSession, user_id: uuid.UUID, article_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    if not article_ids:
        return set()
    rows = await session.scalars(
        select(Favorite.article_id).where(
            Favorite.user_id == user_id, Favorite.article_id.in_(list(article_ids))
        )
    )
    return set(rows)


async def followed_among(
    session: AsyncSession, user_id: uuid.UUID, author_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    if not author_ids:
        return set()
    rows = await session.scalars(
        select(Follow.followee_id).where(
            Follow.follower_id == user_id, Follow.followee_id.in_(list(author_ids))
        )
    )
    return set(rows)


async def popular_tags(session: AsyncSession, limit: int) -> list[str]:
    uses = func.count().label("uses")
    statement = (
        select(ArticleTag.tag, uses)
        .join(Article, Article.id == ArticleTag.article_id)
        .where(Article.published_at.is_not(None))
        .group_by(ArticleTag.tag)
        .order_by(uses.desc(), ArticleTag.tag)
        .limit(limit)
    )
    return [row.tag for row in (await session.execute(statement)).all()]


# ---- article writes ----------------------------------------------------------------------


async def article_by_slug(session: AsyncSession, slug: str) -> Article | None:
    return await session.scalar(select(Article).where(Article.slug == slug))


async def slug_taken(session: AsyncSession, slug: str) -> bool:
    return await session.scalar(select(Article.id).where(Article.slug == slug)) is not None


async def replace_tags(session: AsyncSession, article_id: uuid.UUID, tags: Sequence[str]) -> None:
    await session.execute(delete(ArticleTag).where(ArticleTag.article_id == article_id))
    if tags:
        session.add_all(ArticleTag(article_id=article_id, tag=tag) for tag in tags)


async def delete_article(session: AsyncSession, article_id: uuid.UUID) -> None:
    # Tags, favorites and comments go with it (ON DELETE CASCADE).
    await session.execute(delete(Article).where(Article.id == article_id))


async def article_ids_by_author(session: AsyncSession, author_id: uuid.UUID) -> list[uuid.UUID]:
    return list(await session.scalars(select(Article.id).where(Article.author_id == author_id)))


async def add_favorite(session: AsyncSession, user_id: uuid.UUID, article_id: uuid.UUID) -> None:
    if await insert_ignore(session, Favorite, {"user_id": user_id, "article_id": article_id}):
        await session.execute(
            update(Article)
            .where(Article.id == article_id)
            .values(favorites_count=Article.favorites_count + 1)
        )


async def remove_favorite(session: AsyncSession, user_id: uuid.UUID, article_id: uuid.UUID) -> None:
    removed = await execute_count(
        session,
        delete(Favorite).where(Favorite.user_id == user_id, Favorite.article_id == article_id),
    )
    if removed:
        await session.execute(
            update(Article)
            .where(Article.id == article_id)
            .values(favorites_count=Article.favorites_count - removed)
        )


async def forget_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Remove a deleted user's favorites (keeping counts true), follows and comments."""
    favorites = list(
        await session.scalars(select(Favorite.article_id).where(Favorite.user_id == user_id))
    )
    for article_id in favorites:
        await remove_favorite(session, user_id, article_id)
    await session.execute(
        delete(Follow).where((Follow.follower_id == user_id) | (Follow.followee_id == user_id))
    )
    await session.execute(delete(Comment).where(Comment.author_id == user_id))


# ---- follows -----------------------------------------------------------------------------


async def add_follow(session: AsyncSession, follower: uuid.UUID, followee: uuid.UUID) -> None:
    await insert_ignore(session, Follow, {"follower_id": follower, "followee_id": followee})


async def remove_follow(session: AsyncSession, follower: uuid.UUID, followee: uuid.UUID) -> None:
    await session.execute(
        delete(Follow).where(Follow.follower_id == follower, Follow.followee_id == followee)
    )


# ---- comments ----------------------------------------------------------------------------


def _comment_statement() -> AnySelect:
    return select(
        Comment.id,
        Comment.article_id,
        Comment.body,
        Comment.created_at,
        Comment.updated_at,
        Comment.author_id,
        Author.username,
        Author.bio,
        Author.image,
    ).join(Author, Author.user_id == Comment.author_id)


async def comments_of(
    session: AsyncSession, article_ids: Collection[uuid.UUID]
) -> Sequence[AnyRow]:
    """Comments of these articles with their authors, newest first."""
    if not article_ids:
        return []
    statement = (
        _comment_statement()
        .where(Comment.article_id.in_(list(article_ids)))
        .order_by(Comment.created_at.desc(), Comment.id.desc())
    )
    return (await session.execute(statement)).all()


async def comment_row(session: AsyncSession, comment_id: int) -> AnyRow | None:
    statement = _comment_statement().where(Comment.id == comment_id)
    return (await session.execute(statement)).first()


async def comment_by_id(session: AsyncSession, comment_id: int) -> Comment | None:
    return await session.get(Comment, comment_id)
