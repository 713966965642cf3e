"""Chat settings (env prefix ``ENGINEROOM_CHAT_``), documented in docs/chat.md.

One ``ChatSettings`` goes with each platform ``Settings`` object: ``chat_settings(settings)``
reads it from the environment the first time and ``configure(settings, ...)`` lets tests
and embedders pass their own.
"""

from __future__ import annotations

import weakref
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from engineroom.settings import Settings


class ChatSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ENGINEROOM_CHAT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    broker: Literal["auto", "memory", "redis", "nats"] = "auto"
    """``auto``: Redis when ``ENGINEROOM_REDIS_URL`` is set, else in process."""
    redis_url: str | None = None
    """A Redis for the transport only; defaults to ``ENGINEROOM_REDIS_URL``."""
    redis_prefix: str = Field(default="engineroom:chat:", min_length=1, max_length=100)
    """Namespace of every Redis key and pub/sub channel of the chat transport."""
    nats_url: str | None = None
    max_frame_bytes: int = Field(default=65_536, ge=1024, le=16_777_216)
    max_subscriptions: int = Field(default=128, ge=1, le=100_000)
    command_rate: float = Field(default=50.0, gt=0)
    """Commands per second one connection may send on average."""
    command_burst: int = Field(default=100, ge=1)
    max_queue_bytes: int = Field(default=1_048_576, ge=65_536)
    """Unsent bytes a connection may have queued before it is closed as slow."""
    ping_interval: float = Field(default=25.0, ge=1, le=600)
    connect_timeout: float = Field(default=10.0, gt=0, le=600)
    expiry_grace: float = Field(default=10.0, ge=0, le=600)
    """Seconds a connection may outlive its token (waiting for a refresh) before it closes."""
    presence_ttl: float = Field(default=60.0, ge=3, le=3600)
    drain_timeout: float = Field(default=5.0, ge=0, le=120)
    """How long a stopping server waits for clients to receive the reconnect advice."""
    public_history_size: int = Field(default=100, ge=0, le=100_000)
    public_history_ttl: float = Field(default=600.0, ge=0)
    room_history_size: int = Field(default=1000, ge=0, le=100_000)
    room_history_ttl: float = Field(default=3600.0, ge=0)
    personal_history_size: int = Field(default=100, ge=0, le=100_000)
    personal_history_ttl: float = Field(default=3600.0, ge=0)


_BY_SETTINGS: dict[int, ChatSettings] = {}


def chat_settings(settings: Settings) -> ChatSettings:
    """The chat settings that go with ``settings`` (read from the environment once)."""
    found = _BY_SETTINGS.get(id(settings))
    if found is None:
        found = ChatSettings()
        configure(settings, found)
    return found


def configure(settings: Settings, chat: ChatSettings) -> None:
    """Use ``chat`` for everything running with ``settings``."""
    key = id(settings)
    if key not in _BY_SETTINGS:
        # Settings objects are not hashable (list fields); drop the entry with the object.
        weakref.finalize(settings, _BY_SETTINGS.pop, key, None)
    _BY_SETTINGS[key] = chat
