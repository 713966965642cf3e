"""Request dependencies of the blog routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.blog.config import blog_settings
from engineroom.blog.runtime import BlogRuntime, runtime_for
from engineroom.core.auth import CurrentPrincipal
from engineroom.core.deps import PlatformDep
from engineroom.core.ratelimit import RateLimit


async def get_runtime(platform: PlatformDep) -> BlogRuntime:
    # async: FastAPI runs plain-def dependencies in a thread pool, a hop per request.
    return runtime_for(platform)


RuntimeDep = Annotated[BlogRuntime, Depends(get_runtime)]


async def get_write_session(
    platform: PlatformDep, runtime: RuntimeDep
) -> AsyncIterator[AsyncSession]:
    """The request's one transaction (as ``SessionDep``), and then, still before the
    response is sent, the read-cache invalidation reaching every process."""
    async with platform.database.unit_of_work() as session:
        yield session
    await runtime.reads.settle()


WriteSession = Annotated[AsyncSession, Depends(get_write_session, scope="function")]


@lru_cache(maxsize=8)
def _limiter(limit: str) -> Callable[[Request, Response], Awaitable[None]]:
    return RateLimit(limit, scope="blog.write")


async def limit_writes(request: Request, response: Response, principal: CurrentPrincipal) -> None:
    """Rate-limit writes per user (the principal is resolved first, so the limit keys on
    the user rather than the address)."""
    del principal  # resolved for its side effect: the request remembers its principal
    await _limiter(blog_settings().write_rate_limit)(request, response)


WriteLimit = Depends(limit_writes)
