"""HTTP caching of reads: ETag on every answer, 304 for a matching If-None-Match, and
the shared read cache for anonymous callers.

Public answers say ``Cache-Control: public, no-cache``: any cache may keep them but must
revalidate first (cheap: a 304), so no HTTP cache serves an article after its deletion.
Answers for a signed-in caller carry ``favorited``/``following`` and stay ``private``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response

from engineroom.blog.readcache import CachedBody
from engineroom.blog.runtime import BlogRuntime
from engineroom.core.auth import Principal
from engineroom.core.responses import PreparedResponse

JSON = "application/json"
PUBLIC = "public, no-cache"
PRIVATE = "private, no-cache"
_CACHE_CONTROL = {True: PUBLIC.encode(), False: PRIVATE.encode()}
_VARY = (b"vary", b"Authorization")


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def conditional(
    request: Request, cached: CachedBody, *, public: bool, media_type: str = JSON
) -> Response:
    # Headers encoded here directly: these answers are the hottest of the blog.
    headers = [
        (b"etag", cached.etag.encode("latin-1")),
        (b"cache-control", _CACHE_CONTROL[public]),
        _VARY,
    ]
    if _matches(request.headers.get("if-none-match"), cached.etag):
        return PreparedResponse(b"", headers, status_code=304)
    headers.append((b"content-length", str(len(cached.body)).encode("latin-1")))
    headers.append((b"content-type", media_type.encode("latin-1")))
    return PreparedResponse(cached.body, headers)


async def json_response(
    request: Request,
    runtime: BlogRuntime,
    principal: Principal | None,
    cache_key: str | None,
    build: Callable[[], Awaitable[bytes]],
    *,
    media_type: str = JSON,
) -> Response:
    """Answer a read: from the shared cache when anonymous and ``cache_key`` is given."""
    if principal is None and cache_key is not None:
        cached = await runtime.reads.get_or_build(cache_key, build)
    else:
        cached = CachedBody.of(await build())
    return conditional(request, cached, public=principal is None, media_type=media_type)
