"""Jobs across processes' worth of separation: a "web" Jobs enqueues on a real broker and
a second Jobs instance running ``run_worker`` (as ``engineroom worker`` does) consumes.

Each test uses its own queue name and removes the queues/keys it created.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
import redis.asyncio as aioredis

from engineroom.core.jobs import JobContext, Jobs, JobSpec
from engineroom.core.jobs.brokers import (
    dead_letter_queue_name,
    delay_queue_name,
    redis_lock_key,
)
from engineroom.settings import Settings
from tests.support import services

WAIT_SECONDS = 20.0


@dataclass
class Recorder:
    calls: list[tuple[JobContext, dict[str, Any]]] = field(default_factory=list)
    fail_first_attempt: bool = False

    async def __call__(self, ctx: JobContext, **kwargs: Any) -> None:
        self.calls.append((ctx, kwargs))
        if self.fail_first_attempt and ctx.attempt == 1:
            raise ConnectionError("first attempt fails")


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not predicate():  # noqa: ASYNC110 - polling another component's state
            await asyncio.sleep(0.02)


def make_jobs(settings: Settings, queue: str, recorder: Recorder, max_retries: int = 3) -> Jobs:
    # retry_delay > 0 so that retries take the broker's delay path (the AMQP delay queue).
    jobs = Jobs(settings, object(), queue_name=queue, retry_delay=0.2)  # type: ignore[arg-type]
    jobs.register(JobSpec("demo.record", recorder, max_retries=max_retries))
    return jobs


@contextlib.asynccontextmanager
async def running_worker(jobs: Jobs) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(jobs.run_worker(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_SECONDS)


async def exercise_broker(settings: Settings, queue: str) -> None:
    """The behaviour every broker must show; shared by the RabbitMQ and Redis tests."""
    web_recorder, worker_recorder = Recorder(), Recorder(fail_first_attempt=True)
    web = make_jobs(settings, queue, web_recorder)
    worker = make_jobs(settings, queue, worker_recorder)
    await web.start()
    try:
        # Queued while no worker runs: the broker keeps them.
        first = await web.enqueue("demo.record", n=1, tags=["a", "b"])
        second = await web.enqueue("demo.record", n=2, tags=[])
        assert await web.sample_queue_depth() == 2

        async with running_worker(worker) as task:
            await wait_until(lambda: len(worker_recorder.calls) >= 4 or task.done())
            assert not task.done(), task

        # Each job failed once on the worker, went back through the broker, then succeeded.
        runs = sorted(
            (ctx.job_id, ctx.attempt, kwargs["n"]) for ctx, kwargs in worker_recorder.calls
        )
        assert runs == sorted([(first, 1, 1), (first, 2, 1), (second, 1, 2), (second, 2, 2)])
        assert {tuple(kw["tags"]) for _, kw in worker_recorder.calls} == {("a", "b"), ()}
        # The web process only sends.
        assert web_recorder.calls == []
        assert await web.sample_queue_depth() == 0
    finally:
        await web.stop()


@pytest.mark.rabbitmq
async def test_rabbitmq_web_enqueues_and_worker_consumes(
    settings: Settings, rabbitmq_url: str
) -> None:
    queue = f"engineroom-test-{services.random_suffix()}"
    try:
        await exercise_broker(settings.model_copy(update={"broker_url": rabbitmq_url}), queue)
    finally:
        await delete_rabbitmq_queue(rabbitmq_url, queue)


@pytest.mark.redis
async def test_redis_web_enqueues_and_worker_consumes(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    queue = f"{redis_prefix}jobs"
    try:
        await exercise_broker(settings.model_copy(update={"broker_url": redis_url}), queue)
    finally:
        client = aioredis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
        try:
            await client.delete(queue, redis_lock_key(queue))
        finally:
            await client.aclose()


@pytest.mark.rabbitmq
async def test_worker_stop_leaves_unstarted_jobs_on_the_queue(
    settings: Settings, rabbitmq_url: str
) -> None:
    """A stopped worker takes nothing with it: the next worker gets the job."""
    queue = f"engineroom-test-{services.random_suffix()}"
    broker_settings = settings.model_copy(update={"broker_url": rabbitmq_url})
    try:
        async with running_worker(make_jobs(broker_settings, queue, Recorder())):
            pass
        web = make_jobs(broker_settings, queue, Recorder())
        await web.start()
        try:
            job_id = await web.enqueue("demo.record", n=7)
            recorder = Recorder()
            async with running_worker(make_jobs(broker_settings, queue, recorder)):
                await wait_until(lambda: len(recorder.calls) == 1)
        finally:
            await web.stop()
        assert [(ctx.job_id, kw) for ctx, kw in recorder.calls] == [(job_id, {"n": 7})]
    finally:
        await delete_rabbitmq_queue(rabbitmq_url, queue)


async def delete_rabbitmq_queue(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    try:
        for name in (queue, delay_queue_name(queue), dead_letter_queue_name(queue)):
            channel = await connection.channel()
            await channel.queue_delete(name, timeout=10)
            await channel.close()
        channel = await connection.channel()
        await channel.exchange_delete(queue, timeout=10)
        await channel.close()
    finally:
        await connection.close()
