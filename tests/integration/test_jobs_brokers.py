"""Jobs across processes' worth of separation: a "web" Jobs enqueues on a real broker and
a second Jobs instance running ``run_worker`` (as ``engineroom worker`` does) consumes.

Each test uses its own queue name and removes the queues/keys it created.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from engineroom.core.jobs import JobContext, Jobs, JobSpec
from engineroom.core.jobs.brokers import dead_letter_queue_name, delay_queue_name
from engineroom.core.jobs.redis_stream import REDIS_CONSUMER_GROUP, redis_delayed_key, redis_keys
from engineroom.settings import Settings
from tests.support import services

WAIT_SECONDS = 20.0


@dataclass
class Recorder:
    calls: list[tuple[JobContext, dict[str, Any]]] = field(default_factory=list)
    fail_first_attempt: bool = False
    hang: bool = False
    """Every run waits until it is cancelled."""
    cancelled: int = 0

    async def __call__(self, ctx: JobContext, **kwargs: Any) -> None:
        self.calls.append((ctx, kwargs))
        if self.fail_first_attempt and ctx.attempt == 1:
            raise ConnectionError("first attempt fails")
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not predicate():  # noqa: ASYNC110 - polling another component's state
            await asyncio.sleep(0.02)


async def wait_for_depth(jobs: Jobs, expected: int) -> None:
    """The broker may count a message handed back by a stopped worker a moment later."""
    async with asyncio.timeout(WAIT_SECONDS):
        while await jobs.sample_queue_depth() != expected:  # noqa: ASYNC110 - broker state
            await asyncio.sleep(0.05)


def make_jobs(
    settings: Settings, queue: str, recorder: Recorder, max_retries: int = 3, **options: Any
) -> Jobs:
    # retry_delay > 0 so that retries take the broker's delay path (the AMQP delay queue).
    options.setdefault("retry_delay", 0.2)
    jobs = Jobs(settings, object(), queue_name=queue, **options)  # type: ignore[arg-type]
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
        # Not asyncio.wait_for: it waits without limit for a cancelled task to end.
        await asyncio.wait({task}, timeout=WAIT_SECONDS)
        if not task.done():
            stacks = every_task_stack()
            task.cancel()
            pytest.fail(f"the worker did not stop within {WAIT_SECONDS}s:\n{stacks}")
        task.result()


def every_task_stack() -> str:
    """Where each task of the loop waits: what a hung stop needs to be diagnosed."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(file=out)
    return out.getvalue()


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


async def exercise_stop_handover(settings: Settings, queue: str) -> None:
    """A job still running when its worker stops is cut short and goes to the next worker."""
    web = make_jobs(settings, queue, Recorder())
    await web.start()
    try:
        job_id = await web.enqueue("demo.record", n=1)
        stuck = Recorder(hang=True)
        with capture_logs() as logs:
            async with running_worker(make_jobs(settings, queue, stuck, stop_timeout=0.2)):
                await wait_until(lambda: len(stuck.calls) == 1)
        assert [e["count"] for e in logs if e["event"] == "jobs_abandoned_at_stop"] == [1]
        assert stuck.cancelled == 1
        # Not acknowledged: the broker holds the job again, at once.
        await wait_for_depth(web, 1)

        recorder = Recorder()
        async with running_worker(make_jobs(settings, queue, recorder)):
            await wait_until(lambda: len(recorder.calls) == 1)
        assert [(ctx.job_id, ctx.attempt) for ctx, _ in recorder.calls] == [(job_id, 1)]
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
            await client.delete(*redis_keys(queue))
        finally:
            await client.aclose()


@pytest.mark.rabbitmq
async def test_rabbitmq_stop_hands_an_unfinished_job_to_the_next_worker(
    settings: Settings, rabbitmq_url: str
) -> None:
    queue = f"engineroom-test-{services.random_suffix()}"
    try:
        await exercise_stop_handover(
            settings.model_copy(update={"broker_url": rabbitmq_url}), queue
        )
    finally:
        await delete_rabbitmq_queue(rabbitmq_url, queue)


@pytest.mark.redis
async def test_redis_stop_hands_an_unfinished_job_to_the_next_worker(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    """Without the hand-back, the job would wait ten minutes (the reclaim idle time)."""
    queue = f"{redis_prefix}jobs"
    client = aioredis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        await exercise_stop_handover(settings.model_copy(update={"broker_url": redis_url}), queue)
        # Stopped workers leave the consumer group.
        assert await client.xinfo_consumers(queue, REDIS_CONSUMER_GROUP) == []
    finally:
        await client.delete(*redis_keys(queue))
        await client.aclose()


@pytest.mark.redis
async def test_a_redis_retry_waits_in_redis_not_in_a_worker(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    """The back-off holds no worker: the failed run is acknowledged, the retry is counted
    in the depth, and a worker stopped meanwhile leaves it to the next one."""
    queue = f"{redis_prefix}jobs"
    delayed = redis_delayed_key(queue)
    broker_settings = settings.model_copy(update={"broker_url": redis_url})
    client = aioredis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    web = make_jobs(broker_settings, queue, Recorder())
    await web.start()
    try:
        job_id = await web.enqueue("demo.record", n=1)
        failing = Recorder(fail_first_attempt=True)
        async with running_worker(make_jobs(broker_settings, queue, failing, retry_delay=60.0)):
            await wait_until(lambda: len(failing.calls) == 1)

            async def retry_held_by_redis_alone() -> bool:
                # Scheduled, and the failed run acknowledged (that comes right after).
                pending = await client.xpending(queue, REDIS_CONSUMER_GROUP)
                return await client.zcard(delayed) == 1 and pending["pending"] == 0

            async with asyncio.timeout(WAIT_SECONDS):
                while not await retry_held_by_redis_alone():  # noqa: ASYNC110 - broker state
                    await asyncio.sleep(0.02)
            assert await web.sample_queue_depth() == 1
        [(message, due_ms)] = await client.zrange(delayed, 0, -1, withscores=True)
        seconds, micros = await client.time()
        # Due after the first back-off step, on the Redis clock.
        assert 55_000 < due_ms - (seconds * 1000 + micros // 1000) <= 60_000

        # As if the minute had passed.
        await client.zadd(delayed, {message: 0}, xx=True)
        retried = Recorder()
        async with running_worker(make_jobs(broker_settings, queue, retried)):
            await wait_until(lambda: len(retried.calls) == 1)
        assert [(ctx.job_id, ctx.attempt) for ctx, _ in retried.calls] == [(job_id, 2)]
        assert await web.sample_queue_depth() == 0
    finally:
        await web.stop()
        await client.delete(*redis_keys(queue))
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
