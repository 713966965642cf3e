"""``Jobs``: register, enqueue and run background jobs on a taskiq broker.

Embedded topology (no ``ENGINEROOM_BROKER_URL``): ``start()`` runs an in-process worker;
``enqueue`` schedules the job as a task of this event loop and returns at once; ``stop()``
waits for running jobs (up to ``stop_timeout``) before cancelling the rest.

Scaled-out topology: ``start()`` only connects for sending, and ``engineroom worker``
processes call ``run_worker()`` to consume the same queue. Delivery is at least once (a
worker that dies mid-job leaves the job to another), so jobs must be idempotent; the job
id in ``JobContext`` is stable across retries and redeliveries.

Failures are retried by taskiq's ``SmartRetryMiddleware`` with exponential back-off, up to
``JobSpec.max_retries`` times, then given up and logged as ``job_gave_up``. On RabbitMQ
and Redis the back-off is held by the broker, so a failed run is acknowledged at once and
a stopping worker has no retry to wait for.

Every stop is bounded in time, whatever the broker does: see ``listening``.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import structlog
from taskiq import AsyncBroker, Context, TaskiqDepends, TaskiqMessage, TaskiqMiddleware
from taskiq.exceptions import NoResultError
from taskiq.kicker import AsyncKicker
from taskiq.middlewares import SmartRetryMiddleware
from taskiq.receiver import Receiver
from taskiq.result import TaskiqResult

from engineroom.core.clock import new_id
from engineroom.core.jobs.brokers import (
    DEFAULT_QUEUE_NAME,
    NETWORK_TIMEOUT_SECONDS,
    InProcessBroker,
    attach_worker,
    create_broker,
    has_native_delay,
    release_unacknowledged,
    waiting_jobs,
)
from engineroom.core.jobs.listening import CLOSE_TIMEOUT_SECONDS, WorkerRun, finish_within
from engineroom.core.jobs.spec import JobContext, JobFunc, JobSpec, check_job_kwargs
from engineroom.settings import Settings

if TYPE_CHECKING:
    from engineroom.core.platform import Platform

logger = structlog.get_logger("engineroom.jobs")

STOP_TIMEOUT_SECONDS = 30.0
DEFAULT_RETRY_DELAY_SECONDS = 5.0
MAX_RETRY_DELAY_SECONDS = 300.0
DEFAULT_CONCURRENCY = 16
DEPTH_POLL_SECONDS = 5.0
_CONTEXT_PARAM = "taskiq_context"


class _RetryMiddleware(SmartRetryMiddleware):
    """Taskiq's retry middleware with exponential back-off on every broker.

    Only ``Exception`` is retried: a job cancelled at shutdown must not come back.
    """

    def __init__(self, *, base_delay: float, native_delay: bool) -> None:
        super().__init__(
            default_retry_count=1,
            default_retry_label=True,
            no_result_on_retry=True,
            default_delay=base_delay,
            max_delay_exponent=MAX_RETRY_DELAY_SECONDS,
            types_of_exceptions=(Exception,),
        )
        self._native_delay = native_delay

    def make_delay(self, message: TaskiqMessage, retries: int) -> float:
        if self.default_delay <= 0:
            return 0.0
        delay = self.default_delay * 2 ** (retries - 1)
        return float(min(delay, self.max_delay_exponent))

    async def on_send(
        self, kicker: AsyncKicker[Any, Any], message: TaskiqMessage, delay: float
    ) -> None:
        if delay > 0 and not self._native_delay:
            # In process there is no broker to hold the message back: wait inside the
            # failed run, which still counts as in flight (and stop drains it).
            await asyncio.sleep(delay)
            delay = 0.0
        if delay > 0:
            kicker = kicker.with_labels(delay=delay)
        async with asyncio.timeout(NETWORK_TIMEOUT_SECONDS):
            await kicker.kiq(*message.args, **message.kwargs)


class _CompletionMiddleware(TaskiqMiddleware):
    """Tells ``Jobs`` when an in-process job is over (done, or failed for good)."""

    def __init__(self, pending: set[str]) -> None:
        super().__init__()
        self._pending = pending

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        # The retry middleware marks a run that will be retried with NoResultError.
        if not isinstance(result.error, NoResultError):
            self._pending.discard(message.task_id)


class Jobs:
    """The job registry and queue of one process; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        platform: Platform,
        *,
        queue_name: str = DEFAULT_QUEUE_NAME,
        retry_delay: float = DEFAULT_RETRY_DELAY_SECONDS,
        concurrency: int = DEFAULT_CONCURRENCY,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._settings = settings
        self._platform = platform
        self._queue_name = queue_name
        self._retry_delay = retry_delay
        self._concurrency = concurrency
        self._stop_timeout = stop_timeout
        self._specs: dict[str, JobSpec] = {}
        self._broker: AsyncBroker | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: set[str] = set()
        self._running = 0
        self._waiting = 0
        self._depth_task: asyncio.Task[None] | None = None
        self._depth_stop = asyncio.Event()
        # Worker side: each job's taskiq callback task, so that stop can cut them short.
        self._job_tasks: set[asyncio.Task[Any]] = set()

    @property
    def embedded(self) -> bool:
        """True when jobs run in this process (no ``ENGINEROOM_BROKER_URL``)."""
        return self._settings.broker_url is None

    @property
    def queue_name(self) -> str:
        return self._queue_name

    @property
    def specs(self) -> tuple[JobSpec, ...]:
        return tuple(self._specs.values())

    def register(self, spec: JobSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"job {spec.name!r} is already registered")
        if self._broker is not None:
            raise RuntimeError(f"job {spec.name!r}: register jobs before Jobs.start()")
        self._specs[spec.name] = spec

    async def start(self) -> None:
        """Embedded: start the in-process worker. With a broker: connect for sending."""
        if self._broker is not None:
            return
        broker = self._build_broker()
        await _start_broker(broker)
        self._broker = broker
        if not self.embedded:
            self._depth_stop = asyncio.Event()
            self._depth_task = asyncio.create_task(self._poll_depth(self._depth_stop))
        logger.info("jobs_started", embedded=self.embedded, queue=self._queue_name)

    async def stop(self) -> None:
        broker = self._broker
        if broker is None:
            return
        if self._depth_task is not None:
            # The event ends the loop even if a broker call swallows the cancellation.
            self._depth_stop.set()
            self._depth_task.cancel()
            await finish_within(self._depth_task, NETWORK_TIMEOUT_SECONDS)
            self._depth_task = None
        if isinstance(broker, InProcessBroker):
            await self._drain(broker)
        # Cleared only now: jobs finishing during the drain may still enqueue follow-ups.
        self._broker = None
        self._pending.clear()
        await _shutdown_broker(broker)
        logger.info("jobs_stopped", queue=self._queue_name)

    async def enqueue(self, name: str, /, **kwargs: Any) -> str:
        """Queue job ``name`` with ``kwargs`` (JSON values) and return its id."""
        if name not in self._specs:
            raise ValueError(f"unknown job {name!r}")
        if _CONTEXT_PARAM in kwargs:
            raise ValueError(f"job {name!r}: {_CONTEXT_PARAM!r} is a reserved argument name")
        check_job_kwargs(name, kwargs)
        broker = self._broker
        task = broker.find_task(name) if broker is not None else None
        if task is None:
            raise RuntimeError(f"job {name!r}: jobs are not started (call Jobs.start())")
        job_id = str(new_id())
        tracked = isinstance(broker, InProcessBroker)
        if tracked:
            self._pending.add(job_id)
        try:
            async with asyncio.timeout(NETWORK_TIMEOUT_SECONDS):
                await task.kicker().with_task_id(job_id).kiq(**kwargs)
        except BaseException:
            self._pending.discard(job_id)
            raise
        logger.debug("job_enqueued", job=name, job_id=job_id)
        return job_id

    def queue_depth(self) -> int:
        """Jobs enqueued and not finished, as far as this process can tell.

        Embedded: exact (queued, running or waiting to retry). With a broker: the jobs
        waiting in the broker (sampled every few seconds, shared by every process on the
        queue, so aggregate with ``max`` rather than ``sum``) plus those running here.
        """
        if self.embedded:
            return len(self._pending)
        return self._waiting + self._running

    async def sample_queue_depth(self) -> int:
        """Ask the broker for its backlog now (``queue_depth`` reuses the answer)."""
        broker = self._broker
        if broker is not None and not self.embedded:
            async with asyncio.timeout(NETWORK_TIMEOUT_SECONDS):
                self._waiting = await waiting_jobs(broker, self._queue_name)
        return self.queue_depth()

    async def run_worker(self, stop: asyncio.Event | None = None) -> None:
        """Consume jobs from the broker until ``stop`` is set (``engineroom worker``).

        Running jobs get ``stop_timeout`` to finish; the rest are cancelled and their
        messages left unacknowledged, so the broker hands them to another worker. The
        whole stop takes at most ``stop_timeout`` plus a few fixed network timeouts.
        """
        if self.embedded:
            raise RuntimeError(
                "engineroom worker needs ENGINEROOM_BROKER_URL; without a broker, jobs run "
                "inside the serving process"
            )
        stop = stop or asyncio.Event()
        started_here = self._broker is None
        if started_here:
            # Jobs that enqueue other jobs send through the ordinary sending broker.
            await self.start()
        try:
            await self._consume(stop)
        finally:
            if started_here:
                await self.stop()
            logger.info("job_worker_stopped", queue=self._queue_name)

    # ---- internals ------------------------------------------------------------------

    async def _consume(self, stop: asyncio.Event) -> None:
        run = WorkerRun(ack_timeout=NETWORK_TIMEOUT_SECONDS)
        broker = self._build_broker()
        broker.is_worker_process = True
        attach_worker(broker, run)
        receiver = Receiver(
            broker,
            validate_params=False,
            max_async_tasks=self._concurrency,
            wait_tasks_timeout=self._stop_timeout,
            # Started below instead, within a time limit.
            run_startup=False,
        )
        await _start_broker(broker)
        logger.info("job_worker_started", queue=self._queue_name, jobs=sorted(self._specs))
        try:
            await self._listen_until(stop, receiver, run)
        finally:
            await self._abandon_jobs(run)
            await _release(broker)
            await _shutdown_broker(broker)
            # Closed connections end what still waited on them.
            for stranded in set(run.stranded):
                stranded.cancel()

    async def _listen_until(self, stop: asyncio.Event, receiver: Receiver, run: WorkerRun) -> None:
        """Run the receiver until ``stop``; then give it ``stop_timeout`` and a margin."""
        listening = asyncio.create_task(receiver.listen(run.stop))
        stop_requested = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({listening, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
            run.stop.set()
            # The receiver waits up to stop_timeout for running jobs, and the broker
            # pull and close take at most two close timeouts each.
            grace = self._stop_timeout + 4 * run.close_timeout
            await asyncio.wait({listening}, timeout=grace)
            if not listening.done():
                logger.warning("job_worker_stop_overran", queue=self._queue_name, grace=grace)
        finally:
            run.stop.set()
            stop_requested.cancel()
            if (
                not listening.done()
                and not (await finish_within(listening, run.close_timeout)).done()
            ):
                run.strand(listening)
        if listening.done() and not listening.cancelled():
            listening.result()

    async def _abandon_jobs(self, run: WorkerRun) -> None:
        """Cancel the jobs still running once the receiver has stopped waiting for them."""
        leftover = {task for task in self._job_tasks if not task.done()}
        if not leftover:
            return
        # Before cancelling: a cancelled run must not acknowledge its message.
        run.abandoned = True
        logger.warning("jobs_abandoned_at_stop", count=len(leftover), timeout=self._stop_timeout)
        for task in leftover:
            task.cancel()
        await asyncio.wait(leftover, timeout=run.close_timeout)

    def _build_broker(self) -> AsyncBroker:
        broker = create_broker(self._settings.broker_url, self._queue_name)
        broker.add_middlewares(
            _RetryMiddleware(base_delay=self._retry_delay, native_delay=has_native_delay(broker))
        )
        if isinstance(broker, InProcessBroker):
            broker.add_middlewares(_CompletionMiddleware(self._pending))
        for spec in self._specs.values():
            broker.register_task(
                self._task_function(spec),
                task_name=spec.name,
                retry_on_error=True,
                # taskiq counts runs, not retries.
                max_retries=spec.max_retries + 1,
            )
        return broker

    def _task_function(self, spec: JobSpec) -> JobFunc:
        async def run(taskiq_context: Context = TaskiqDepends(), **kwargs: Any) -> None:
            await self._run(spec, taskiq_context.message, kwargs)

        return run

    async def _run(self, spec: JobSpec, message: TaskiqMessage, kwargs: dict[str, Any]) -> None:
        ctx = JobContext(
            settings=self._settings,
            platform=self._platform,
            job_id=message.task_id,
            job_name=spec.name,
            attempt=int(message.labels.get("_retries", 0)) + 1,
            max_attempts=spec.max_retries + 1,
        )
        log = logger.bind(job=spec.name, job_id=ctx.job_id, attempt=ctx.attempt)
        task = asyncio.current_task()
        if task is not None and task not in self._job_tasks:
            self._job_tasks.add(task)
            task.add_done_callback(self._job_tasks.discard)
        async with self._slots:
            self._running += 1
            try:
                async with asyncio.timeout(spec.timeout):
                    await spec.func(ctx, **kwargs)
            except Exception:
                if ctx.is_last_attempt:
                    log.error("job_gave_up", max_attempts=ctx.max_attempts, exc_info=True)
                else:
                    log.warning("job_failed_will_retry", exc_info=True)
                raise
            finally:
                self._running -= 1
        log.info("job_done")

    async def _drain(self, broker: InProcessBroker) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_timeout
        while broker.in_flight and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(broker.in_flight), timeout=remaining)
        if not broker.in_flight:
            return
        abandoned = set(broker.in_flight)
        logger.warning("jobs_abandoned_at_stop", count=len(abandoned), timeout=self._stop_timeout)
        for task in abandoned:
            task.cancel()
        # Bounded: a job that swallows its cancellation must not hold up the stop.
        await asyncio.wait(abandoned, timeout=CLOSE_TIMEOUT_SECONDS)

    async def _poll_depth(self, stop: asyncio.Event) -> None:
        healthy = True
        while not stop.is_set():
            try:
                await self.sample_queue_depth()
            except Exception as exc:
                # Logged on the transition only: a broker outage would otherwise log
                # every few seconds.
                if healthy:
                    logger.warning("job_queue_depth_unavailable", error=repr(exc))
                healthy = False
            else:
                healthy = True
            with suppress(TimeoutError):
                async with asyncio.timeout(DEPTH_POLL_SECONDS):
                    await stop.wait()


async def _start_broker(broker: AsyncBroker) -> None:
    starting = await finish_within(broker.startup(), NETWORK_TIMEOUT_SECONDS * 2)
    if starting.done() and not starting.cancelled() and starting.exception() is None:
        return
    await _shutdown_broker(broker)
    if starting.done() and not starting.cancelled():
        starting.result()
    raise TimeoutError(f"job broker did not start within {NETWORK_TIMEOUT_SECONDS * 2:g}s")


async def _shutdown_broker(broker: AsyncBroker) -> None:
    closing = await finish_within(broker.shutdown(), NETWORK_TIMEOUT_SECONDS)
    if not closing.done() or closing.cancelled():
        logger.warning("job_broker_shutdown_timed_out", timeout=NETWORK_TIMEOUT_SECONDS)
    elif (error := closing.exception()) is not None:
        logger.warning("job_broker_shutdown_failed", exc_info=error)


async def _release(broker: AsyncBroker) -> None:
    releasing = await finish_within(release_unacknowledged(broker), CLOSE_TIMEOUT_SECONDS)
    if not releasing.done() or releasing.cancelled():
        logger.warning("job_release_timed_out", timeout=CLOSE_TIMEOUT_SECONDS)
    elif (error := releasing.exception()) is not None:
        logger.warning("job_release_failed", exc_info=error)
    elif released := releasing.result():
        logger.info("jobs_released_at_stop", count=released)
