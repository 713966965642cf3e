"""Taskiq brokers for each topology, chosen by ``ENGINEROOM_BROKER_URL``.

- no URL: ``InProcessBroker``, jobs run as tasks of this event loop (embedded topology);
- ``amqp://``: RabbitMQ through ``taskiq_aio_pika``, one durable quorum queue, a delay
  queue for retry back-off (per-message TTL that dead-letters back into the job queue);
- ``redis://``: a Redis stream read by a consumer group (``RedisJobBroker``), chosen over
  a list because a stream keeps a job until a worker acknowledges it, so a worker that
  dies mid-job does not lose it.

The two network brokers hand messages to a worker through ``bounded_listen``, so that
stopping a worker never waits on the broker client for longer than a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from aio_pika import ExchangeType
from taskiq import AckableMessage, AsyncBroker, BrokerMessage, InMemoryBroker
from taskiq.exceptions import UnknownTaskError
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType

from engineroom.core.jobs.listening import WorkerRun, bounded_listen
from engineroom.core.jobs.redis_stream import RedisJobBroker

DEFAULT_QUEUE_NAME = "engineroom.jobs"
NETWORK_TIMEOUT_SECONDS = 10.0


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


class AmqpJobBroker(AioPikaBroker):
    """``AioPikaBroker`` consumed through ``bounded_listen``.

    Nothing to release at stop: RabbitMQ requeues unacknowledged deliveries when the
    worker's channel closes.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.run = WorkerRun()

    def attach_worker(self, run: WorkerRun) -> None:
        self.run = run

    def listen(self) -> AsyncGenerator[AckableMessage, None]:
        return bounded_listen(super().listen(), self.run)

    async def release_unacknowledged(self) -> int:
        return 0


def create_broker(broker_url: str | None, queue_name: str) -> AsyncBroker:
    if broker_url is None:
        return InProcessBroker()
    if broker_url.startswith(("amqp://", "amqps://")):
        return _amqp_broker(broker_url, queue_name)
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisJobBroker(broker_url, queue_name, NETWORK_TIMEOUT_SECONDS)
    raise ValueError(f"ENGINEROOM_BROKER_URL: unsupported scheme in {broker_url.split(':')[0]!r}")


def has_native_delay(broker: AsyncBroker) -> bool:
    """Whether the broker itself can hold a message back (the ``delay`` label)."""
    return isinstance(broker, AmqpJobBroker | RedisJobBroker)


def attach_worker(broker: AsyncBroker, run: WorkerRun) -> None:
    """Let a network broker's consumption see the worker's stop and abandonment."""
    if isinstance(broker, AmqpJobBroker | RedisJobBroker):
        broker.attach_worker(run)


async def release_unacknowledged(broker: AsyncBroker) -> int:
    """Hand back to the broker the messages a stopped worker will not acknowledge."""
    if isinstance(broker, AmqpJobBroker | RedisJobBroker):
        return await broker.release_unacknowledged()
    return 0


def delay_queue_name(queue_name: str) -> str:
    return f"{queue_name}.delay"


def dead_letter_queue_name(queue_name: str) -> str:
    return f"{queue_name}.dead_letter"


def _amqp_broker(url: str, queue_name: str) -> AmqpJobBroker:
    timeout = NETWORK_TIMEOUT_SECONDS
    return AmqpJobBroker(
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


async def waiting_jobs(broker: AsyncBroker, queue_name: str) -> int:
    """Jobs the broker holds that no worker has taken yet (delayed retries included)."""
    if isinstance(broker, AmqpJobBroker):
        return await _amqp_waiting(broker, queue_name)
    if isinstance(broker, RedisJobBroker):
        return await broker.waiting()
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
