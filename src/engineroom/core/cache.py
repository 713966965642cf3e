"""The platform cache: cashews, in memory by default, Redis when ``REDIS_URL`` is set.

Both backends pickle values, so a value behaves the same in either topology: a cached
object is a copy (mutating it does not change the cache) and anything that works embedded
also works against Redis. In Redis every value is signed with a key derived from the
platform secret, so whoever can write to a shared Redis still cannot make the app
unpickle their bytes. Keys are namespaced (``engineroom:`` by default) because a Redis
server is often shared; ``clear()`` only removes this namespace.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import structlog
from cashews import Cache, Command
from cashews.backends.interface import Backend
from cashews.exceptions import UnSecureDataError

from engineroom.settings import Settings

KEY_PREFIX = "engineroom:"
MEMORY_MAX_ENTRIES = 10_000
"""The in-memory cache evicts the least recently used entry past this many keys."""

_SOCKET_TIMEOUT = 1.0  # a slow cache must not hold requests: a miss is cheaper than a wait
_CONNECT_TIMEOUT = 2.0
_PING_TIMEOUT = 3.0
_SIGNING_CONTEXT = b"engineroom.cache.v1"

T = TypeVar("T")
_MISSING: Any = object()
logger = structlog.get_logger("engineroom.cache")


class NamespacedCache(Cache):
    """A cashews ``Cache`` whose ``clear()`` empties its own key namespace only.

    cashews clears a Redis backend with ``FLUSHDB``, below the middlewares, which would
    wipe every other application's keys on a shared server.
    """

    async def clear(self) -> None:
        await self.delete_match("*")

    async def close(self) -> None:
        with warnings.catch_warnings():
            # cashews 7.6 closes its Redis client through the deprecated ``close()``; the
            # warning is theirs to fix and would fail every shutdown under -W error.
            warnings.filterwarnings(
                "ignore", message="Call to deprecated close", category=DeprecationWarning
            )
            await super().close()


def create_cache(settings: Settings, *, key_prefix: str = KEY_PREFIX) -> Cache:
    """Build a new cache (never the cashews global): memory, or Redis when configured."""
    cache = NamespacedCache(name="engineroom")
    middlewares = (_prefix_keys(key_prefix),)
    if settings.redis_url is None:
        cache.setup(
            f"mem://?size={MEMORY_MAX_ENTRIES}",
            middlewares=middlewares,
            pickle_type="default",
            check_repr=False,
        )
        return cache
    cache.setup(
        settings.redis_url,
        middlewares=middlewares,
        client_side=False,
        # Errors are logged and read as misses: the cache is an optimisation, and
        # readiness (``ping_cache``) reports an unreachable server.
        suppress=True,
        socket_timeout=_SOCKET_TIMEOUT,
        socket_connect_timeout=_CONNECT_TIMEOUT,
        pickle_type="default",
        secret=_signing_key(settings),
        digestmod="sha256",
        check_repr=False,
    )
    return cache


def _signing_key(settings: Settings) -> str:
    # A key of its own, so a leaked cache key reveals nothing about the root secret.
    return hmac.new(settings.secret.encode(), _SIGNING_CONTEXT, hashlib.sha256).hexdigest()


async def ping_cache(cache: Cache) -> None:
    """Raise if the cache backend cannot be reached (used by ``/readyz``)."""
    async with asyncio.timeout(_PING_TIMEOUT):
        await cache.ping()


async def get_or_load(
    cache: Cache,
    key: str,
    *,
    ttl: float | timedelta,
    loader: Callable[[], Awaitable[T]],
) -> T:
    """Return the cached value for ``key``, or await ``loader()`` and cache its result.

    ``None`` is cached like any other value. An entry whose signature does not verify
    (tampered with, or written under another secret) is treated as a miss and replaced.
    """
    try:
        value = await cache.get(key, default=_MISSING)
    except UnSecureDataError:
        logger.warning("cache_entry_rejected", key=key, reason="bad signature")
        value = _MISSING
    if value is not _MISSING:
        return cast(T, value)
    loaded = await loader()
    await cache.set(key, loaded, expire=ttl)
    return loaded


_KEYS_AS_ARGS = frozenset({Command.GET_MANY, Command.DELETE_MANY})
_PATTERN_COMMANDS = frozenset({Command.SCAN, Command.GET_MATCH, Command.DELETE_MATCH})


def _prefix_keys(prefix: str) -> Callable[..., Awaitable[Any]]:
    """A cashews middleware that namespaces every key and pattern under ``prefix``.

    cashews ships ``add_prefix``, but it lowercases instead of prefixing keys passed
    positionally (sets, bits) and returns scanned keys with the prefix still on.
    """

    async def middleware(
        call: Callable[..., Awaitable[Any]],
        cmd: Command,
        backend: Backend,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if cmd in _KEYS_AS_ARGS:
            return await call(*(prefix + key for key in args), **kwargs)
        if cmd is Command.SET_MANY:
            kwargs["pairs"] = {prefix + key: value for key, value in kwargs["pairs"].items()}
            return await call(*args, **kwargs)
        if cmd in _PATTERN_COMMANDS:
            kwargs["pattern"] = prefix + kwargs["pattern"]
            result = await call(*args, **kwargs)
            if cmd is Command.SCAN:
                return _strip_keys(result, prefix)
            if cmd is Command.GET_MATCH:
                return _strip_pairs(result, prefix)
            return result
        if "key" in kwargs:
            kwargs["key"] = prefix + kwargs["key"]
        elif args and isinstance(args[0], str):
            args = (prefix + args[0], *args[1:])
        return await call(*args, **kwargs)

    return middleware


async def _strip_keys(keys: AsyncIterator[str], prefix: str) -> AsyncIterator[str]:
    async for key in keys:
        yield key.removeprefix(prefix)


async def _strip_pairs(
    pairs: AsyncIterator[tuple[str, Any]], prefix: str
) -> AsyncIterator[tuple[str, Any]]:
    async for key, value in pairs:
        yield key.removeprefix(prefix), value
