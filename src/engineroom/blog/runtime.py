"""Per-process blog state: the search engine of the database, the user directory, the read
cache. One per ``Platform``, created at startup (or on first use) and found again by
the platform it belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from engineroom.blog.authors import UserDirectory
from engineroom.blog.config import BlogSettings, blog_settings
from engineroom.blog.directory import directory_for
from engineroom.blog.readcache import ReadCache
from engineroom.blog.search import SearchIndex, search_index
from engineroom.core.platform import Platform


@dataclass(frozen=True)
class BlogRuntime:
    settings: BlogSettings
    search: SearchIndex
    directory: UserDirectory
    reads: ReadCache


_runtimes: WeakKeyDictionary[Platform, BlogRuntime] = WeakKeyDictionary()


def runtime_for(platform: Platform) -> BlogRuntime:
    runtime = _runtimes.get(platform)
    if runtime is None:
        settings = blog_settings()
        runtime = BlogRuntime(
            settings=settings,
            search=search_index(platform.database.dialect),
            directory=directory_for({module.name for module in platform.modules}),
            reads=ReadCache(
                platform.cache,
                settings.cache_ttl_seconds,
                shared=platform.settings.redis_url is not None,
            ),
        )
        # Every commit that changed public reads (requests, GraphQL, event handlers)
        # invalidates the read cache right after it lands.
        platform.database.add_after_commit_hook(runtime.reads.after_commit)
        _runtimes[platform] = runtime
    return runtime


async def start(platform: Platform) -> None:
    runtime_for(platform)
