"""Rate limits: the ``limits`` library, in memory by default, Redis when ``REDIS_URL`` is set.

Routes declare limits with the ``RateLimit`` dependency::

    @router.post("/login", dependencies=[Depends(RateLimit("5/minute", scope="login"))])

Every answer carries ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` and
``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers); over the limit the route is
not run and the client gets a 429 problem with ``Retry-After``.

The strategy is the moving window: it counts exactly the hits of the last window, so a
client can never get twice the limit by straddling a window boundary (as with fixed
windows) and ``Retry-After`` is exact (when the oldest hit leaves the window), where the
sliding-window counter only approximates both. It stores one entry per hit, which is
cheap for the limits we set: small ones, on writes and credential checks.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv6Address, ip_address, ip_network
from typing import Any, cast

import structlog
from fastapi import Request, Response
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from engineroom.core.auth import resolved_principal
from engineroom.core.errors import RateLimited
from engineroom.settings import Settings

KEY_PREFIX = "engineroom"
_SOCKET_TIMEOUT = 1.0
_CONNECT_TIMEOUT = 2.0
_PING_TIMEOUT = 3.0
_SCOPE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_IPV6_CLIENT_PREFIX = 64
"""One IPv6 subscriber usually holds a whole /64: limiting single addresses would let
them rotate through 2**64 of them."""

logger = structlog.get_logger("engineroom.ratelimit")


@dataclass(frozen=True)
class RateLimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    """Seconds until the oldest counted hit leaves the window (one more request fits)."""

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_after))

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(max(0, math.ceil(self.reset_after))),
        }


@lru_cache(maxsize=512)
def parse_limit(limit: str) -> RateLimitItem:
    """Parse one limit such as ``"5/minute"`` or ``"100 per hour"``; ValueError otherwise."""
    try:
        items = parse_many(limit)
    except ValueError as exc:
        raise ValueError(f"rate limit {limit!r}: {exc}") from None
    if len(items) != 1:
        raise ValueError(f"rate limit {limit!r}: give exactly one limit per RateLimit")
    item = items[0]
    if item.amount < 1:
        raise ValueError(f"rate limit {limit!r}: the amount must be at least 1")
    return item


class RateLimiter:
    """Counts hits per (limit, keys) in memory or in Redis, shared by every process."""

    def __init__(self, settings: Settings, *, key_prefix: str = KEY_PREFIX) -> None:
        self._pool: ConnectionPool | None = None
        self._storage: Storage
        if settings.redis_url is None:
            self._storage = MemoryStorage()
        else:
            # Our own pool, so that close() can release its connections and every call
            # has a timeout; limits would otherwise build a client without either.
            self._pool = ConnectionPool.from_url(
                settings.redis_url,
                socket_timeout=_SOCKET_TIMEOUT,
                socket_connect_timeout=_CONNECT_TIMEOUT,
                client_name="engineroom-ratelimit",
            )
            self._storage = RedisStorage(
                _limits_uri(settings.redis_url),
                implementation="redispy",
                key_prefix=key_prefix,
                wrap_exceptions=True,
                connection_pool=cast(Any, self._pool),
            )
        self._strategy = MovingWindowRateLimiter(self._storage)

    async def hit(self, limit: str, *keys: str) -> RateLimitResult:
        """Count one hit against ``limit`` for ``keys``; raises ``StorageError`` if Redis fails."""
        item = parse_limit(limit)
        identifiers = tuple(_escape(key) for key in keys)
        allowed = await self._strategy.hit(item, *identifiers)
        stats = await self._strategy.get_window_stats(item, *identifiers)
        return RateLimitResult(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=max(0.0, stats.reset_time - time.time()),
        )

    async def peek(self, limit: str, *keys: str) -> RateLimitResult:
        """The state of ``limit`` for ``keys`` without counting a hit: ``allowed`` says
        whether one more hit would fit. For limits on failures only (count with ``hit``
        after a failure, ``peek`` before trying)."""
        item = parse_limit(limit)
        stats = await self._strategy.get_window_stats(item, *(_escape(key) for key in keys))
        return RateLimitResult(
            allowed=stats.remaining > 0,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=max(0.0, stats.reset_time - time.time()),
        )

    async def reset(self, limit: str, *keys: str) -> None:
        """Forget the hits counted for ``keys`` (e.g. failed logins after a success)."""
        item = parse_limit(limit)
        await self._strategy.clear(item, *(_escape(key) for key in keys))

    async def ping(self) -> None:
        """Raise ``ConnectionError`` if the storage cannot be reached (``/readyz``)."""
        async with asyncio.timeout(_PING_TIMEOUT):
            healthy = await self._storage.check()
        if not healthy:
            raise ConnectionError("the rate limit storage is unreachable")

    async def close(self) -> None:
        if isinstance(self._storage, MemoryStorage):
            # The memory storage expires entries in a background task of its own.
            timer = self._storage.timer
            if timer is not None and not timer.done():
                timer.cancel()
                await asyncio.gather(timer, return_exceptions=True)
        if self._pool is not None:
            await self._pool.aclose()


def _limits_uri(redis_url: str) -> str:
    # limits picks its storage class from the scheme; the connection comes from our pool.
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


def _escape(key: str) -> str:
    # limits joins identifiers with "/": escape it so ("a/b", "c") and ("a", "b/c") differ.
    return key.replace("%", "%25").replace("/", "%2F")


def client_key(request: Request) -> str:
    """The default rate-limit key: the principal if already resolved, else the client.

    The client address is the one the ASGI server reports; behind a proxy, run the
    server with its proxy-header support (uvicorn ``--forwarded-allow-ips``) so that it
    is the real client and not the proxy.
    """
    principal = resolved_principal(request)
    if principal is not None:
        return f"user:{principal.subject}"
    host = request.client.host if request.client else ""
    return f"ip:{_client_network(host)}"


def _client_network(host: str) -> str:
    try:
        address = ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ip_network(f"{address}/{_IPV6_CLIENT_PREFIX}", strict=False))
    return str(address)


def RateLimit(
    limit: str,
    scope: str,
    key: Callable[[Request], str] | None = None,
) -> Callable[[Request, Response], Awaitable[None]]:
    """A dependency allowing ``limit`` hits per key in ``scope``; 429 past it.

    ``key`` maps the request to who is limited (default: ``client_key``). A bad ``limit``
    or ``scope`` raises ValueError here, when the route is declared.
    """
    item = parse_limit(limit)
    if not _SCOPE_PATTERN.fullmatch(scope):
        raise ValueError(f"rate limit scope {scope!r}: use letters, digits and _.:- only")
    policy = f"{item.amount};w={item.get_expiry()}"
    key_of = key or client_key

    async def rate_limit(request: Request, response: Response) -> None:
        limiter: RateLimiter = request.app.state.platform.rate_limiter
        try:
            result = await limiter.hit(limit, scope, key_of(request))
        except StorageError as exc:
            # Fail open: an unreachable Redis must not take every limited route down
            # with it; /readyz reports the outage and the error is logged for alerting
            # (without a traceback: during an outage every request would print one).
            logger.error("rate_limit_unavailable", scope=scope, error=str(exc))
            return
        headers = result.headers()
        headers["RateLimit-Policy"] = policy
        if not result.allowed:
            headers["Retry-After"] = str(result.retry_after)
            raise RateLimited(
                "Too many requests; retry after the delay in Retry-After.", headers=headers
            )
        response.headers.update(headers)

    return rate_limit
