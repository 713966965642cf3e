"""Consuming a broker with a stop that always finishes.

Taskiq's ``Receiver`` stops by cancelling the pending ``anext()`` of ``broker.listen()``
and then awaits that task and ``aclose()`` with no time limit, under a shielded cancel
scope. A broker client that loses the cancellation therefore hangs the worker for good:
on Python 3.11, ``asyncio.wait_for`` returns the inner result instead of raising when a
cancellation arrives in the same loop iteration as that result, and both redis-py (around
every socket write) and aiormq use it. Cancelling the worker does not help either, since
the wait is shielded.

``bounded_listen`` sits between the Receiver and the broker's own generator: it pulls each
message in a task of its own and only ever waits for that task with ``asyncio.wait`` and a
timeout, which needs no cancellation to return. A pull that outlives the stop is left
behind (``WorkerRun.stranded``), to be cancelled again once the broker's connections are
closed. Messages such a pull receives are never acknowledged, so the broker delivers them
again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from taskiq import AckableMessage
from taskiq.utils import maybe_awaitable

logger = structlog.get_logger("engineroom.jobs")

T = TypeVar("T")
D = TypeVar("D", bytes, AckableMessage)
"""What a taskiq broker's ``listen`` yields."""

CLOSE_TIMEOUT_SECONDS = 5.0
"""How long stopping waits for one broker operation (a pull, a close, a shutdown)."""


@dataclass
class WorkerRun:
    """State shared by one ``Jobs.run_worker`` call and the broker it consumes."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    abandoned: bool = False
    """Set once the worker gave up on its running jobs: their messages stay unacknowledged."""
    ack_timeout: float = 10.0
    close_timeout: float = CLOSE_TIMEOUT_SECONDS
    stranded: set[asyncio.Future[Any]] = field(default_factory=set)
    """Broker operations that did not finish when asked to; cancelled again at the end."""

    def strand(self, task: asyncio.Future[Any]) -> None:
        self.stranded.add(task)
        task.add_done_callback(self.stranded.discard)


async def finish_within(work: Awaitable[T], seconds: float) -> asyncio.Future[T]:
    """Give ``work`` ``seconds`` to finish, then cancel it and give it as long again.

    Returns its future, which may still be pending: then the work has swallowed its
    cancellation and is the caller's to keep track of. Waiting with ``asyncio.wait``
    rather than ``asyncio.timeout`` keeps the bound even in that case.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task}, timeout=seconds)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        # The caller is cancelled: the work goes with it.
        task.cancel()
        raise
    return task


async def bounded_listen(
    source: AsyncGenerator[D, None], run: WorkerRun
) -> AsyncGenerator[D, None]:
    """Yield what ``source`` yields; closing or cancelling this returns in bounded time."""
    pull: asyncio.Future[D] | None = None
    try:
        while True:
            pull = asyncio.create_task(_next(source))
            try:
                # Shielded: a cancellation lands here, never inside the broker client.
                delivery = await asyncio.shield(pull)
            except StopAsyncIteration:
                pull = None
                return
            pull = None
            yield _guarded(delivery, run)
    finally:
        await _close(source, pull, run)


async def _next(source: AsyncIterator[T]) -> T:
    return await anext(source)


async def _close(
    source: AsyncGenerator[D, None], pull: asyncio.Future[D] | None, run: WorkerRun
) -> None:
    if pull is not None:
        # A message this pull still receives is dropped unacknowledged: the broker
        # redelivers it (RabbitMQ when the channel closes, Redis through release).
        pull.cancel()
        pull = await finish_within(pull, run.close_timeout)
        if not pull.done():
            logger.warning("job_broker_pull_stuck_at_stop")
            run.strand(pull)
            # Closing a generator that is still running raises; it ends with its task.
            return
    closing = await finish_within(source.aclose(), run.close_timeout)
    if not closing.done():
        logger.warning("job_broker_close_stuck_at_stop")
        run.strand(closing)


def _guarded(delivery: D, run: WorkerRun) -> D:
    if not isinstance(delivery, AckableMessage):
        return delivery
    broker_ack = delivery.ack

    async def ack() -> None:
        if run.abandoned:
            # The job was cut short at stop: leave the message for redelivery.
            return
        async with asyncio.timeout(run.ack_timeout):
            await maybe_awaitable(broker_ack())

    return AckableMessage(data=delivery.data, ack=ack)
