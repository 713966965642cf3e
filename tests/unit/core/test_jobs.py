"""The in-process job queue (embedded topology): background runs, retries, draining;
and the bounded consumption every broker worker goes through."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs
from taskiq import AckableMessage
from taskiq.utils import maybe_awaitable

from engineroom.core.jobs import JobContext, Jobs, JobSpec
from engineroom.core.jobs.listening import WorkerRun, bounded_listen, finish_within
from engineroom.settings import Settings

WAIT_SECONDS = 10.0
OUTCOMES = {"job_done", "job_failed_will_retry", "job_gave_up"}


@dataclass
class StandInPlatform:
    """What a job sees as ``ctx.platform`` until the full Platform is needed."""

    calls: list[tuple[JobContext, dict[str, Any]]] = field(default_factory=list)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll state the code under test owns, with a generous limit."""
    async with asyncio.timeout(WAIT_SECONDS):
        while not predicate():  # noqa: ASYNC110 - there is no event to wait on
            await asyncio.sleep(0.01)


def make_jobs(settings: Settings, *specs: JobSpec, **options: Any) -> Jobs:
    options.setdefault("retry_delay", 0)
    jobs = Jobs(settings, StandInPlatform(), **options)  # type: ignore[arg-type]
    for spec in specs:
        jobs.register(spec)
    return jobs


def recording(
    calls: list[tuple[JobContext, dict[str, Any]]],
    before: Callable[[JobContext], Awaitable[None]] | None = None,
) -> Callable[..., Awaitable[None]]:
    async def job(ctx: JobContext, **kwargs: Any) -> None:
        calls.append((ctx, kwargs))
        if before is not None:
            await before(ctx)

    return job


@pytest.fixture
async def started() -> AsyncIterator[list[Jobs]]:
    """Jobs instances a test starts; stopped afterwards even if the test fails."""
    instances: list[Jobs] = []
    yield instances
    for jobs in instances:
        await jobs.stop()


async def test_enqueue_returns_before_the_job_runs_and_passes_kwargs(
    settings: Settings, started: list[Jobs]
) -> None:
    calls: list[tuple[JobContext, dict[str, Any]]] = []
    release = asyncio.Event()

    async def hold(_ctx: JobContext) -> None:
        await release.wait()

    jobs = make_jobs(settings, JobSpec("demo.hold", recording(calls, hold)))
    await jobs.start()
    started.append(jobs)

    job_id = await jobs.enqueue("demo.hold", user="u1", ids=[1, 2], nested={"a": None})

    # enqueue returned while the job is still blocked: it runs in the background.
    await wait_until(lambda: len(calls) == 1)
    assert jobs.queue_depth() == 1
    ctx, kwargs = calls[0]
    assert kwargs == {"user": "u1", "ids": [1, 2], "nested": {"a": None}}
    assert ctx.job_id == job_id
    assert ctx.job_name == "demo.hold"
    assert ctx.attempt == 1
    assert ctx.settings is settings

    release.set()
    await wait_until(lambda: jobs.queue_depth() == 0)


async def test_queue_depth_counts_every_unfinished_job(
    settings: Settings, started: list[Jobs]
) -> None:
    release = asyncio.Event()

    async def hold(_ctx: JobContext) -> None:
        await release.wait()

    jobs = make_jobs(settings, JobSpec("demo.hold", recording([], hold)))
    await jobs.start()
    started.append(jobs)
    assert jobs.queue_depth() == 0

    ids = {await jobs.enqueue("demo.hold", n=n) for n in range(5)}

    assert len(ids) == 5
    assert jobs.queue_depth() == 5
    release.set()
    await wait_until(lambda: jobs.queue_depth() == 0)


async def test_failing_job_is_retried_max_retries_times_then_given_up(
    settings: Settings, started: list[Jobs]
) -> None:
    calls: list[tuple[JobContext, dict[str, Any]]] = []

    async def fail(_ctx: JobContext) -> None:
        raise RuntimeError("smtp down")

    jobs = make_jobs(settings, JobSpec("demo.fail", recording(calls, fail), max_retries=2))
    await jobs.start()
    started.append(jobs)

    with capture_logs() as logs:
        job_id = await jobs.enqueue("demo.fail", x=1)
        await wait_until(lambda: jobs.queue_depth() == 0)

    assert [ctx.attempt for ctx, _ in calls] == [1, 2, 3]
    assert {ctx.job_id for ctx, _ in calls} == {job_id}
    assert all(kwargs == {"x": 1} for _, kwargs in calls)
    events = [
        (e["event"], e.get("attempt"))
        for e in logs
        if e.get("job_id") == job_id and e["event"] != "job_enqueued"
    ]
    assert events == [
        ("job_failed_will_retry", 1),
        ("job_failed_will_retry", 2),
        ("job_gave_up", 3),
    ]
    # Given up means given up: nothing comes back later.
    await asyncio.sleep(0.1)
    assert len(calls) == 3


async def test_job_that_fails_once_succeeds_on_retry(
    settings: Settings, started: list[Jobs]
) -> None:
    calls: list[tuple[JobContext, dict[str, Any]]] = []

    async def flaky(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("transient")

    jobs = make_jobs(settings, JobSpec("demo.flaky", recording(calls, flaky), max_retries=3))
    await jobs.start()
    started.append(jobs)

    with capture_logs() as logs:
        await jobs.enqueue("demo.flaky")
        await wait_until(lambda: jobs.queue_depth() == 0)

    assert [ctx.attempt for ctx, _ in calls] == [1, 2]
    assert [e["event"] for e in logs if e["event"] in OUTCOMES] == [
        "job_failed_will_retry",
        "job_done",
    ]


async def test_max_retries_zero_runs_once(settings: Settings, started: list[Jobs]) -> None:
    calls: list[tuple[JobContext, dict[str, Any]]] = []

    async def fail(_ctx: JobContext) -> None:
        raise ValueError("bad input")

    jobs = make_jobs(settings, JobSpec("demo.once", recording(calls, fail), max_retries=0))
    await jobs.start()
    started.append(jobs)

    with capture_logs() as logs:
        await jobs.enqueue("demo.once")
        await wait_until(lambda: jobs.queue_depth() == 0)

    assert len(calls) == 1
    assert [e["event"] for e in logs if e["event"] in OUTCOMES] == ["job_gave_up"]


async def test_a_run_longer_than_the_job_timeout_fails(
    settings: Settings, started: list[Jobs]
) -> None:
    async def hang(_ctx: JobContext) -> None:
        await asyncio.Event().wait()

    jobs = make_jobs(
        settings, JobSpec("demo.hang", recording([], hang), max_retries=0, timeout=0.05)
    )
    await jobs.start()
    started.append(jobs)

    with capture_logs() as logs:
        await jobs.enqueue("demo.hang")
        await wait_until(lambda: jobs.queue_depth() == 0)

    (gave_up,) = [e for e in logs if e["event"] == "job_gave_up"]
    assert gave_up["job"] == "demo.hang"


async def test_stop_waits_for_in_flight_jobs(settings: Settings) -> None:
    calls: list[tuple[JobContext, dict[str, Any]]] = []
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(ctx: JobContext) -> None:
        await release.wait()
        finished.append(ctx.job_id)

    jobs = make_jobs(settings, JobSpec("demo.slow", recording(calls, slow)))
    await jobs.start()
    job_id = await jobs.enqueue("demo.slow")
    await wait_until(lambda: len(calls) == 1)

    stopping = asyncio.create_task(jobs.stop())
    done, _ = await asyncio.wait({stopping}, timeout=0.2)
    assert not done, "stop() returned while a job was still running"

    release.set()
    await asyncio.wait_for(stopping, WAIT_SECONDS)
    assert finished == [job_id]


async def test_stop_cancels_jobs_still_running_after_the_timeout(settings: Settings) -> None:
    calls: list[tuple[JobContext, dict[str, Any]]] = []
    cancelled = asyncio.Event()

    async def stuck(_ctx: JobContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    jobs = make_jobs(settings, JobSpec("demo.stuck", recording(calls, stuck)), stop_timeout=0.1)
    await jobs.start()
    await jobs.enqueue("demo.stuck")
    await wait_until(lambda: len(calls) == 1)

    with capture_logs() as logs:
        await asyncio.wait_for(jobs.stop(), WAIT_SECONDS)

    assert cancelled.is_set()
    assert [e["count"] for e in logs if e["event"] == "jobs_abandoned_at_stop"] == [1]
    # A job cancelled by shutdown is not a failure to retry.
    assert len(calls) == 1
    assert jobs.queue_depth() == 0


async def test_a_job_can_enqueue_another_job(settings: Settings, started: list[Jobs]) -> None:
    followed: list[dict[str, Any]] = []

    async def first(ctx: JobContext, *, n: int) -> None:
        await holder[0].enqueue("demo.second", n=n + 1)

    async def second(_ctx: JobContext, **kwargs: Any) -> None:
        followed.append(kwargs)

    jobs = make_jobs(settings, JobSpec("demo.first", first), JobSpec("demo.second", second))
    holder = [jobs]
    await jobs.start()
    started.append(jobs)

    await jobs.enqueue("demo.first", n=1)
    await wait_until(lambda: followed == [{"n": 2}])
    await wait_until(lambda: jobs.queue_depth() == 0)


async def test_unknown_job_is_rejected(settings: Settings, started: list[Jobs]) -> None:
    jobs = make_jobs(settings, JobSpec("demo.known", recording([])))
    await jobs.start()
    started.append(jobs)

    with pytest.raises(ValueError, match=r"unknown job 'demo\.unknown'"):
        await jobs.enqueue("demo.unknown")
    assert jobs.queue_depth() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"when": object()}, id="object"),
        pytest.param({"pair": (1, 2)}, id="tuple"),
        pytest.param({"ratio": math.nan}, id="nan"),
        pytest.param({"by_id": {1: "a"}}, id="int-key"),
        pytest.param({"data": b"bytes"}, id="bytes"),
        pytest.param({"taskiq_context": 1}, id="reserved-name"),
    ],
)
async def test_arguments_that_do_not_survive_json_are_rejected(
    settings: Settings, started: list[Jobs], kwargs: dict[str, Any]
) -> None:
    calls: list[tuple[JobContext, dict[str, Any]]] = []
    jobs = make_jobs(settings, JobSpec("demo.json", recording(calls)))
    await jobs.start()
    started.append(jobs)

    with pytest.raises(ValueError, match=r"demo\.json"):
        await jobs.enqueue("demo.json", **kwargs)
    assert jobs.queue_depth() == 0
    assert calls == []


async def test_enqueue_before_start_is_an_error(settings: Settings) -> None:
    jobs = make_jobs(settings, JobSpec("demo.job", recording([])))
    with pytest.raises(RuntimeError, match="not started"):
        await jobs.enqueue("demo.job")


def test_registering_a_name_twice_is_an_error(settings: Settings) -> None:
    jobs = make_jobs(settings, JobSpec("demo.job", recording([])))
    with pytest.raises(ValueError, match="already registered"):
        jobs.register(JobSpec("demo.job", recording([])))


async def test_registering_after_start_is_an_error(settings: Settings, started: list[Jobs]) -> None:
    jobs = make_jobs(settings)
    await jobs.start()
    started.append(jobs)
    with pytest.raises(RuntimeError, match=r"before Jobs\.start"):
        jobs.register(JobSpec("demo.late", recording([])))


@pytest.mark.parametrize(
    ("name", "max_retries", "timeout"),
    [("", 3, 1.0), ("has space", 3, 1.0), ("demo.x", -1, 1.0), ("demo.x", 3, 0.0)],
)
def test_job_spec_validates_its_fields(name: str, max_retries: int, timeout: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each field has its own message
        JobSpec(name, recording([]), max_retries=max_retries, timeout=timeout)


async def test_run_worker_needs_a_broker(settings: Settings) -> None:
    jobs = make_jobs(settings)
    with pytest.raises(RuntimeError, match="ENGINEROOM_BROKER_URL"):
        await jobs.run_worker(asyncio.Event())


async def test_stop_without_start_and_twice_is_harmless(settings: Settings) -> None:
    jobs = make_jobs(settings, JobSpec("demo.job", recording([])))
    await jobs.stop()
    await jobs.start()
    await jobs.stop()
    await jobs.stop()


# ---- stopping a worker whatever its broker client does ---------------------------------


async def deaf_broker(
    pulling: asyncio.Event, release: asyncio.Event
) -> AsyncGenerator[bytes, None]:
    """A broker client that loses cancellations, as redis-py and aiormq can on Python 3.11
    (``asyncio.wait_for`` returns its inner result when a cancellation arrives with it)."""
    yield b"first"
    while not release.is_set():
        pulling.set()
        with contextlib.suppress(asyncio.CancelledError):
            await release.wait()
    yield b"late"


async def test_a_pull_that_loses_its_cancellation_does_not_hang_the_stop() -> None:
    pulling, release = asyncio.Event(), asyncio.Event()
    run = WorkerRun(close_timeout=0.05)
    listener = bounded_listen(deaf_broker(pulling, release), run)
    assert await anext(listener) == b"first"

    # What taskiq's Receiver does at stop: cancel the pending pull, await it, close.
    pending = asyncio.create_task(anext(listener))
    await pulling.wait()
    pending.cancel()
    done, _ = await asyncio.wait({pending}, timeout=WAIT_SECONDS)
    assert pending in done
    assert pending.cancelled()
    await asyncio.wait_for(listener.aclose(), WAIT_SECONDS)

    # The deaf pull is left behind, for the worker to cancel once the broker is closed.
    (stranded,) = run.stranded
    assert not stranded.done()
    release.set()
    await asyncio.wait({stranded}, timeout=WAIT_SECONDS)
    assert run.stranded == set()


async def test_finish_within_bounds_work_that_ignores_cancellation() -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = await asyncio.wait_for(finish_within(deaf(), 0.05), WAIT_SECONDS)
    assert not task.done()
    release.set()
    await asyncio.wait({task}, timeout=WAIT_SECONDS)
    assert task.done()


async def test_no_acknowledgement_once_the_worker_abandoned_its_jobs() -> None:
    acked: list[bytes] = []

    def acker(data: bytes) -> Callable[[], None]:
        return lambda: acked.append(data)

    async def broker() -> AsyncGenerator[AckableMessage, None]:
        for data in (b"finished in time", b"cut short at stop"):
            yield AckableMessage(data=data, ack=acker(data))

    run = WorkerRun()
    listener = bounded_listen(broker(), run)
    finished, cut_short = [message async for message in listener]
    await maybe_awaitable(finished.ack())
    run.abandoned = True
    await maybe_awaitable(cut_short.ack())
    # The second stays unacknowledged, so the broker delivers it again.
    assert acked == [b"finished in time"]
