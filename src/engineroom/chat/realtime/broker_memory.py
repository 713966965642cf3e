"""The in-process broker of the embedded topology: history and presence in memory.

Publishing appends to the channel's stream and hands the push straight to the hub, in the
publisher's task: one process, one event loop, so nothing can be reordered or lost on the
way. Epochs are random per process: after a restart every position is from another epoch
and clients are told ``recovered: false`` instead of being given a wrong replay.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from engineroom.chat.realtime.broker import (
    META_TTL_SECONDS,
    BrokerHandler,
    HistoryPage,
    StoredPublication,
    StreamPosition,
    check_since,
    select,
)
from engineroom.chat.realtime.channels import NamespaceOptions
from engineroom.chat.realtime.protocol import publication_head, publication_push

_SWEEP_EVERY = 1000
"""Publications between two sweeps of idle streams."""


@dataclass
class _Stream:
    epoch: str
    ttl: float
    top: int = 0
    entries: deque[tuple[int, float, bytes]] = field(default_factory=deque)
    """(offset, monotonic time published, body), oldest first."""
    touched: float = field(default_factory=time.monotonic)


def new_epoch() -> str:
    return secrets.token_hex(4)


class MemoryBroker:
    def __init__(self, *, meta_ttl: float = META_TTL_SECONDS) -> None:
        self._handler: BrokerHandler | None = None
        self._streams: dict[str, _Stream] = {}
        self._presence: dict[str, dict[str, bytes]] = {}
        self._meta_ttl = meta_ttl
        self._since_sweep = 0

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def close(self) -> None:
        self._handler = None

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    async def ping(self) -> None:
        return None

    def _stream(self, channel: str, options: NamespaceOptions) -> _Stream:
        now = time.monotonic()
        stream = self._streams.get(channel)
        if stream is None or now - stream.touched > self._meta_ttl:
            stream = _Stream(epoch=new_epoch(), ttl=options.history_ttl)
            self._streams[channel] = stream
        stream.ttl = options.history_ttl
        _expire(stream, now)
        return stream

    async def publish(self, channel: str, body: bytes, options: NamespaceOptions) -> StreamPosition:
        offset, epoch = 0, ""
        if options.recoverable:
            stream = self._stream(channel, options)
            stream.top += 1
            stream.touched = time.monotonic()
            stream.entries.append((stream.top, stream.touched, body))
            while len(stream.entries) > options.history_size:
                stream.entries.popleft()
            offset, epoch = stream.top, stream.epoch
            self._maybe_sweep()
        if self._handler is not None:
            push = publication_push(publication_head(channel), offset, body)
            self._handler.handle_publication(channel, offset, epoch, push)
        return StreamPosition(offset, epoch)

    async def publish_join_leave(self, channel: str, push: str) -> None:
        if self._handler is not None:
            self._handler.handle_join_leave(channel, push)

    async def history(
        self,
        channel: str,
        options: NamespaceOptions,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
    ) -> HistoryPage:
        if not options.recoverable:
            return HistoryPage([], StreamPosition(0, ""))
        stream = self._stream(channel, options)
        top = StreamPosition(stream.top, stream.epoch)
        after = since.offset if since is not None else 0
        kept = [
            StoredPublication(offset, body) for offset, _, body in stream.entries if offset > after
        ]
        if since is not None:
            check_since(since, top, kept[0].offset if kept else None)
        return HistoryPage(select(kept, limit, reverse), top)

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.entries.clear()

    async def add_presence(self, channel: str, client_id: str, info: bytes, ttl: float) -> None:
        # Entries live exactly as long as their connection here: no expiry needed.
        self._presence.setdefault(channel, {})[client_id] = info

    async def remove_presence(self, channel: str, client_id: str) -> None:
        clients = self._presence.get(channel)
        if clients is not None:
            clients.pop(client_id, None)
            if not clients:
                del self._presence[channel]

    async def presence(self, channel: str) -> dict[str, bytes]:
        return dict(self._presence.get(channel, {}))

    async def publish_control(self, message: dict[str, object]) -> None:
        if self._handler is not None:
            self._handler.handle_control(message)

    def _maybe_sweep(self) -> None:
        """Drop streams nobody published to for longer than the meta TTL."""
        self._since_sweep += 1
        if self._since_sweep < _SWEEP_EVERY:
            return
        self._since_sweep = 0
        now = time.monotonic()
        for channel, stream in list(self._streams.items()):
            if now - stream.touched > self._meta_ttl:
                del self._streams[channel]
            else:
                _expire(stream, now)


def _expire(stream: _Stream, now: float) -> None:
    entries = stream.entries
    while entries and now - entries[0][1] > stream.ttl:
        entries.popleft()
