"""The platform cache in its embedded (memory) form."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from cashews import Cache

from engineroom.core.cache import create_cache, get_or_load, ping_cache
from engineroom.settings import Settings

WAIT_LIMIT = 10.0


@pytest.fixture
async def cache(settings: Settings) -> AsyncIterator[Cache]:
    cache = create_cache(settings)
    yield cache
    await cache.close()


async def test_each_call_builds_a_new_cache(settings: Settings, cache: Cache) -> None:
    other = create_cache(settings)
    try:
        await cache.set("k", "mine")
        assert await other.get("k") is None
    finally:
        await other.close()


async def test_set_get_and_ttl(cache: Cache) -> None:
    await cache.set("article:1", {"title": "Hello", "tags": ["a", "b"]}, expire=60)
    assert await cache.get("article:1") == {"title": "Hello", "tags": ["a", "b"]}
    assert 0 < await cache.get_expire("article:1") <= 60
    assert await cache.get("article:2") is None
    assert await cache.get("article:2", default="missing") == "missing"


async def test_entries_expire(cache: Cache) -> None:
    await cache.set("short", "lived", expire=1)
    assert await cache.get("short") == "lived"
    deadline = time.monotonic() + WAIT_LIMIT
    while await cache.get("short") is not None and time.monotonic() < deadline:  # noqa: ASYNC110 - polling an external store
        await asyncio.sleep(0.1)
    assert await cache.get("short") is None


async def test_cached_values_are_copies(cache: Cache) -> None:
    # As in Redis: changing what you got back must not change the cache.
    await cache.set("list", [1, 2])
    value = await cache.get("list")
    value.append(3)
    assert await cache.get("list") == [1, 2]


async def test_unpicklable_values_fail_here_as_they_would_in_redis(cache: Cache) -> None:
    with pytest.raises(Exception, match="pickle"):
        await cache.set("callback", lambda: None)


async def test_counters(cache: Cache) -> None:
    assert await cache.incr("hits") == 1
    assert await cache.incr("hits") == 2


async def test_get_or_load_loads_once(cache: Cache) -> None:
    loads = 0

    async def loader() -> dict[str, int]:
        nonlocal loads
        loads += 1
        return {"n": 42}

    first = await get_or_load(cache, "answer", ttl=60, loader=loader)
    second = await get_or_load(cache, "answer", ttl=60, loader=loader)
    assert first == second == {"n": 42}
    assert loads == 1


async def test_get_or_load_caches_none(cache: Cache) -> None:
    loads = 0

    async def loader() -> None:
        nonlocal loads
        loads += 1

    assert await get_or_load(cache, "nothing", ttl=60, loader=loader) is None
    assert await get_or_load(cache, "nothing", ttl=60, loader=loader) is None
    assert loads == 1


async def test_scans_and_clear_speak_unprefixed_keys(cache: Cache) -> None:
    await cache.set_many({"user:1": "a", "user:2": "b", "post:1": "c"})
    assert sorted([key async for key in cache.scan("user:*")]) == ["user:1", "user:2"]
    assert [pair async for pair in cache.get_match("post:*")] == [("post:1", "c")]
    await cache.delete_match("user:*")
    assert await cache.get_many("user:1", "post:1") == (None, "c")
    await cache.clear()
    assert [key async for key in cache.scan("*")] == []


async def test_the_memory_cache_is_ready(cache: Cache) -> None:
    await ping_cache(cache)


async def test_an_unreachable_redis_fails_readiness_but_reads_as_misses(
    settings: Settings,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = create_cache(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"}))
    try:
        with pytest.raises(Exception):  # noqa: B017, PT011 - any failure is "not ready"
            await ping_cache(cache)
        assert await cache.get("anything", default="miss") == "miss"
    finally:
        await cache.close()
