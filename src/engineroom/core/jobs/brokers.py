"""Taskiq brokers for each topology, chosen by ``ENGINEROOM_BROKER_URL``.

- no URL: ``InProcessBroker``, jobs run as tasks of this event loop (embedded topology);
- ``amqp://``: RabbitMQ through ``taskiq_aio_pika``, one durable quorum queue, a delay
  queue for retry back-off (per-message TTL that dead-letters back into the job queue);
- ``redis://``: a Redis stream through ``taskiq_redis.RedisStreamBroker``, chosen over the
  list broker because a stream keeps a job until a worker acknowledges it, so a worker
  that dies mid-job does not lose it (another worker reclaims it after ``idle_timeout``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aio_pika import ExchangeType
from redis.asyncio import Redis
from taskiq import AsyncBroker, BrokerMessage, InMemoryBroker
from taskiq.exceptions import UnknownTaskError
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType
from taskiq_redis import RedisStreamBroker

DEFAULT_QUEUE_NAME = "engineroom.jobs"
NETWORK_TIMEOUT_SECONDS = 10.0
REDIS_CONSUMER_GROUP = "engineroom"
REDIS_READ_BLOCK_MS = 2000
REDIS_STREAM_MAXLEN = 100_000
"""Approximate cap on the stream (acknowledged entries stay until trimmed)."""
REDIS_RECLAIM_AFTER_MS = 600_000
"""A job unacknowledged for this long is taken over by another worker."""


class InProcessBroker(InMemoryBroker):
    """The in-memory broker, with its running jobs exposed so that stop can drain them.

    ``InMemoryBroker.kick`` already runs each job as a background task; this keeps those
    tasks in a public set instead of a private one.
    """

    def __init__(self) -> None:
        # One stored result is the least the in-memory result backend accepts; results
        # are unused (jobs return None and report through logs).
        super().__init__(max_stored_results=1, cast_types=False, await_inplace=False)
        self.in_flight: set[asyncio.Task[None]] = set()

    async def kick(self, message: BrokerMessage) -> None:
        if self.find_task(message.task_name) is None:
            raise UnknownTaskError(task_name=message.task_name)
        task = asyncio.create_task(self.receiver.callback(message=message.message))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)


def create_broker(broker_url: str | None, queue_name: str) -> AsyncBroker:
    if broker_url is None:
        return InProcessBroker()
    if broker_url.startswith(("amqp://", "amqps://")):
        return _amqp_broker(broker_url, queue_name)
    if broker_url.startswith(("redis://", "rediss://")):
        return _redis_broker(broker_url, queue_name)
    raise ValueError(f"ENGINEROOM_BROKER_URL: unsupported scheme in {broker_url.split(':')[0]!r}")


def has_native_delay(broker: AsyncBroker) -> bool:
    """Whether the broker itself can hold a message back (the ``delay`` label)."""
    return isinstance(broker, AioPikaBroker)


def delay_queue_name(queue_name: str) -> str:
    return f"{queue_name}.delay"


def dead_letter_queue_name(queue_name: str) -> str:
    return f"{queue_name}.dead_letter"


def _amqp_broker(url: str, queue_name: str) -> AioPikaBroker:
    timeout = NETWORK_TIMEOUT_SECONDS
    return AioPikaBroker(
        url=url,
        # The exchange carries the queue's name so that two deployments (or two test
        # runs) on one RabbitMQ never see each other's jobs.
        exchange=Exchange(name=queue_name, type=ExchangeType.DIRECT, timeout=timeout),
        task_queues=[
            Queue(name=queue_name, type=QueueType.QUORUM, timeout=timeout, bind_timeout=timeout)
        ],
        dead_letter_queue=Queue(
            name=dead_letter_queue_name(queue_name), type=QueueType.QUORUM, timeout=timeout
        ),
        delay_queue=Queue(
            name=delay_queue_name(queue_name), type=QueueType.QUORUM, timeout=timeout
        ),
        qos=32,
        timeout=timeout,
    )


def _redis_broker(url: str, queue_name: str) -> RedisStreamBroker:
    return RedisStreamBroker(
        url,
        queue_name=queue_name,
        consumer_group_name=REDIS_CONSUMER_GROUP,
        # "0": a group created after jobs were already added still gets them.
        consumer_id="0",
        xread_block=REDIS_READ_BLOCK_MS,
        maxlen=REDIS_STREAM_MAXLEN,
        idle_timeout=REDIS_RECLAIM_AFTER_MS,
        unacknowledged_lock_timeout=30,
        socket_connect_timeout=NETWORK_TIMEOUT_SECONDS,
        # Must exceed the blocking read above, or every idle read would time out.
        socket_timeout=NETWORK_TIMEOUT_SECONDS + REDIS_READ_BLOCK_MS / 1000,
    )


def redis_lock_key(queue_name: str) -> str:
    """The reclaim lock ``RedisStreamBroker`` keeps next to the stream."""
    return f"autoclaim:{REDIS_CONSUMER_GROUP}:{queue_name}"


async def waiting_jobs(broker: AsyncBroker, queue_name: str) -> int:
    """Jobs the broker holds that no worker has taken yet (delayed retries included)."""
    if isinstance(broker, AioPikaBroker):
        return await _amqp_waiting(broker, queue_name)
    if isinstance(broker, RedisStreamBroker):
        return await _redis_waiting(broker, queue_name)
    return 0


async def _amqp_waiting(broker: AioPikaBroker, queue_name: str) -> int:
    if broker.write_conn is None:
        return 0
    total = 0
    # A channel of its own: a failed passive declare closes the channel it ran on.
    async with broker.write_conn.channel() as channel:
        for name in (queue_name, delay_queue_name(queue_name)):
            queue = await channel.declare_queue(name, passive=True, timeout=NETWORK_TIMEOUT_SECONDS)
            total += queue.declaration_result.message_count or 0
    return total


async def _redis_waiting(broker: RedisStreamBroker, queue_name: str) -> int:
    async with Redis(connection_pool=broker.connection_pool) as client:
        groups: list[dict[str, Any]] = await client.xinfo_groups(queue_name)
    for group in groups:
        name = group.get("name")
        if name in (REDIS_CONSUMER_GROUP, REDIS_CONSUMER_GROUP.encode()):
            lag = group.get("lag")
            return int(lag) if lag is not None else 0
    return 0
