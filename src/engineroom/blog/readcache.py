"""Cached public reads, invalidated by every committed change to what they show.

Keys carry a generation: a write bumps it once its transaction has committed, so the
next read misses and loads fresh rows. A reader that loaded rows just before the commit
stores them under the old generation, where nobody looks any more: once a delete has
returned, no reader is served the deleted article, from this process or another.

The generation has two parts. The local counter is bumped synchronously by the database's
after-commit hook, so this process sees every change at once; the shared counter lives
in the platform cache (memory, or Redis when configured) so that other processes see it
too. Write routes wait for the shared bump before they answer (``settle``). With the
in-memory cache only this process can see the entries, so the local counter suffices.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from cashews import Cache
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.cache import get_or_load

CHANGED_KEY = "engineroom.blog.changed"
GENERATION_KEY = "blog:generation"

logger = structlog.get_logger("engineroom.blog.cache")


def mark_changed(session: AsyncSession) -> None:
    """Tell the after-commit hook that this transaction changed what public reads show."""
    session.info[CHANGED_KEY] = True


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


@dataclass(frozen=True, slots=True)
class CachedBody:
    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> CachedBody:
        return cls(body=body, etag=etag_of(body))


class ReadCache:
    def __init__(self, cache: Cache, ttl: float, *, shared: bool) -> None:
        """``shared``: the cache is seen by other processes (Redis), so is the counter."""
        self._cache = cache
        self._ttl = ttl
        self._shared = shared
        self._local = 0
        self._pending: set[asyncio.Task[None]] = set()

    def after_commit(self, session: AsyncSession) -> None:
        """Database after-commit hook (synchronous): invalidate if the commit changed reads."""
        if session.info.pop(CHANGED_KEY, False):
            self.invalidate()

    def invalidate(self) -> None:
        self._local += 1
        if not self._shared:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # committed outside an event loop: nothing shared to bump
            return
        task = loop.create_task(self._bump_shared())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _bump_shared(self) -> None:
        try:
            await self._cache.incr(GENERATION_KEY)
        except Exception:  # the cache is an optimisation; an outage is logged, not raised
            logger.exception("blog_cache_invalidation_failed")

    async def settle(self) -> None:
        """Wait until every invalidation started so far reached the shared cache."""
        if self._pending:
            await asyncio.gather(*tuple(self._pending), return_exceptions=True)

    async def _generation(self) -> str:
        if not self._shared:
            return str(self._local)
        shared = await self._cache.get(GENERATION_KEY, default=None)
        if shared is None:
            # A lost counter (evicted, or a fresh Redis) must not fall back to a number
            # that keys written earlier still carry: start from the clock instead.
            shared = time.time_ns() // 1_000_000
            await self._cache.set(GENERATION_KEY, shared)
        return f"{shared}.{self._local}"

    async def get_or_build(self, name: str, build: Callable[[], Awaitable[bytes]]) -> CachedBody:
        """The cached body for ``name`` in the current generation, built on a miss."""
        # Names carry what clients sent (tags, slugs): hashed, keys stay short and inert.
        digest = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
        key = f"blog:{await self._generation()}:{digest}"

        async def load() -> CachedBody:
            return CachedBody.of(await build())

        return await get_or_load(self._cache, key, ttl=self._ttl, loader=load)
