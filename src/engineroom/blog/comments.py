"""Comments on articles."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.blog import repository
from engineroom.blog.authors import ensure_author, viewer_id
from engineroom.blog.errors import ArticleNotFound, CommentNotFound, InvalidInput, NotCommentAuthor
from engineroom.blog.events import COMMENT_CREATED, COMMENT_DELETED
from engineroom.blog.models import Comment
from engineroom.blog.repository import AnyRow
from engineroom.blog.service import NUL_MESSAGE
from engineroom.blog.views import CommentView, ProfileView
from engineroom.core.auth import Principal
from engineroom.core.clock import utcnow
from engineroom.core.events import publish

COMMENT_LENGTH = 10_000
DELETE_ANY_COMMENT = "blog:comment:delete"


def comment_from_row(row: AnyRow, *, following: bool) -> CommentView:
    return CommentView(
        id=row.id,
        article_id=row.article_id,
        body=row.body,
        created_at=row.created_at,
        updated_at=row.updated_at,
        author=ProfileView(
            user_id=row.author_id,
            username=row.username,
            bio=row.bio,
            image=row.image,
            following=following,
        ),
    )


async def _visible_article_id(
    session: AsyncSession, slug: str, viewer: uuid.UUID | None
) -> uuid.UUID:
    row = await repository.article_row_by_slug(session, slug)
    if row is None or (row.published_at is None and row.author_id != viewer):
        raise ArticleNotFound(f"No article at '{slug}'.")
    article_id: uuid.UUID = row.id
    return article_id


async def comments_by_article(
    session: AsyncSession, article_ids: Collection[uuid.UUID], viewer: uuid.UUID | None
) -> dict[uuid.UUID, list[CommentView]]:
    """Comments of several articles, newest first: two statements whatever the count."""
    rows = await repository.comments_of(session, article_ids)
    followed: set[uuid.UUID] = set()
    if viewer is not None and rows:
        followed = await repository.followed_among(session, viewer, {r.author_id for r in rows})
    grouped: dict[uuid.UUID, list[CommentView]] = {article_id: [] for article_id in article_ids}
    for row in rows:
        grouped[row.article_id].append(comment_from_row(row, following=row.author_id in followed))
    return grouped


async def list_comments(
    session: AsyncSession, *, slug: str, principal: Principal | None
) -> list[CommentView]:
    viewer = viewer_id(principal)
    article_id = await _visible_article_id(session, slug, viewer)
    return (await comments_by_article(session, [article_id], viewer))[article_id]


async def add_comment(
    session: AsyncSession, *, slug: str, principal: Principal, body: str | None
) -> CommentView:
    if body is None or not body.strip():
        raise InvalidInput("The comment is empty.", field_errors={"body": ["can't be blank"]})
    if "\x00" in body:
        raise InvalidInput("The comment has NUL characters.", field_errors={"body": [NUL_MESSAGE]})
    if len(body) > COMMENT_LENGTH:
        raise InvalidInput(
            "The comment is too long.",
            field_errors={"body": [f"is too long (maximum is {COMMENT_LENGTH} characters)"]},
        )
    author_id = await ensure_author(session, principal)
    article_id = await _visible_article_id(session, slug, author_id)
    now = utcnow()
    comment = Comment(
        article_id=article_id, author_id=author_id, body=body, created_at=now, updated_at=now
    )
    session.add(comment)
    await session.flush()
    publish(
        session,
        COMMENT_CREATED,
        {"comment_id": comment.id, "article_id": str(article_id), "author_id": str(author_id)},
    )
    row = await repository.comment_row(session, comment.id)
    assert row is not None
    return comment_from_row(row, following=False)


async def delete_comment(
    session: AsyncSession, *, slug: str, comment_id: int, principal: Principal
) -> None:
    """Authors delete their comments; moderators (``blog:comment:delete``) any comment."""
    viewer = viewer_id(principal)
    article_id = await _visible_article_id(session, slug, viewer)
    comment = await repository.comment_by_id(session, comment_id)
    if comment is None or comment.article_id != article_id:
        raise CommentNotFound(f"No comment {comment_id} on '{slug}'.")
    if comment.author_id != viewer and not principal.can(DELETE_ANY_COMMENT):
        raise NotCommentAuthor("Only the author may delete this comment.")
    await session.delete(comment)
    publish(
        session,
        COMMENT_DELETED,
        {"comment_id": comment_id, "article_id": str(article_id), "author_id": str(viewer)},
    )
