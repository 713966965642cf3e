"""The RealWorld (Conduit) routes under ``/api``: parse, authorise, call one service
function, shape the response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.blog import comments, profiles, service
from engineroom.blog.authors import writer_id
from engineroom.blog.deps import RuntimeDep, WriteLimit, WriteSession
from engineroom.blog.errors import (
    ArticleNotFound,
    CannotFollowSelf,
    CommentNotFound,
    InvalidInput,
    NotArticleAuthor,
    NotCommentAuthor,
    ProfileNotFound,
)
from engineroom.blog.http import json_response
from engineroom.blog.params import LIST_PARAMETERS, MAX_PAGE_SIZE, page_of, platform_of, text_of
from engineroom.blog.runtime import BlogRuntime, runtime_for
from engineroom.blog.schemas import (
    ArticleChanges,
    MultipleArticles,
    MultipleComments,
    NewArticle,
    NewArticleRequest,
    NewCommentRequest,
    SingleArticle,
    SingleComment,
    SingleProfile,
    Tags,
    UpdateArticleRequest,
    article_json,
    comment_json,
    profile_json,
)
from engineroom.blog.service import ArticleFields
from engineroom.blog.views import ArticlePage, ArticleQuery, ArticleView, ProfileView
from engineroom.core.auth import (
    CurrentPrincipal,
    OptionalPrincipal,
    Principal,
    get_optional_principal,
)
from engineroom.core.deps import PlatformDep
from engineroom.core.errors import Unauthorized, error_responses
from engineroom.core.http import direct
from engineroom.core.platform import Platform

router = APIRouter(prefix="/api", tags=["blog"])

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Articles to skip.")]
T = TypeVar("T")


def _page_json(page: ArticlePage) -> dict[str, Any]:
    return {
        "articles": [article_json(article) for article in page.articles],
        "articlesCount": page.total,
    }


def _single_article(article: ArticleView) -> dict[str, Any]:
    return {"article": article_json(article)}


def _single_profile(profile: ProfileView) -> dict[str, Any]:
    return {"profile": profile_json(profile)}


def _read(
    platform: Platform,
    fetch: Callable[[AsyncSession], Awaitable[T]],
    shape: Callable[[T], dict[str, Any]],
) -> Callable[[], Awaitable[bytes]]:
    """The body of a read: ``fetch`` in a read-only transaction, ``shape`` as JSON. Only
    called when the read cache has no copy."""

    async def build() -> bytes:
        async with platform.database.read_only() as session:
            found = await fetch(session)
        return orjson.dumps(shape(found))

    return build


async def _articles(
    request: Request,
    platform: Platform,
    runtime: BlogRuntime,
    principal: Principal | None,
    query: ArticleQuery,
    *,
    limit: int,
    offset: int,
    cache_key: str | None = None,
) -> Response:
    """A page of articles (through the read cache when ``cache_key`` is given)."""
    body = _read(
        platform,
        lambda session: service.list_articles(
            session,
            query=query,
            principal=principal,
            search=runtime.search,
            limit=limit,
            offset=offset,
        ),
        _page_json,
    )
    return await json_response(request, runtime, principal, cache_key, body)


def _fields(article: NewArticle | ArticleChanges) -> ArticleFields:
    return ArticleFields(
        title=article.title,
        description=article.description,
        body=article.body,
        tags=article.tagList,
        published=article.published,
    )


# Routes match in the order they are declared, and every request to a later route pays
# for checking the earlier ones: the hot public reads come first. They are also direct
# routes (engineroom.core.http.direct): the kernel serves them without FastAPI's routing
# and dependency machinery, so they take the Request and parse what they need themselves.


@router.get(
    "/tags",
    response_model=Tags,
    summary="Tags in use, the most used first",
    responses=error_responses(),
)
@direct
async def tags(request: Request) -> Response:
    platform = platform_of(request)
    body = _read(platform, service.popular_tags, lambda names: {"tags": names})
    # Tags look the same to everyone: always the shared cached copy.
    return await json_response(request, runtime_for(platform), None, "tags", body)


# ---- articles ----------------------------------------------------------------------------


@router.get(
    "/articles",
    response_model=MultipleArticles,
    summary="List articles (newest first; best match first with search)",
    responses=error_responses(Unauthorized, InvalidInput),
    openapi_extra={"parameters": LIST_PARAMETERS},
)
@direct
async def list_articles(request: Request) -> Response:
    platform = platform_of(request)
    runtime = runtime_for(platform)
    principal = await get_optional_principal(request)
    limit, offset = page_of(request)
    query = ArticleQuery(
        tag=text_of(request, "tag"),
        author=text_of(request, "author"),
        favorited_by=text_of(request, "favorited"),
        search=text_of(request, "search"),
    )
    hot = query.search is None and offset < limit * runtime.settings.cached_pages
    key = (
        f"articles:{query.tag}:{query.author}:{query.favorited_by}:{limit}:{offset}"
        if hot
        else None
    )
    return await _articles(
        request, platform, runtime, principal, query, limit=limit, offset=offset, cache_key=key
    )


@router.get(
    "/articles/feed",
    response_model=MultipleArticles,
    summary="Articles by the authors the caller follows",
    responses=error_responses(Unauthorized),
)
async def feed(
    request: Request,
    platform: PlatformDep,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    limit: Limit = 20,
    offset: Offset = 0,
) -> Response:
    query = ArticleQuery(feed_of=writer_id(principal))
    return await _articles(request, platform, runtime, principal, query, limit=limit, offset=offset)


@router.get(
    "/articles/drafts",
    response_model=MultipleArticles,
    summary="Extension: the caller's unpublished articles",
    responses=error_responses(Unauthorized),
)
async def drafts(
    request: Request,
    platform: PlatformDep,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    limit: Limit = 20,
    offset: Offset = 0,
) -> Response:
    query = ArticleQuery(drafts_of=writer_id(principal))
    return await _articles(request, platform, runtime, principal, query, limit=limit, offset=offset)


@router.post(
    "/articles",
    status_code=201,
    response_model=SingleArticle,
    summary="Create an article",
    responses=error_responses(Unauthorized, InvalidInput),
    dependencies=[WriteLimit],
)
async def create_article(
    payload: NewArticleRequest,
    principal: CurrentPrincipal,
    session: WriteSession,
    runtime: RuntimeDep,
) -> Response:
    article = await service.create_article(
        session, principal=principal, fields=_fields(payload.article), search=runtime.search
    )
    return _json(_single_article(article), status=201)


@router.get(
    "/articles/{slug}",
    response_model=SingleArticle,
    summary="Get an article (drafts: their author only)",
    responses=error_responses(Unauthorized, ArticleNotFound),
)
@direct
async def get_article(slug: str, request: Request) -> Response:
    platform = platform_of(request)
    principal = await get_optional_principal(request)
    body = _read(
        platform,
        lambda session: service.get_article(session, slug=slug, principal=principal),
        _single_article,
    )
    return await json_response(request, runtime_for(platform), principal, f"article:{slug}", body)


@router.put(
    "/articles/{slug}",
    response_model=SingleArticle,
    summary="Update an article (a new title gives a new slug)",
    responses=error_responses(Unauthorized, NotArticleAuthor, ArticleNotFound, InvalidInput),
    dependencies=[WriteLimit],
)
async def update_article(
    slug: str,
    payload: UpdateArticleRequest,
    principal: CurrentPrincipal,
    session: WriteSession,
    runtime: RuntimeDep,
) -> Response:
    article = await service.update_article(
        session,
        slug=slug,
        principal=principal,
        fields=_fields(payload.article),
        search=runtime.search,
    )
    return _json(_single_article(article))


@router.delete(
    "/articles/{slug}",
    status_code=204,
    response_class=Response,
    summary="Delete an article (its author, or a moderator)",
    responses=error_responses(Unauthorized, NotArticleAuthor, ArticleNotFound),
    dependencies=[WriteLimit],
)
async def delete_article(
    slug: str, principal: CurrentPrincipal, session: WriteSession, runtime: RuntimeDep
) -> Response:
    await service.delete_article(session, slug=slug, principal=principal, search=runtime.search)
    return Response(status_code=204)


@router.post(
    "/articles/{slug}/favorite",
    response_model=SingleArticle,
    summary="Favorite an article",
    responses=error_responses(Unauthorized, ArticleNotFound),
    dependencies=[WriteLimit],
)
async def favorite(slug: str, principal: CurrentPrincipal, session: WriteSession) -> Response:
    article = await service.favorite(session, slug=slug, principal=principal, on=True)
    return _json(_single_article(article))


@router.delete(
    "/articles/{slug}/favorite",
    response_model=SingleArticle,
    summary="Unfavorite an article",
    responses=error_responses(Unauthorized, ArticleNotFound),
    dependencies=[WriteLimit],
)
async def unfavorite(slug: str, principal: CurrentPrincipal, session: WriteSession) -> Response:
    article = await service.favorite(session, slug=slug, principal=principal, on=False)
    return _json(_single_article(article))


# ---- comments ----------------------------------------------------------------------------


@router.get(
    "/articles/{slug}/comments",
    response_model=MultipleComments,
    summary="Comments of an article, newest first",
    responses=error_responses(Unauthorized, ArticleNotFound),
)
async def list_comments(
    slug: str,
    request: Request,
    platform: PlatformDep,
    runtime: RuntimeDep,
    principal: OptionalPrincipal,
) -> Response:
    body = _read(
        platform,
        lambda session: comments.list_comments(session, slug=slug, principal=principal),
        lambda found: {"comments": [comment_json(comment) for comment in found]},
    )
    return await json_response(request, runtime, principal, None, body)


@router.post(
    "/articles/{slug}/comments",
    response_model=SingleComment,
    summary="Comment on an article",
    responses=error_responses(Unauthorized, ArticleNotFound, InvalidInput),
    dependencies=[WriteLimit],
)
async def add_comment(
    slug: str, payload: NewCommentRequest, principal: CurrentPrincipal, session: WriteSession
) -> Response:
    comment = await comments.add_comment(
        session, slug=slug, principal=principal, body=payload.comment.body
    )
    return _json({"comment": comment_json(comment)})


@router.delete(
    "/articles/{slug}/comments/{comment_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a comment (its author, or a moderator)",
    responses=error_responses(Unauthorized, NotCommentAuthor, ArticleNotFound, CommentNotFound),
    dependencies=[WriteLimit],
)
async def delete_comment(
    slug: str, comment_id: int, principal: CurrentPrincipal, session: WriteSession
) -> Response:
    await comments.delete_comment(session, slug=slug, comment_id=comment_id, principal=principal)
    return Response(status_code=204)


# ---- profiles and tags ---------------------------------------------------------------------


@router.get(
    "/profiles/{username}",
    response_model=SingleProfile,
    summary="Get a profile",
    responses=error_responses(Unauthorized, ProfileNotFound),
)
async def get_profile(
    username: str,
    request: Request,
    platform: PlatformDep,
    runtime: RuntimeDep,
    principal: OptionalPrincipal,
) -> Response:
    body = _read(
        platform,
        lambda session: profiles.get_profile(
            session, username=username, principal=principal, directory=runtime.directory
        ),
        _single_profile,
    )
    return await json_response(request, runtime, principal, None, body)


@router.post(
    "/profiles/{username}/follow",
    response_model=SingleProfile,
    summary="Follow a user",
    responses=error_responses(Unauthorized, ProfileNotFound, CannotFollowSelf),
    dependencies=[WriteLimit],
)
async def follow(
    username: str, principal: CurrentPrincipal, session: WriteSession, runtime: RuntimeDep
) -> Response:
    profile = await profiles.follow(
        session, username=username, principal=principal, directory=runtime.directory, on=True
    )
    return _json(_single_profile(profile))


@router.delete(
    "/profiles/{username}/follow",
    response_model=SingleProfile,
    summary="Unfollow a user",
    responses=error_responses(Unauthorized, ProfileNotFound),
    dependencies=[WriteLimit],
)
async def unfollow(
    username: str, principal: CurrentPrincipal, session: WriteSession, runtime: RuntimeDep
) -> Response:
    profile = await profiles.follow(
        session, username=username, principal=principal, directory=runtime.directory, on=False
    )
    return _json(_single_profile(profile))


def _json(content: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")
