"""The message filter hook: every message body passes the platform's filters before it is
stored, on send and on edit.

A filter is any object with an async ``check(body, author, room, *, editing)`` returning a
``Verdict``: allow the body, replace it (the next filter sees the new body), or reject the
message with a reason the sender is told (422 ``chat_message_rejected``). Filters run in
the order they were registered; the first rejection stops the chain. Two are registered by
default, from the chat settings:

- ``blocked_words``: whole words of ``ENGINEROOM_CHAT_BLOCKED_WORDS``, in any case, are
  masked with ``***`` or refuse the message (``ENGINEROOM_CHAT_BLOCKED_WORDS_ACTION``);
- ``repeat``: the same text sent by one user in one room more often than
  ``ENGINEROOM_CHAT_MESSAGE_REPEAT_LIMIT`` (default 3 a minute) is refused. It counts with
  the platform's rate limiter, so the count is shared by every process through Redis.

Other code adds its own filter through the platform's registry, for instance from a chat
installer or a module's startup hook::

    filters_for(platform).register("links", NoLinksFilter())

A filter that needs the database or the network should keep its own timeouts: it runs
inside the sender's transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol
from weakref import WeakKeyDictionary

import structlog
from limits.errors import StorageError

from engineroom.chat.config import ChatSettings, chat_settings
from engineroom.chat.errors import MessageRejected
from engineroom.chat.models import Room
from engineroom.chat.realtime.runtime import find_runtime
from engineroom.core.auth import Principal
from engineroom.core.platform import Platform
from engineroom.core.ratelimit import RateLimiter

MASK = "***"
logger = structlog.get_logger("engineroom.chat.filters")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a filter decided about a body."""

    action: Literal["allow", "replace", "reject"]
    reason: str | None = None
    """For ``reject``: why, in words the sender can act on."""
    body: str | None = None
    """For ``replace``: the body to keep instead."""

    ALLOW: ClassVar[Verdict]

    @classmethod
    def replace(cls, body: str) -> Verdict:
        return cls("replace", body=body)

    @classmethod
    def reject(cls, reason: str) -> Verdict:
        return cls("reject", reason=reason)


Verdict.ALLOW = Verdict("allow")


class MessageFilter(Protocol):
    async def check(self, body: str, author: Principal, room: Room, *, editing: bool) -> Verdict:
        """Judge ``body``, about to be sent (or, with ``editing``, to replace a message's
        body) by ``author`` in ``room``."""


class FilterRegistry:
    """The filters of one platform, in the order they run."""

    def __init__(self) -> None:
        self._filters: dict[str, MessageFilter] = {}

    def register(self, name: str, message_filter: MessageFilter) -> None:
        """Add (or replace, keeping its place) the filter called ``name``."""
        self._filters[name] = message_filter

    def unregister(self, name: str) -> None:
        self._filters.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._filters)

    async def apply(self, body: str, author: Principal, room: Room, *, editing: bool) -> str:
        """The body to store; raises ``MessageRejected`` when a filter refuses it."""
        for name, message_filter in list(self._filters.items()):
            verdict = await message_filter.check(body, author, room, editing=editing)
            if verdict.action == "reject":
                raise MessageRejected(verdict.reason or f"The message was refused ({name}).")
            if verdict.action == "replace" and verdict.body is not None:
                body = verdict.body
        return body


class BlockedWords:
    """Masks (``***``) or refuses whole words from a list, in any letter case."""

    def __init__(self, words: Sequence[str], *, action: Literal["mask", "reject"]) -> None:
        self.action = action
        # Longest first, so that "darn it" wins over "darn"; word edges are checked with
        # look-arounds because \b misplaces them next to punctuation inside a word.
        alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
        self._pattern = (
            re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if words else None
        )

    async def check(self, body: str, author: Principal, room: Room, *, editing: bool) -> Verdict:
        if self._pattern is None or self._pattern.search(body) is None:
            return Verdict.ALLOW
        if self.action == "reject":
            return Verdict.reject("The message contains a word that is not allowed here.")
        return Verdict.replace(self._pattern.sub(MASK, body))


class RepeatFilter:
    """Refuses the same text from one user in one room past ``limit`` (spam)."""

    def __init__(self, limiter: RateLimiter, limit: str) -> None:
        self._limiter = limiter
        self._limit = limit

    async def check(self, body: str, author: Principal, room: Room, *, editing: bool) -> Verdict:
        if editing:
            return Verdict.ALLOW
        # Case and spacing do not make a message new.
        normalised = " ".join(body.casefold().split())
        digest = hashlib.blake2b(normalised.encode(), digest_size=16).hexdigest()
        try:
            result = await self._limiter.hit(
                self._limit, "chat.repeat", str(room.id), author.subject, digest
            )
        except StorageError as exc:
            # Like the rate limits: an unreachable Redis must not stop the chat.
            logger.error("chat_repeat_filter_unavailable", error=str(exc))
            return Verdict.ALLOW
        if result.allowed:
            return Verdict.ALLOW
        return Verdict.reject(
            "You sent this text several times just now; "
            f"wait {result.retry_after} s before sending it again."
        )


def default_filters(chat: ChatSettings, limiter: RateLimiter) -> FilterRegistry:
    registry = FilterRegistry()
    if chat.blocked_words:
        registry.register(
            "blocked_words", BlockedWords(chat.blocked_words, action=chat.blocked_words_action)
        )
    registry.register("repeat", RepeatFilter(limiter, chat.message_repeat_limit))
    return registry


def settings_of(platform: Platform) -> ChatSettings:
    """The chat settings the running transport got (tests and embedders may pass their
    own to the module), else those of the environment."""
    runtime = find_runtime(platform)
    return runtime.chat if runtime is not None else chat_settings(platform.settings)


_REGISTRIES: WeakKeyDictionary[Platform, FilterRegistry] = WeakKeyDictionary()


def filters_for(platform: Platform, chat: ChatSettings | None = None) -> FilterRegistry:
    """The platform's filter registry, created on first use with the default filters of
    ``chat`` (default: ``settings_of(platform)``)."""
    registry = _REGISTRIES.get(platform)
    if registry is None:
        registry = default_filters(chat or settings_of(platform), platform.rate_limiter)
        _REGISTRIES[platform] = registry
    return registry
