"""The read cache's generations: in one process (memory) and across processes (Redis)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engineroom.blog import readcache
from engineroom.blog.readcache import FreshRead, ReadCache
from engineroom.core.cache import create_cache
from engineroom.settings import Settings


class Loads:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> bytes:
        self.count += 1
        return f"v{self.count}".encode()


async def test_memory_generation_changes_on_invalidate(settings: Settings) -> None:
    cache = create_cache(settings)
    reads = ReadCache(cache, 60, shared=False)
    load = Loads()
    try:
        first = await reads.get_or_build("k", load)
        again = await reads.get_or_build("k", load)
        assert first == again
        assert load.count == 1
        reads.invalidate()
        fresh = await reads.get_or_build("k", load)
        assert fresh.body == b"v2"
        assert fresh.etag != first.etag
    finally:
        await cache.close()


async def test_rows_loaded_across_an_invalidation_are_not_kept(settings: Settings) -> None:
    cache = create_cache(settings)
    reads = ReadCache(cache, 60, shared=False)
    load = Loads()

    async def load_while_a_write_commits() -> bytes:
        body = await load()
        reads.invalidate()  # the write's commit lands while these rows are on their way
        return body

    try:
        assert (await reads.get_or_build("k", load_while_a_write_commits)).body == b"v1"
        assert (await reads.get_or_build("k", load)).body == b"v2"
        assert (await reads.get_or_build("k", load)).body == b"v2"
        assert load.count == 2
    finally:
        await cache.close()


async def test_process_copies_live_no_longer_than_the_entry(settings: Settings) -> None:
    cache = create_cache(settings)
    reads = ReadCache(cache, 0.2, shared=False)
    load = Loads()
    try:
        assert (await reads.get_or_build("k", load)).body == b"v1"
        assert (await reads.get_or_build("k", load)).body == b"v1"
        await asyncio.sleep(0.3)
        assert (await reads.get_or_build("k", load)).body == b"v2"
    finally:
        await cache.close()


async def test_process_copies_are_bounded(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readcache, "LOCAL_COPIES", 2)
    cache = create_cache(settings)
    reads = ReadCache(cache, 60, shared=False)
    loads = {name: Loads() for name in ("a", "b", "c")}
    try:
        for name, load in loads.items():
            await reads.get_or_build(name, load)
        # Only this process's copies are left: the oldest one ("a") was let go.
        await cache.clear()
        for name in ("c", "b", "a"):
            await reads.get_or_build(name, loads[name])
        assert {name: load.count for name, load in loads.items()} == {"a": 2, "b": 1, "c": 1}
    finally:
        await cache.close()


@pytest.mark.redis
async def test_redis_generation_is_shared_between_processes(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=tmp_path,
        redis_url=redis_url,
    )
    one_cache = create_cache(settings, key_prefix=redis_prefix)
    other_cache = create_cache(settings, key_prefix=redis_prefix)
    one, other = ReadCache(one_cache, 60, shared=True), ReadCache(other_cache, 60, shared=True)
    load = Loads()
    try:
        built = await one.get_or_build("article:x", load)
        assert (await other.get_or_build("article:x", load)) == built
        assert load.count == 1
        other.invalidate()  # a write committed in the other process
        await other.settle()
        rebuilt = await one.get_or_build("article:x", load)
        assert rebuilt.body == b"v2"
        # A lost counter restarts from the clock, never from a number old keys carry.
        await one_cache.delete("blog:generation")
        assert (await one.get_or_build("article:x", load)).body == b"v3"
    finally:
        await one_cache.clear()
        await one_cache.close()
        await other_cache.close()


class GatedReads:
    """A shared value whose reads each wait for a release, numbered as they start."""

    def __init__(self) -> None:
        self.started = 0
        self.gates = [asyncio.Event() for _ in range(5)]
        self.fail = False

    async def __call__(self) -> int:
        self.started += 1
        number = self.started
        await self.gates[number - 1].wait()
        if self.fail:
            raise ConnectionError("cache down")
        return number

    def release(self, number: int) -> None:
        self.gates[number - 1].set()


async def test_callers_arriving_during_a_read_share_the_next_one() -> None:
    reads = GatedReads()
    fresh = FreshRead(reads)
    first = asyncio.create_task(fresh())
    await asyncio.sleep(0)
    # Read 1 is in flight: its answer may predate what these callers already saw.
    later = [asyncio.create_task(fresh()) for _ in range(3)]
    await asyncio.sleep(0)
    reads.release(1)
    assert await first == 1
    reads.release(2)
    assert await asyncio.gather(*later) == [2, 2, 2]
    assert reads.started == 2
    # Nothing in flight any more: the next caller starts a read of its own.
    alone = asyncio.create_task(fresh())
    reads.release(3)
    assert await alone == 3


async def test_a_failed_read_fails_its_callers_only() -> None:
    reads = GatedReads()
    fresh = FreshRead(reads)
    reads.fail = True
    first = asyncio.create_task(fresh())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(fresh())
    reads.release(1)
    with pytest.raises(ConnectionError):
        await first
    reads.fail = False
    reads.release(2)
    assert await waiting == 2
