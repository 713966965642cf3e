"""The Redis topology: jobs on a stream read by a consumer group, retries in a sorted set.

Built on ``taskiq_redis.RedisStreamBroker`` (connection pool, consumer group at startup)
with our own sending and reading, because a worker must never keep a job it will not run:

- a read takes one entry at a time (``COUNT 1``), so a stopping worker holds no batch;
- a delayed message (a retry with back-off) goes to a sorted set scored by its due time
  on the Redis clock, and readers move due ones onto the stream before each read, so a
  failed run is acknowledged at once instead of waiting out its back-off in a worker;
- ``release_unacknowledged`` runs when a worker stops: every entry still pending for it
  (read at the moment of the stop, or left by a job abandoned at stop) goes back on the
  stream for the other workers, instead of waiting for ``idle_timeout`` to pass;
- entries a crashed worker left pending are claimed by another after ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage, BrokerMessage
from taskiq_redis import RedisStreamBroker

from engineroom.core.jobs.listening import WorkerRun, bounded_listen

logger = structlog.get_logger("engineroom.jobs")

REDIS_CONSUMER_GROUP = "engineroom"
REDIS_READ_BLOCK_MS = 1000
"""Longest blocking read; also how late a due retry can be picked up."""
REDIS_STREAM_MAXLEN = 100_000
"""Approximate cap on the stream (acknowledged entries stay until trimmed)."""
REDIS_RECLAIM_AFTER_MS = 600_000
"""An entry a worker has held this long without acknowledging it is taken over by another."""
REDIS_RECLAIM_EVERY_SECONDS = 30.0
REDIS_RECLAIM_BATCH = 10
REDIS_PROMOTE_BATCH = 100
REDIS_RETRY_READ_SECONDS = 1.0
"""Pause before reading again after Redis was unreachable."""

# KEYS: delayed set, stream. ARGV: stream max length, batch size.
# Moves due members onto the stream; returns the ms until the next one is due, or -1.
_PROMOTE_DUE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'data', member)
  redis.call('ZREM', KEYS[1], member)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #next_due == 0 then return -1 end
return math.max(0, tonumber(next_due[2]) - now_ms)
"""

# KEYS: delayed set. ARGV: delay in ms, message. Scored on the Redis clock, like the above.
_SCHEDULE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[1]), ARGV[2])
"""

# KEYS: stream. ARGV: group, consumer, stream max length.
# Re-adds every entry pending for the consumer as a new entry, acknowledges the old one,
# then removes the consumer from the group. Returns how many entries went back.
_GIVE_BACK = """
local given = 0
while true do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 100, ARGV[2])
  if #pending == 0 then break end
  for _, item in ipairs(pending) do
    local entry = redis.call('XRANGE', KEYS[1], item[1], item[1])
    redis.call('XACK', KEYS[1], ARGV[1], item[1])
    if #entry > 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(entry[1][2]))
      given = given + 1
    end
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return given
"""

Entry = tuple[bytes, bytes]
"""A stream entry id and the taskiq message it carries."""


def redis_delayed_key(queue_name: str) -> str:
    return f"{queue_name}:delayed"


def redis_keys(queue_name: str) -> tuple[str, ...]:
    """Every key the broker creates for a queue."""
    return (queue_name, redis_delayed_key(queue_name))


class RedisJobBroker(RedisStreamBroker):
    """See the module docstring."""

    def __init__(self, url: str, queue_name: str, network_timeout: float) -> None:
        super().__init__(
            url,
            queue_name=queue_name,
            consumer_group_name=REDIS_CONSUMER_GROUP,
            # "0": a group created after jobs were already added still gets them.
            consumer_id="0",
            xread_block=REDIS_READ_BLOCK_MS,
            maxlen=REDIS_STREAM_MAXLEN,
            idle_timeout=REDIS_RECLAIM_AFTER_MS,
            xread_count=1,
            socket_connect_timeout=network_timeout,
            # Must exceed the blocking read above, or every idle read would time out.
            socket_timeout=network_timeout + REDIS_READ_BLOCK_MS / 1000,
        )
        self.delayed_key = redis_delayed_key(queue_name)
        self.run = WorkerRun()
        # Sent by digest (EVALSHA), loaded on first use; the client here opens nothing.
        scripts = Redis(connection_pool=self.connection_pool)
        self._promote_due = scripts.register_script(_PROMOTE_DUE)
        self._schedule = scripts.register_script(_SCHEDULE)
        self._give_back = scripts.register_script(_GIVE_BACK)
        self._reclaim_at = 0.0
        self._reclaim_cursor: bytes | str = "0-0"

    def attach_worker(self, run: WorkerRun) -> None:
        self.run = run

    async def kick(self, message: BrokerMessage) -> None:
        delay_ms = round(_delay_seconds(message.labels) * 1000)
        async with Redis(connection_pool=self.connection_pool) as client:
            if delay_ms > 0:
                await _run(self._schedule, client, [self.delayed_key], delay_ms, message.message)
            else:
                await client.xadd(
                    self.queue_name,
                    {b"data": message.message},
                    maxlen=REDIS_STREAM_MAXLEN,
                    approximate=True,
                )

    def listen(self) -> AsyncGenerator[AckableMessage, None]:
        return bounded_listen(self._consume(), self.run)

    async def waiting(self) -> int:
        """Entries no consumer of the group has read yet, plus delayed retries."""
        async with Redis(connection_pool=self.connection_pool) as client:
            groups: list[dict[str, Any]] = await client.xinfo_groups(self.queue_name)
            delayed = int(await _call(client.zcard(self.delayed_key)))
        for group in groups:
            if group.get("name") in (REDIS_CONSUMER_GROUP, REDIS_CONSUMER_GROUP.encode()):
                lag = group.get("lag")
                return delayed + (int(lag) if lag is not None else 0)
        return delayed

    async def release_unacknowledged(self) -> int:
        """Put every entry this consumer still holds back on the stream; see the docstring."""
        async with Redis(connection_pool=self.connection_pool) as client:
            given = await _run(
                self._give_back,
                client,
                [self.queue_name],
                REDIS_CONSUMER_GROUP,
                self.consumer_name,
                REDIS_STREAM_MAXLEN,
            )
        return int(given)

    async def _consume(self) -> AsyncGenerator[AckableMessage, None]:
        reachable = True
        async with Redis(connection_pool=self.connection_pool) as client:
            while not self.run.stop.is_set():
                try:
                    entries = await self._fetch(client)
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    # A restart or failover of Redis: keep the worker and read again.
                    # Logged on the transition only, not once a second.
                    if reachable:
                        logger.warning("job_broker_unreachable", error=repr(exc))
                    reachable = False
                    with suppress(TimeoutError):
                        async with asyncio.timeout(REDIS_RETRY_READ_SECONDS):
                            await self.run.stop.wait()
                    continue
                reachable = True
                if self.run.stop.is_set():
                    # Read after the stop began: release_unacknowledged hands them back.
                    return
                for entry_id, data in entries:
                    yield AckableMessage(data=data, ack=self._acknowledger(entry_id))

    async def _fetch(self, client: Redis) -> list[Entry]:
        next_due_ms = int(
            await _run(
                self._promote_due,
                client,
                [self.delayed_key, self.queue_name],
                REDIS_STREAM_MAXLEN,
                REDIS_PROMOTE_BATCH,
            )
        )
        now = asyncio.get_running_loop().time()
        if now >= self._reclaim_at:
            self._reclaim_at = now + REDIS_RECLAIM_EVERY_SECONDS
            claimed = await self._reclaim(client)
            if claimed:
                return claimed
        block = REDIS_READ_BLOCK_MS
        if next_due_ms >= 0:
            # BLOCK 0 would wait forever.
            block = max(1, min(block, next_due_ms))
        reply = await client.xreadgroup(
            REDIS_CONSUMER_GROUP,
            self.consumer_name,
            {self.queue_name: ">"},
            count=1,
            block=block,
        )
        return _read_entries(reply)

    async def _reclaim(self, client: Redis) -> list[Entry]:
        reply = await client.xautoclaim(
            self.queue_name,
            REDIS_CONSUMER_GROUP,
            self.consumer_name,
            min_idle_time=REDIS_RECLAIM_AFTER_MS,
            start_id=self._reclaim_cursor,
            count=REDIS_RECLAIM_BATCH,
        )
        self._reclaim_cursor = reply[0]
        return _entries(reply[1])

    def _acknowledger(self, entry_id: bytes) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            async with Redis(connection_pool=self.connection_pool) as client:
                await client.xack(self.queue_name, REDIS_CONSUMER_GROUP, entry_id)

        return ack


async def _call(result: Awaitable[Any] | Any) -> Any:
    """Await a redis-py command result (typed as maybe-awaitable for the sync client)."""
    return await result


async def _run(
    script: AsyncScript, client: Redis, keys: list[str], *args: str | int | bytes
) -> Any:
    return await script(keys=keys, args=list(args), client=client)


def _delay_seconds(labels: Mapping[str, Any]) -> float:
    value = labels.get("delay")
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def _read_entries(reply: Any) -> list[Entry]:
    """Entries of an XREADGROUP reply (a list of streams in RESP2, a mapping in RESP3)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (s[1] for s in reply)
    found: list[Entry] = []
    for stream_entries in streams:
        found.extend(_entries(stream_entries))
    return found


def _entries(raw: Any) -> list[Entry]:
    found: list[Entry] = []
    for item in raw or ():
        # A claimed entry deleted meanwhile comes back without fields (Redis < 7).
        if not item or item[0] is None or not item[1]:
            continue
        entry_id, fields = item[0], item[1]
        if isinstance(fields, list):
            # RESP3 returns a stream's entries as [id, [field, value, ...]] in places.
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        found.append((entry_id, fields.get(b"data", b"")))
    return found
