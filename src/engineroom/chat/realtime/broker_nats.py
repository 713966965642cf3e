"""The NATS broker: fan-out with core subjects, history and presence in JetStream.

Subjects (``P`` is the prefix made subject-safe; channel and namespace names are hex,
since channel names may hold the characters NATS subjects reserve):

- ``P.c.<namespace>.<channel>``: publications. A recoverable namespace has a stream
  (``P_H_<namespace>``) on ``P.c.<namespace>.*`` keeping ``history_size`` messages per
  channel for ``history_ttl``; every process also listens to the subjects of the channels
  its clients subscribe to, so a publication is stored and fanned out in one message.
- ``P.j.<channel>``: join/leave; ``P.control``: commands to every process.
- ``P.pr.<channel>.<client>``: presence, in a stream that keeps one message per subject
  for the presence TTL (an empty message removes the client).

Offsets: a publication reads the channel's last stored message (its offset and epoch in
headers) and appends the next one with ``Nats-Expected-Last-Subject-Sequence``, so two
processes publishing at once cannot take the same offset: the loser reads again. When a
channel has nothing stored (never used, or every message expired) the next publication
starts a new epoch, so no client can mistake the new stream for the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
import weakref
from collections.abc import AsyncIterator

import nats
import orjson
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from engineroom.chat.realtime.broker import (
    BrokerError,
    BrokerHandler,
    HistoryPage,
    StoredPublication,
    StreamPosition,
    check_since,
    select,
)
from engineroom.chat.realtime.channels import NamespaceOptions, parse_channel
from engineroom.chat.realtime.protocol import publication_head, publication_push

logger = structlog.get_logger("engineroom.chat.realtime")

_OFFSET, _EPOCH = "Chat-Offset", "Chat-Epoch"
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE = 10071
_PUBLISH_ATTEMPTS = 20
_BODY_MARK = b',"pub":{'


@contextlib.asynccontextmanager
async def _nats_errors() -> AsyncIterator[None]:
    try:
        yield
    except (NatsError, OSError, TimeoutError) as exc:
        raise BrokerError(str(exc) or type(exc).__name__) from exc


def _token(name: str) -> str:
    return name.encode().hex() or "_"


class NatsBroker:
    def __init__(self, url: str, *, prefix: str) -> None:
        self._url = url
        self._prefix = re.sub(r"[^A-Za-z0-9_-]", "_", prefix.strip(":")) or "chat"
        self._nc: NatsClient | None = None
        self._handler: BrokerHandler | None = None
        self._subscriptions: dict[str, tuple[Subscription, Subscription]] = {}
        self._streams: set[str] = set()
        self._control: Subscription | None = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def _client(self) -> NatsClient:
        if self._nc is None:
            raise BrokerError("the NATS broker is not started")
        return self._nc

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

        async def reconnected() -> None:
            # Whatever was published while disconnected never reached this process.
            handler.handle_reset()

        async with _nats_errors():
            self._nc = await nats.connect(
                self._url,
                name=f"{self._prefix}-chat",
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnected_cb=reconnected,
            )
            self._control = await self._client.subscribe(
                f"{self._prefix}.control", cb=self._on_control
            )
            await self._client.flush()

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(NatsError, OSError):
                await self._nc.drain()
            self._nc = None

    async def ping(self) -> None:
        async with _nats_errors():
            await self._client.flush(timeout=3)

    # ---- fan-out ---------------------------------------------------------------------

    def _publication_subject(self, channel: str) -> str:
        return f"{self._prefix}.c.{_token(parse_channel(channel).namespace)}.{_token(channel)}"

    async def subscribe(self, channel: str) -> None:
        async with _nats_errors():
            client = self._client

            async def on_publication(msg: Msg) -> None:
                headers = msg.headers or {}
                offset = int(headers.get(_OFFSET, 0))
                if self._handler is not None:
                    self._handler.handle_publication(
                        channel, offset, headers.get(_EPOCH, ""), msg.data.decode()
                    )

            async def on_join_leave(msg: Msg) -> None:
                if self._handler is not None:
                    self._handler.handle_join_leave(channel, msg.data.decode())

            publications = await client.subscribe(
                self._publication_subject(channel), cb=on_publication
            )
            joins = await client.subscribe(f"{self._prefix}.j.{_token(channel)}", cb=on_join_leave)
            self._subscriptions[channel] = (publications, joins)
            # Once the server answers the flush it has the subscriptions.
            await client.flush()

    async def unsubscribe(self, channel: str) -> None:
        subscriptions = self._subscriptions.pop(channel, None)
        if subscriptions is None:
            return
        async with _nats_errors():
            for subscription in subscriptions:
                await subscription.unsubscribe()

    async def _on_control(self, msg: Msg) -> None:
        message = orjson.loads(msg.data)
        if isinstance(message, dict) and self._handler is not None:
            self._handler.handle_control(message)

    async def publish_control(self, message: dict[str, object]) -> None:
        async with _nats_errors():
            await self._client.publish(f"{self._prefix}.control", orjson.dumps(message))

    async def publish_join_leave(self, channel: str, push: str) -> None:
        async with _nats_errors():
            await self._client.publish(f"{self._prefix}.j.{_token(channel)}", push.encode())

    # ---- publications and history ----------------------------------------------------

    async def _history_stream(self, channel: str, options: NamespaceOptions) -> str:
        namespace = _token(parse_channel(channel).namespace)
        name = f"{self._prefix}_H_{namespace}"
        if name not in self._streams:
            config = StreamConfig(
                name=name,
                subjects=[f"{self._prefix}.c.{namespace}.*"],
                max_msgs_per_subject=options.history_size,
                max_age=options.history_ttl,
                storage=StorageType.FILE,
            )
            jsm = self._client.jetstream()
            try:
                await jsm.add_stream(config)
            except APIError:
                await jsm.update_stream(config)
            self._streams.add(name)
        return name

    async def _last(self, stream: str, subject: str) -> tuple[int, int, str]:
        """(stream sequence, offset, epoch) of the channel's last stored publication."""
        try:
            message = await self._client.jetstream().get_last_msg(stream, subject)
        except NotFoundError:
            return 0, 0, ""
        headers = message.headers or {}
        return int(message.seq or 0), int(headers.get(_OFFSET, 0)), headers.get(_EPOCH, "")

    async def publish(self, channel: str, body: bytes, options: NamespaceOptions) -> StreamPosition:
        head = publication_head(channel)
        subject = self._publication_subject(channel)
        async with _nats_errors():
            if not options.recoverable:
                await self._client.publish(subject, publication_push(head, 0, body).encode())
                return StreamPosition(0, "")
            stream = await self._history_stream(channel, options)
            # One publisher per channel in this process: only other processes contend.
            lock = self._locks.setdefault(channel, asyncio.Lock())
            async with lock:
                return await self._append(channel, stream, subject, head, body)

    async def _append(
        self, channel: str, stream: str, subject: str, head: bytes, body: bytes
    ) -> StreamPosition:
        for attempt in range(_PUBLISH_ATTEMPTS):
            sequence, offset, epoch = await self._last(stream, subject)
            if not sequence:
                epoch = secrets.token_hex(4)
            offset += 1
            headers = {_EXPECTED_LAST: str(sequence), _OFFSET: str(offset), _EPOCH: epoch}
            encoded = publication_push(head, offset, body).encode()
            try:
                await self._client.jetstream().publish(subject, encoded, headers=headers)
            except APIError as exc:
                if exc.err_code != _WRONG_LAST_SEQUENCE:
                    raise
                # Another process took this offset: read again, after a short pause.
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            return StreamPosition(offset, epoch)
        raise BrokerError(f"too much contention publishing to {channel}")

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
        subject = self._publication_subject(channel)
        async with _nats_errors():
            stream = await self._history_stream(channel, options)
            sequence, top, epoch = await self._last(stream, subject)
            position = StreamPosition(top, epoch)
            want = since is not None or limit != 0
            kept = await self._stored(stream, subject, sequence) if want and sequence else []
        after = since.offset if since is not None else 0
        kept = [publication for publication in kept if publication.offset > after]
        if since is not None:
            # Nothing stored yet: the position before the first publication is (0, "").
            if since == StreamPosition(0, "") and kept and kept[0].offset == 1:
                since = StreamPosition(0, epoch)
            check_since(since, position, kept[0].offset if kept else None)
        return HistoryPage(select(kept, limit, reverse), position)

    async def _stored(self, stream: str, subject: str, last: int) -> list[StoredPublication]:
        """Every stored publication of the channel, oldest first (one request each)."""
        jsm = self._client.jetstream()
        kept: list[StoredPublication] = []
        sequence = 1
        while sequence <= last:
            try:
                message = await jsm.get_msg(stream, seq=sequence, subject=subject, next=True)
            except NotFoundError:
                break
            headers = message.headers or {}
            push = message.data or b""
            # The stored push minus its envelope and offset is the publication's body.
            start = push.index(b",", push.index(_BODY_MARK) + len(_BODY_MARK)) + 1
            kept.append(StoredPublication(int(headers.get(_OFFSET, 0)), push[start:-3]))
            sequence = int(message.seq or sequence) + 1
        return kept

    async def remove_history(self, channel: str) -> None:
        options = NamespaceOptions(history_size=1, history_ttl=1)
        async with _nats_errors():
            stream = await self._history_stream(channel, options)
            await self._client.jetstream().purge_stream(
                stream, subject=self._publication_subject(channel)
            )

    # ---- presence --------------------------------------------------------------------

    async def _presence_stream(self, ttl: float) -> str:
        name = f"{self._prefix}_PRESENCE"
        if name not in self._streams:
            config = StreamConfig(
                name=name,
                subjects=[f"{self._prefix}.pr.>"],
                max_msgs_per_subject=1,
                max_age=ttl,
                storage=StorageType.MEMORY,
            )
            jsm = self._client.jetstream()
            try:
                await jsm.add_stream(config)
            except APIError:
                await jsm.update_stream(config)
            self._streams.add(name)
        return name

    def _presence_subject(self, channel: str, client_id: str) -> str:
        return f"{self._prefix}.pr.{_token(channel)}.{_token(client_id)}"

    async def add_presence(self, channel: str, client_id: str, info: bytes, ttl: float) -> None:
        async with _nats_errors():
            await self._presence_stream(ttl)
            await self._client.jetstream().publish(self._presence_subject(channel, client_id), info)

    async def remove_presence(self, channel: str, client_id: str) -> None:
        async with _nats_errors():
            if f"{self._prefix}_PRESENCE" in self._streams:
                await self._client.jetstream().publish(
                    self._presence_subject(channel, client_id), b""
                )

    async def presence(self, channel: str) -> dict[str, bytes]:
        name = f"{self._prefix}_PRESENCE"
        subject = f"{self._prefix}.pr.{_token(channel)}.*"
        clients: dict[str, bytes] = {}
        async with _nats_errors():
            if name not in self._streams:
                return clients
            jsm = self._client.jetstream()
            sequence = 1
            while True:
                try:
                    message = await jsm.get_msg(name, seq=sequence, subject=subject, next=True)
                except NotFoundError:
                    return clients
                client = bytes.fromhex((message.subject or "").rpartition(".")[2]).decode()
                if message.data:
                    clients[client] = message.data
                else:
                    clients.pop(client, None)
                sequence = int(message.seq or sequence) + 1
