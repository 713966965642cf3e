"""What a hub needs from a broker: fan-out between processes, history, presence.

``MemoryBroker`` keeps everything in the process (the embedded topology); ``RedisBroker``
shares it between ``engineroom serve`` processes. A broker delivers every publication of a
channel the hub subscribed to back to the hub (its own included), already encoded as the
push text clients receive, with its offset and epoch.

History semantics, the same in every broker: a channel of a recoverable namespace has an
epoch (a random string, new whenever the stream had to be started again) and a top offset
that grows by one per publication. The stream keeps the last ``history_size``
publications, each for ``history_ttl`` seconds. A reader asking for what follows a
position gets all of it, or ``UnrecoverablePositionError`` when the epoch differs or part
of the gap is gone: never a partial answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engineroom.chat.realtime.channels import NamespaceOptions

META_TTL_SECONDS = 7 * 24 * 3600
"""How long a channel's epoch and offset outlive its last publication."""


@dataclass(frozen=True, slots=True)
class StreamPosition:
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class StoredPublication:
    offset: int
    body: bytes
    """The publication's fields without ``offset`` (see ``protocol.publication_body``)."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    publications: list[StoredPublication]
    position: StreamPosition
    """The channel's current top: offset of the last publication and the epoch."""


class BrokerError(Exception):
    """The broker cannot be reached or failed; the operation may be retried later."""


class UnrecoverablePositionError(Exception):
    """The stream no longer holds everything after the position asked for."""


class BrokerHandler(Protocol):
    """The hub side: called by the broker for what arrives from any process."""

    def handle_publication(self, channel: str, offset: int, epoch: str, push: str) -> None: ...

    def handle_join_leave(self, channel: str, push: str) -> None: ...

    def handle_control(self, message: dict[str, object]) -> None: ...

    def handle_reset(self) -> None:
        """Deliveries may have been lost (a broker connection dropped and came back)."""


class Broker(Protocol):
    async def start(self, handler: BrokerHandler) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Start receiving the channel; returns once nothing published later can be missed."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(
        self, channel: str, body: bytes, options: NamespaceOptions
    ) -> StreamPosition: ...

    async def publish_join_leave(self, channel: str, push: str) -> None: ...

    async def history(
        self,
        channel: str,
        options: NamespaceOptions,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
    ) -> HistoryPage:
        """Stored publications (``limit`` < 0: all, 0: none, only the position).

        With ``since``: only those after it, all of them or ``UnrecoverablePositionError``.
        """

    async def remove_history(self, channel: str) -> None: ...

    async def add_presence(self, channel: str, client_id: str, info: bytes, ttl: float) -> None: ...

    async def remove_presence(self, channel: str, client_id: str) -> None: ...

    async def presence(self, channel: str) -> dict[str, bytes]:
        """Client id -> the client's info (JSON), for clients present right now."""

    async def publish_control(self, message: dict[str, object]) -> None:
        """Send a command to every hub (this one included), such as "disconnect user"."""

    async def ping(self) -> None: ...


def check_since(since: StreamPosition, top: StreamPosition, first_kept: int | None) -> None:
    """Raise unless every publication after ``since`` up to ``top`` is still stored.

    ``first_kept``: the offset of the oldest publication still stored after ``since``
    (``None`` when none is).
    """
    if since.epoch != top.epoch or since.offset > top.offset:
        raise UnrecoverablePositionError
    if since.offset == top.offset:
        return
    if first_kept != since.offset + 1:
        raise UnrecoverablePositionError


def select(
    publications: list[StoredPublication], limit: int, reverse: bool
) -> list[StoredPublication]:
    """Apply ``limit`` and ``reverse`` to publications in ascending order."""
    if limit == 0:
        return []
    ordered = publications[::-1] if reverse else publications
    return ordered if limit < 0 else ordered[:limit]
