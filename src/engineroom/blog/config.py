"""Blog settings (env prefix ``ENGINEROOM_BLOG_``), read once per process."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engineroom.core.ratelimit import parse_limit


class BlogSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ENGINEROOM_BLOG_", env_file=".env", extra="ignore", frozen=True
    )

    write_rate_limit: str = "60/minute"
    """Writes (articles, comments, favorites, follows) per user; see core/ratelimit.py."""
    cache_ttl_seconds: float = Field(default=300.0, gt=0, le=86_400)
    """Upper bound on how long a cached public read lives; writes invalidate it at once."""
    cached_pages: int = Field(default=2, ge=0, le=50)
    """How many first pages of each public list are cached (0 turns list caching off)."""
    feed_entries: int = Field(default=20, ge=1, le=200)
    """Entries per Atom feed."""

    @field_validator("write_rate_limit")
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        parse_limit(value)  # a bad limit stops the process at start, naming the setting
        return value


@lru_cache(maxsize=1)
def blog_settings() -> BlogSettings:
    return BlogSettings()
