"""The read cache's generations: in one process (memory) and across processes (Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engineroom.blog.readcache import ReadCache
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
