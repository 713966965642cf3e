"""GraphQL for the blog: the same service functions as the REST routes, with DataLoaders.

A page of articles costs a constant number of statements whatever its size: the page
itself (authors joined in), then one batch each for ``favorited``, ``author.following``
and ``comments`` when the query asks for them. Resolvers of one operation share its
session, so their database work goes through the context's ``exclusive``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from engineroom.blog import comments, profiles, service
from engineroom.blog.authors import viewer_id, writer_id
from engineroom.blog.config import blog_settings
from engineroom.blog.errors import ArticleNotFound, InvalidInput, ProfileNotFound
from engineroom.blog.runtime import BlogRuntime, runtime_for
from engineroom.blog.views import ArticleQuery, ArticleView, CommentView, ProfileView
from engineroom.core.auth import Principal
from engineroom.core.clock import isoformat_z
from engineroom.core.errors import RateLimited
from engineroom.core.graphql import GraphQLContext

MAX_PAGE = 100
T = TypeVar("T")
Ctx = Info[GraphQLContext, None]


async def _exclusive(info: Ctx, work: Callable[[], Awaitable[T]]) -> T:
    return await info.context.exclusive(work)


def _runtime(info: Ctx) -> BlogRuntime:
    return runtime_for(info.context.platform)


async def _viewer(info: Ctx) -> uuid.UUID | None:
    return viewer_id(await info.context.principal())


# ---- loaders --------------------------------------------------------------------------------


def _favorited(info: Ctx, viewer: uuid.UUID | None) -> DataLoader[uuid.UUID, bool]:
    async def load(ids: Sequence[uuid.UUID]) -> list[bool]:
        return await _exclusive(
            info, lambda: service.favorited_flags(info.context.session, viewer, ids)
        )

    return info.context.loaders.get("blog.favorited", lambda: DataLoader(load_fn=load))


def _following(info: Ctx, viewer: uuid.UUID | None) -> DataLoader[uuid.UUID, bool]:
    async def load(ids: Sequence[uuid.UUID]) -> list[bool]:
        return await _exclusive(
            info, lambda: profiles.following_flags(info.context.session, viewer, ids)
        )

    return info.context.loaders.get("blog.following", lambda: DataLoader(load_fn=load))


def _comments(info: Ctx, viewer: uuid.UUID | None) -> DataLoader[uuid.UUID, list[CommentView]]:
    async def load(ids: Sequence[uuid.UUID]) -> list[list[CommentView]]:
        grouped = await _exclusive(
            info, lambda: comments.comments_by_article(info.context.session, ids, viewer)
        )
        return [grouped[article_id] for article_id in ids]

    return info.context.loaders.get("blog.comments", lambda: DataLoader(load_fn=load))


# ---- types ----------------------------------------------------------------------------------


@strawberry.type(name="AuthorProfile", description="A blog author as others see them.")
class ProfileType:
    view: strawberry.Private[ProfileView]
    known_following: strawberry.Private[bool | None] = None

    @strawberry.field
    def username(self) -> str:
        return self.view.username

    @strawberry.field
    def bio(self) -> str | None:
        return self.view.bio

    @strawberry.field
    def image(self) -> str | None:
        return self.view.image

    @strawberry.field  # Whether the caller follows this author.
    async def following(self, info: Ctx) -> bool:
        if self.known_following is not None:
            return self.known_following
        return await _following(info, await _viewer(info)).load(self.view.user_id)


@strawberry.type(name="Comment")
class CommentType:
    view: strawberry.Private[CommentView]

    @strawberry.field
    def id(self) -> int:
        return self.view.id

    @strawberry.field
    def body(self) -> str:
        return self.view.body

    @strawberry.field
    def created_at(self) -> str:
        return isoformat_z(self.view.created_at)

    @strawberry.field
    def updated_at(self) -> str:
        return isoformat_z(self.view.updated_at)

    @strawberry.field
    def author(self) -> ProfileType:
        # Comments were loaded with their authors' "following" for the caller.
        return ProfileType(view=self.view.author, known_following=self.view.author.following)


@strawberry.type(name="Article")
class ArticleType:
    view: strawberry.Private[ArticleView]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.view.id))

    @strawberry.field
    def slug(self) -> str:
        return self.view.slug

    @strawberry.field
    def title(self) -> str:
        return self.view.title

    @strawberry.field
    def description(self) -> str:
        return self.view.description

    @strawberry.field  # Markdown, as written.
    def body(self) -> str:
        return self.view.body or ""

    @strawberry.field  # The body rendered to sanitized HTML.
    def body_html(self) -> str:
        return self.view.body_html or ""

    @strawberry.field
    def tag_list(self) -> list[str]:
        return list(self.view.tag_list)

    @strawberry.field
    def created_at(self) -> str:
        return isoformat_z(self.view.created_at)

    @strawberry.field
    def updated_at(self) -> str:
        return isoformat_z(self.view.updated_at)

    @strawberry.field  # False while the article is a draft.
    def published(self) -> bool:
        return not self.view.is_draft

    @strawberry.field
    def favorites_count(self) -> int:
        return self.view.favorites_count

    @strawberry.field
    async def favorited(self, info: Ctx) -> bool:
        return await _favorited(info, await _viewer(info)).load(self.view.id)

    @strawberry.field
    def author(self) -> ProfileType:
        return ProfileType(view=self.view.author)

    @strawberry.field  # Newest first.
    async def comments(self, info: Ctx) -> list[CommentType]:
        found = await _comments(info, await _viewer(info)).load(self.view.id)
        return [CommentType(view=comment) for comment in found]


@strawberry.type(name="ArticleEdge")
class ArticleEdge:
    cursor: str
    node: ArticleType


@strawberry.type(name="ArticlePageInfo")
class ArticlePageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(name="ArticleConnection")
class ArticleConnection:
    edges: list[ArticleEdge]
    page_info: ArticlePageInfo
    total_count: int


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _offset_after(cursor: str | None) -> int:
    if cursor is None:
        return 0
    kind, offset = "", -1
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        offset = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    if kind != "offset" or offset < 0:
        raise InvalidInput("Unknown cursor.", field_errors={"after": ["is not a cursor"]})
    return offset + 1


async def _connection(
    info: Ctx, query: ArticleQuery, first: int, after: str | None
) -> ArticleConnection:
    if not 1 <= first <= MAX_PAGE:
        raise InvalidInput("Bad page size.", field_errors={"first": [f"must be 1 to {MAX_PAGE}"]})
    offset = _offset_after(after)
    runtime = _runtime(info)
    # No principal here: favorited/following come from the loaders, only if asked for.
    page = await _exclusive(
        info,
        lambda: service.list_articles(
            info.context.session,
            query=query,
            principal=None,
            search=runtime.search,
            limit=first,
            offset=offset,
            with_body=True,
        ),
    )
    edges = [
        ArticleEdge(cursor=_cursor(offset + index), node=ArticleType(view=article))
        for index, article in enumerate(page.articles)
    ]
    return ArticleConnection(
        edges=edges,
        page_info=ArticlePageInfo(
            has_next_page=offset + len(edges) < page.total,
            has_previous_page=offset > 0,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=page.total,
    )


# ---- queries --------------------------------------------------------------------------------


@strawberry.type
class BlogQuery:
    @strawberry.field  # Published articles, newest first (best match with search).
    async def articles(
        self,
        info: Ctx,
        first: int = 20,
        after: str | None = None,
        tag: str | None = None,
        author: str | None = None,
        favorited_by: str | None = None,
        search: str | None = None,
    ) -> ArticleConnection:
        query = ArticleQuery(tag=tag, author=author, favorited_by=favorited_by, search=search)
        return await _connection(info, query, first, after)

    @strawberry.field  # Articles by the authors the caller follows.
    async def feed(self, info: Ctx, first: int = 20, after: str | None = None) -> ArticleConnection:
        principal = await info.context.require_principal()
        return await _connection(info, ArticleQuery(feed_of=writer_id(principal)), first, after)

    @strawberry.field  # The article at this slug (drafts: their author only).
    async def article(self, info: Ctx, slug: str) -> ArticleType | None:
        principal = await info.context.principal()
        try:
            view = await _exclusive(
                info,
                lambda: service.get_article(info.context.session, slug=slug, principal=principal),
            )
        except ArticleNotFound:
            return None
        return ArticleType(view=view)

    @strawberry.field
    async def profile(self, info: Ctx, username: str) -> ProfileType | None:
        principal = await info.context.principal()
        directory = _runtime(info).directory
        try:
            view = await _exclusive(
                info,
                lambda: profiles.get_profile(
                    info.context.session,
                    username=username,
                    principal=principal,
                    directory=directory,
                ),
            )
        except ProfileNotFound:
            return None
        return ProfileType(view=view, known_following=view.following)

    @strawberry.field  # Comments of an article, newest first.
    async def article_comments(self, info: Ctx, slug: str) -> list[CommentType]:
        principal = await info.context.principal()
        found = await _exclusive(
            info,
            lambda: comments.list_comments(info.context.session, slug=slug, principal=principal),
        )
        return [CommentType(view=comment) for comment in found]

    @strawberry.field  # Tags in use, the most used first.
    async def popular_tags(self, info: Ctx) -> list[str]:
        return await _exclusive(info, lambda: service.popular_tags(info.context.session))


# ---- mutations ------------------------------------------------------------------------------


@strawberry.input
class ArticleInput:
    title: str | None = None
    description: str | None = None
    body: str | None = None
    tag_list: list[str] | None = None
    published: bool | None = None

    def fields(self) -> service.ArticleFields:
        return service.ArticleFields(
            title=self.title,
            description=self.description,
            body=self.body,
            tags=self.tag_list,
            published=self.published,
        )


async def _writer(info: Ctx) -> Principal:
    """The caller, counted against the same write limit as the REST routes."""
    principal = await info.context.require_principal()
    limit = blog_settings().write_rate_limit
    result = await info.context.platform.rate_limiter.hit(
        limit, "blog.write", f"user:{principal.subject}"
    )
    if not result.allowed:
        raise RateLimited("Too many writes; retry later.", headers=result.headers())
    return principal


@strawberry.type
class BlogMutation:
    @strawberry.mutation
    async def create_article(self, info: Ctx, input: ArticleInput) -> ArticleType:
        principal = await _writer(info)
        view = await _exclusive(
            info,
            lambda: service.create_article(
                info.context.session,
                principal=principal,
                fields=input.fields(),
                search=_runtime(info).search,
            ),
        )
        return ArticleType(view=view)

    @strawberry.mutation
    async def update_article(self, info: Ctx, slug: str, input: ArticleInput) -> ArticleType:
        principal = await _writer(info)
        view = await _exclusive(
            info,
            lambda: service.update_article(
                info.context.session,
                slug=slug,
                principal=principal,
                fields=input.fields(),
                search=_runtime(info).search,
            ),
        )
        return ArticleType(view=view)

    @strawberry.mutation
    async def delete_article(self, info: Ctx, slug: str) -> bool:
        principal = await _writer(info)
        await _exclusive(
            info,
            lambda: service.delete_article(
                info.context.session, slug=slug, principal=principal, search=_runtime(info).search
            ),
        )
        return True

    @strawberry.mutation
    async def favorite_article(self, info: Ctx, slug: str, on: bool = True) -> ArticleType:
        principal = await _writer(info)
        view = await _exclusive(
            info,
            lambda: service.favorite(info.context.session, slug=slug, principal=principal, on=on),
        )
        return ArticleType(view=view)

    @strawberry.mutation
    async def add_comment(self, info: Ctx, slug: str, body: str) -> CommentType:
        principal = await _writer(info)
        view = await _exclusive(
            info,
            lambda: comments.add_comment(
                info.context.session, slug=slug, principal=principal, body=body
            ),
        )
        return CommentType(view=view)

    @strawberry.mutation
    async def delete_comment(self, info: Ctx, slug: str, id: int) -> bool:
        principal = await _writer(info)
        await _exclusive(
            info,
            lambda: comments.delete_comment(
                info.context.session, slug=slug, comment_id=id, principal=principal
            ),
        )
        return True

    @strawberry.mutation
    async def follow_author(self, info: Ctx, username: str, on: bool = True) -> ProfileType:
        principal = await _writer(info)
        directory = _runtime(info).directory
        view = await _exclusive(
            info,
            lambda: profiles.follow(
                info.context.session,
                username=username,
                principal=principal,
                directory=directory,
                on=on,
            ),
        )
        return ProfileType(view=view, known_following=view.following)
