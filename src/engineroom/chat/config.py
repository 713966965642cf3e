"""Chat settings (env prefix ``ENGINEROOM_CHAT_``), documented in docs/chat.md.

One ``ChatSettings`` goes with each platform ``Settings`` object: ``chat_settings(settings)``
reads it from the environment the first time and ``configure(settings, ...)`` lets tests
and embedders pass their own.
"""

from __future__ import annotations

import weakref
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engineroom.core.ratelimit import parse_limit
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

    # Messages (docs/chat.md, "Messages").
    message_max_length: int = Field(default=4000, ge=1, le=100_000)
    """Characters a message body may have; a longer one is refused with 413."""
    message_max_attachments: int = Field(default=10, ge=0, le=100)
    message_max_attachment_size: int = Field(default=2**31, ge=0, le=2**53)
    """The largest ``size`` (bytes) an attachment link may declare."""
    message_max_mentions: int = Field(default=20, ge=0, le=100)
    """Distinct ``@username`` mentions resolved per message; later ones stay plain text."""
    message_rate_limit: str = "20/10 seconds"
    """Messages one user may send (all rooms together), in ``limits`` notation."""
    message_repeat_limit: str = "3/minute"
    """Times one user may send the same text in the same room (the spam filter)."""
    blocked_words: list[str] = Field(default_factory=list, max_length=10_000)
    """Words the default filter masks or refuses (whole words, any case); a JSON list."""
    blocked_words_action: Literal["mask", "reject"] = "mask"
    """``mask`` replaces each blocked word with ``***``; ``reject`` refuses the message."""
    reactions_per_user: int = Field(default=20, ge=1, le=1000)
    """Different reactions one user may put on one message."""

    @field_validator("message_rate_limit", "message_repeat_limit")
    @classmethod
    def _a_rate_limit(cls, value: str) -> str:
        parse_limit(value)
        return value

    @field_validator("blocked_words")
    @classmethod
    def _words(cls, value: list[str]) -> list[str]:
        words = [word.strip() for word in value if word.strip()]
        if any(len(word) > 100 for word in words):
            raise ValueError("a blocked word may have at most 100 characters")
        return words

    # Receipts, typing and presence (docs/chat.md, "Receipts, unread counts, typing and
    # presence").
    read_rate_limit: str = "300/minute"
    """Read-position updates over REST (``.../read``, ``/read-all``) one user may make."""
    typing_throttle: float = Field(default=2.0, ge=0, le=60)
    """Seconds between two ``typing: true`` publications of one user in one room."""
    presence_scan_interval: float = Field(default=1.0, ge=0.01, le=60)
    """How often each process looks for connections that opened or closed."""

    @field_validator("read_rate_limit")
    @classmethod
    def _a_read_rate_limit(cls, value: str) -> str:
        parse_limit(value)
        return value


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
