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

Under load, the reads of the shared counter are batched: a request that arrives while a
read is in flight waits for the next read (started as soon as that one ends), which
answers everyone who arrived in between. It never takes the answer of a read sent before
it arrived, which could predate a write already acknowledged to its client.

Each process also keeps its own copies of the entries it served, for the generation it
read them in (at most ``LOCAL_COPIES``, each only as long as the entry's TTL from when it
was built): a hit then costs a dictionary lookup instead of a cache call, a key hash and an
unpickle. The generation is still read on every call, so a copy is never served after an
invalidation this process or (through the shared counter) another one made.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

import structlog
from cashews import Cache
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.cache import get_or_load

CHANGED_KEY = "engineroom.blog.changed"
GENERATION_KEY = "blog:generation"
# Part of every entry's key: entries written by a release with another ``CachedBody``
# layout are never read back.
ENTRY_FORMAT = "2"
LOCAL_COPIES = 1024

logger = structlog.get_logger("engineroom.blog.cache")
T = TypeVar("T")


def mark_changed(session: AsyncSession) -> None:
    """Tell the after-commit hook that this transaction changed what public reads show."""
    session.info[CHANGED_KEY] = True


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


@dataclass(frozen=True, slots=True)
class CachedBody:
    body: bytes
    etag: str
    built_at: float
    """Wall-clock time it was built (``time.time()``): copies live until ``built_at + TTL``."""

    @classmethod
    def of(cls, body: bytes) -> CachedBody:
        return cls(body=body, etag=etag_of(body), built_at=time.time())


class FreshRead(Generic[T]):
    """Calls ``read`` for all the callers waiting at once, never before a caller arrived."""

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._current: asyncio.Task[T] | None = None
        self._next: asyncio.Future[T] | None = None

    async def __call__(self) -> T:
        if self._current is None:
            self._current = self._start()
            return await asyncio.shield(self._current)
        # The read in flight was sent before this caller arrived: wait for the next one.
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._next)

    def _start(self) -> asyncio.Task[T]:
        async def read() -> T:
            return await self._read()

        task = asyncio.get_running_loop().create_task(read())
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[T]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here; the callers awaiting it get it too
        waiting, self._next = self._next, None
        if waiting is None:
            self._current = None
            return
        self._current = self._start()
        self._current.add_done_callback(partial(_pass_on, waiting))


def _pass_on(waiting: asyncio.Future[T], task: asyncio.Task[T]) -> None:
    if waiting.done():
        return
    if task.cancelled():
        waiting.cancel()
    elif (error := task.exception()) is not None:
        waiting.set_exception(error)
    else:
        waiting.set_result(task.result())


class ReadCache:
    def __init__(self, cache: Cache, ttl: float, *, shared: bool) -> None:
        """``shared``: the cache is seen by other processes (Redis), so is the counter."""
        self._cache = cache
        self._ttl = ttl
        self._shared = shared
        self._local = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._copies: dict[str, CachedBody] = {}
        self._copies_generation = ""
        self._read_shared = FreshRead(self._shared_generation)

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
        shared = await self._read_shared()
        return f"{shared}.{self._local}"

    async def _shared_generation(self) -> object:
        shared = await self._cache.get(GENERATION_KEY, default=None)
        if shared is None:
            # A lost counter (evicted, or a fresh Redis) must not fall back to a number
            # that keys written earlier still carry: start from the clock instead.
            shared = time.time_ns() // 1_000_000
            await self._cache.set(GENERATION_KEY, shared)
        return shared

    async def get_or_build(self, name: str, build: Callable[[], Awaitable[bytes]]) -> CachedBody:
        """The cached body for ``name`` in the current generation, built on a miss."""
        generation = await self._generation()
        if generation != self._copies_generation:
            self._copies.clear()
            self._copies_generation = generation
        copy = self._copies.get(name)
        if copy is not None and time.time() < copy.built_at + self._ttl:
            return copy
        # Names carry what clients sent (tags, slugs): hashed, keys stay short and inert.
        digest = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
        key = f"blog:{ENTRY_FORMAT}:{generation}:{digest}"

        async def load() -> CachedBody:
            return CachedBody.of(await build())

        found = await get_or_load(self._cache, key, ttl=self._ttl, loader=load)
        # Kept only if no newer generation was seen while this one loaded: rows read
        # before an invalidation must not become the copy the next reader gets.
        if generation == self._copies_generation:
            if len(self._copies) >= LOCAL_COPIES:
                del self._copies[next(iter(self._copies))]  # the oldest copy
            self._copies[name] = found
        return found
