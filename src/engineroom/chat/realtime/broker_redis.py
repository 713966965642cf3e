"""The Redis broker: fan-out with pub/sub, history in streams, presence in hashes.

Keys and pub/sub channels all start with the configured prefix:

- ``{prefix}meta:{channel}``: hash with the stream's epoch ``e`` and top offset ``s``;
- ``{prefix}stream:{channel}``: a stream whose entry ids are the offsets (``<offset>-0``),
  capped at the namespace's history size, expiring ``history_ttl`` after the last
  publication; each entry keeps the publication body ``d`` and the Redis time ``t`` (ms)
  it was added, so entries older than the TTL are ignored on read;
- ``{prefix}presence:{channel}`` (hash client -> info) with
  ``{prefix}presence-exp:{channel}`` (sorted set client -> expiry): entries live
  ``presence_ttl`` unless the owning process refreshes them, so a crashed process's
  clients disappear by themselves;
- pub/sub ``{prefix}ch:{channel}`` for publications and join/leave, ``{prefix}control``
  for commands to every process.

Publishing runs one Lua script: it assigns the offset, appends to the stream and publishes
the push text it builds from the pre-encoded head and body, all atomically, so processes
receive publications of a channel in offset order and the stream and the deliveries never
disagree. The epoch and the clock come from Redis, not from the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Sequence

import orjson
import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from engineroom.chat.realtime.broker import (
    META_TTL_SECONDS,
    BrokerError,
    BrokerHandler,
    HistoryPage,
    StoredPublication,
    StreamPosition,
    check_since,
    select,
)
from engineroom.chat.realtime.channels import NamespaceOptions
from engineroom.chat.realtime.protocol import publication_head, publication_push

logger = structlog.get_logger("engineroom.chat.realtime")

_SOCKET_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 2.0
_SUBSCRIBE_TIMEOUT = 5.0
_RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
_PUBLICATION = b"p"
_JOIN_LEAVE = b"j"

_PUBLISH = """
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('del', KEYS[2])
  redis.call('hset', KEYS[1], 'e', epoch, 's', 0)
end
local offset = redis.call('hincrby', KEYS[1], 's', 1)
local now = redis.call('time')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0', 'd', ARGV[3], 't', ms)
redis.call('pexpire', KEYS[2], ARGV[5])
redis.call('expire', KEYS[1], ARGV[7])
local push = ARGV[2] .. '"offset":' .. offset .. ',' .. ARGV[3] .. '}}}'
redis.call('publish', ARGV[1], 'p' .. offset .. ' ' .. epoch .. ' ' .. push)
return {offset, epoch}
"""

_HISTORY = """
local epoch = redis.call('hget', KEYS[1], 'e')
local top = 0
if not epoch then
  epoch = ARGV[2]
  redis.call('del', KEYS[2])
  redis.call('hset', KEYS[1], 'e', epoch, 's', 0)
  redis.call('expire', KEYS[1], ARGV[3])
else
  top = tonumber(redis.call('hget', KEYS[1], 's'))
end
local entries = {}
if ARGV[4] == '1' then
  entries = redis.call('xrange', KEYS[2], '(' .. ARGV[1] .. '-0', '+')
end
local now = redis.call('time')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return {epoch, top, ms, entries}
"""

_ADD_PRESENCE = """
local now = tonumber(redis.call('time')[1])
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('expire', KEYS[1], ARGV[3])
redis.call('expire', KEYS[2], ARGV[3])
return 1
"""

_PRESENCE = """
local now = tonumber(redis.call('time')[1])
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', now)
if #expired > 0 then
  redis.call('hdel', KEYS[1], unpack(expired))
  redis.call('zremrangebyscore', KEYS[2], '-inf', now)
end
return redis.call('hgetall', KEYS[1])
"""


@contextlib.asynccontextmanager
async def _redis_errors() -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BrokerError(str(exc)) from exc


class RedisBroker:
    def __init__(self, url: str, *, prefix: str, meta_ttl: int = META_TTL_SECONDS) -> None:
        self._prefix = prefix
        self._meta_ttl = meta_ttl
        self._redis = Redis.from_url(
            url, socket_timeout=_SOCKET_TIMEOUT, socket_connect_timeout=_CONNECT_TIMEOUT
        )
        # The pub/sub connection blocks on reads for as long as nothing is published.
        self._pubsub_pool: ConnectionPool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_keepalive=True,
            client_name=f"{prefix}pubsub",
        )
        self._publish = self._redis.register_script(_PUBLISH)
        self._history = self._redis.register_script(_HISTORY)
        self._add_presence = self._redis.register_script(_ADD_PRESENCE)
        self._presence = self._redis.register_script(_PRESENCE)
        self._channel_prefix = f"{prefix}ch:".encode()
        self._control = f"{prefix}control".encode()
        self._subscribed: set[bytes] = set()
        self._pending: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._connection: Connection | None = None
        self._send_lock = asyncio.Lock()
        self._handler: BrokerHandler | None = None
        self._listener: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    # ---- keys ------------------------------------------------------------------------

    def _pubsub_name(self, channel: str) -> bytes:
        return self._channel_prefix + channel.encode()

    def _keys(self, kind: str, channel: str) -> str:
        return f"{self._prefix}{kind}:{channel}"

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self._subscribed.add(self._control)
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        try:
            async with asyncio.timeout(_SUBSCRIBE_TIMEOUT):
                await self._connected.wait()
        except TimeoutError:
            await self.close()
            raise BrokerError("cannot reach Redis for the chat broker") from None

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._disconnect()
        await self._redis.aclose()
        await self._pubsub_pool.aclose()

    async def ping(self) -> None:
        async with _redis_errors():
            await self._redis.ping()

    # ---- pub/sub ---------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        name = self._pubsub_name(channel)
        confirmed = asyncio.get_running_loop().create_future()
        self._pending.setdefault(name, deque()).append(confirmed)
        self._subscribed.add(name)
        await self._send("SUBSCRIBE", name)
        try:
            async with asyncio.timeout(_SUBSCRIBE_TIMEOUT):
                await confirmed
        except TimeoutError:
            raise BrokerError(f"Redis did not confirm the subscription to {channel}") from None

    async def unsubscribe(self, channel: str) -> None:
        name = self._pubsub_name(channel)
        self._subscribed.discard(name)
        await self._send("UNSUBSCRIBE", name)

    async def _send(self, *args: str | bytes) -> None:
        """Write a command on the pub/sub connection, in call order; lost ones are resent
        when the connection comes back (every wanted channel is subscribed again)."""
        async with self._send_lock:
            connection = self._connection
            if connection is None:
                return
            try:
                await connection.send_command(*args)
            except (RedisError, OSError):
                logger.warning("chat_pubsub_send_failed", exc_info=True)

    async def _listen(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect(reconnected=attempt > 0)
                attempt = 0
                await self._read()
            except (RedisError, OSError) as exc:
                logger.warning("chat_pubsub_disconnected", error=repr(exc))
            self._connected.clear()
            await self._disconnect()
            await asyncio.sleep(_RECONNECT_DELAYS[min(attempt, len(_RECONNECT_DELAYS) - 1)])
            attempt += 1

    async def _connect(self, *, reconnected: bool) -> None:
        connection: Connection = self._pubsub_pool.make_connection()  # type: ignore[no-untyped-call]
        await connection.connect()  # type: ignore[no-untyped-call]
        async with self._send_lock:
            self._connection = connection
            await connection.send_command("SUBSCRIBE", *self._subscribed)
        self._connected.set()
        if reconnected and self._handler is not None:
            self._handler.handle_reset()

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(RedisError, OSError):
                await connection.disconnect()

    async def _read(self) -> None:
        connection = self._connection
        assert connection is not None
        while True:
            # math.inf: wait for as long as nothing is published (not the socket timeout).
            response = await connection.read_response(timeout=math.inf, push_request=True)
            if not isinstance(response, list) or len(response) < 3:
                continue
            kind, name, payload = response[0], response[1], response[2]
            if kind == b"message":
                self._dispatch(name, payload)
            elif kind == b"subscribe":
                waiting = self._pending.get(name)
                if waiting:
                    future = waiting.popleft()
                    if not waiting:
                        del self._pending[name]
                    if not future.done():
                        future.set_result(None)

    def _dispatch(self, name: bytes, payload: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if name == self._control:
            message = orjson.loads(payload)
            if isinstance(message, dict):
                handler.handle_control(message)
            return
        channel = name[len(self._channel_prefix) :].decode()
        kind = payload[:1]
        if kind == _PUBLICATION:
            first = payload.index(b" ")
            second = payload.index(b" ", first + 1)
            handler.handle_publication(
                channel,
                int(payload[1:first]),
                payload[first + 1 : second].decode(),
                payload[second + 1 :].decode(),
            )
        elif kind == _JOIN_LEAVE:
            handler.handle_join_leave(channel, payload[1:].decode())

    # ---- publications and history ----------------------------------------------------

    async def publish(self, channel: str, body: bytes, options: NamespaceOptions) -> StreamPosition:
        head = publication_head(channel)
        async with _redis_errors():
            if not options.recoverable:
                push = publication_push(head, 0, body).encode()
                await self._redis.publish(self._pubsub_name(channel), b"p0  " + push)
                return StreamPosition(0, "")
            offset, epoch = await self._publish(
                keys=[self._keys("meta", channel), self._keys("stream", channel)],
                args=[
                    self._pubsub_name(channel),
                    head,
                    body,
                    options.history_size,
                    int(options.history_ttl * 1000),
                    secrets.token_hex(4),
                    self._meta_ttl,
                ],
            )
        return StreamPosition(int(offset), epoch.decode())

    async def publish_join_leave(self, channel: str, push: str) -> None:
        async with _redis_errors():
            await self._redis.publish(self._pubsub_name(channel), _JOIN_LEAVE + push.encode())

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
        want_entries = since is not None or limit != 0
        async with _redis_errors():
            epoch, top, now_ms, entries = await self._history(
                keys=[self._keys("meta", channel), self._keys("stream", channel)],
                args=[
                    since.offset if since is not None else 0,
                    secrets.token_hex(4),
                    self._meta_ttl,
                    "1" if want_entries else "0",
                ],
            )
        position = StreamPosition(int(top), epoch.decode())
        oldest = int(now_ms) - int(options.history_ttl * 1000)
        kept = _live_entries(entries, oldest)
        if since is not None:
            check_since(since, position, kept[0].offset if kept else None)
        return HistoryPage(select(kept, limit, reverse), position)

    async def remove_history(self, channel: str) -> None:
        async with _redis_errors():
            await self._redis.delete(self._keys("stream", channel))

    # ---- presence --------------------------------------------------------------------

    async def add_presence(self, channel: str, client_id: str, info: bytes, ttl: float) -> None:
        async with _redis_errors():
            await self._add_presence(
                keys=[self._keys("presence", channel), self._keys("presence-exp", channel)],
                args=[client_id, info, max(1, int(ttl))],
            )

    async def remove_presence(self, channel: str, client_id: str) -> None:
        async with _redis_errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys("presence", channel), client_id)
            pipe.zrem(self._keys("presence-exp", channel), client_id)
            await pipe.execute()

    async def presence(self, channel: str) -> dict[str, bytes]:
        async with _redis_errors():
            flat = await self._presence(
                keys=[self._keys("presence", channel), self._keys("presence-exp", channel)]
            )
        return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}

    async def publish_control(self, message: dict[str, object]) -> None:
        async with _redis_errors():
            await self._redis.publish(self._control, orjson.dumps(message))


def _live_entries(entries: Sequence[list[object]], oldest_ms: int) -> list[StoredPublication]:
    """Stream entries as publications, minus those older than the history TTL."""
    kept: list[StoredPublication] = []
    for entry_id, fields in entries:
        assert isinstance(entry_id, bytes)
        assert isinstance(fields, list)
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        if int(values[b"t"]) < oldest_ms:
            continue
        kept.append(StoredPublication(int(entry_id.split(b"-")[0]), values[b"d"]))
    return kept
