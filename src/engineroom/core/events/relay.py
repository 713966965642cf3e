"""The in-process relay: delivers committed outbox events to subscribers, at least once.

A pass has two steps. Fan-out turns each undispatched event into one ``pending`` delivery
row per matching subscription and marks the event dispatched, in one transaction. Delivery
then runs each due delivery's handler inside one transaction that also marks the row
``done``: the handler's database writes and "delivered" commit together, and a row already
``done`` is never run again (idempotency by event id, per subscriber).

A process that dies between the commit of an event and its delivery leaves the event
undispatched or its delivery ``pending``, and the next relay over the same database picks
it up. Work is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` so that several relay
processes on PostgreSQL or MariaDB share it without delivering anything twice; on SQLite
``BEGIN IMMEDIATE`` serialises writers instead.

Deliveries carry no ordering guarantee: a retried delivery lands after newer events.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.clock import utcnow
from engineroom.core.db import Database
from engineroom.core.events.models import (
    STATUS_DEAD,
    STATUS_DONE,
    STATUS_PENDING,
    DeadLetter,
    EventDelivery,
    OutboxEvent,
)
from engineroom.core.events.outbox import OUTBOX_DIRTY_KEY, OUTBOX_TYPES_KEY
from engineroom.core.events.types import Event, Subscription
from engineroom.settings import Settings

logger = structlog.get_logger("engineroom.events.relay")

FAN_OUT_BATCH = 200
DELIVERY_BATCH = 100
PURGE_EVERY_SECONDS = 3600.0
RETENTION = timedelta(days=7)
STOP_TIMEOUT_SECONDS = 30.0
MAX_ERROR_CHARS = 8000


@dataclass(frozen=True)
class OutboxStats:
    """A snapshot for the ``outbox lag`` metrics."""

    pending_events: int
    """Committed events not yet fanned out to their subscribers."""
    oldest_pending_age_seconds: float
    """Age of the oldest event still owed to someone (undispatched, or with a pending
    delivery, retries included); 0 when nothing is owed."""
    pending_deliveries: int
    dead_letters: int


@dataclass(frozen=True)
class _Due:
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    subscriber: str
    attempts: int


class OutboxRelay:
    """Delivers outbox events to ``subscriptions``; see the module docstring."""

    def __init__(
        self,
        database: Database,
        subscriptions: Sequence[Subscription],
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        peer_subscriptions: Sequence[Subscription] = (),
    ) -> None:
        """``peer_subscriptions`` belong to modules served by other processes that share
        this database: this relay creates their delivery rows (whichever process fans an
        event out first marks it dispatched) but leaves running them to those processes."""
        self.database = database
        self.settings = settings
        self._clock = clock
        self._subscriptions: dict[str, Subscription] = {}
        for subscription in subscriptions:
            if subscription.name in self._subscriptions:
                raise ValueError(f"duplicate subscription name {subscription.name!r}")
            self._subscriptions[subscription.name] = subscription
        self._fan_out_targets = dict(self._subscriptions)
        for subscription in peer_subscriptions:
            self._fan_out_targets.setdefault(subscription.name, subscription)
        self._subscribed: dict[str, bool] = {}
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_purge = time.monotonic()

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions.values())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        # A fresh Event binds to the running loop (a relay may be restarted in another).
        self._wakeup = asyncio.Event()
        self._wakeup.set()  # deliver what accumulated while no relay was running
        self._task = asyncio.create_task(self._loop(), name="engineroom-outbox-relay")
        logger.info("outbox_relay_started", subscriptions=list(self._subscriptions))

    async def stop(self, grace: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop after the delivery in progress; cancel it if it outlasts ``grace`` seconds."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            # The cancelled delivery rolls back and stays pending: redelivered later.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            logger.warning("outbox_relay_stop_timeout", grace=grace)
        self._task = None
        logger.info("outbox_relay_stopped")

    def after_commit(self, session: AsyncSession) -> None:
        """Database after-commit hook: wake the loop at once if this commit published an
        event that someone subscribes to.

        An event nobody subscribes to (here or in a peer process) is owed to no one: the
        next poll marks it dispatched, together with every other one published meanwhile,
        instead of one write transaction per commit (a login publishes one).
        """
        try:
            published = session.info.pop(OUTBOX_DIRTY_KEY, False)
            types = session.info.pop(OUTBOX_TYPES_KEY, None)
            if published and (types is None or any(self._is_subscribed(t) for t in types)):
                self._wakeup.set()
        except Exception:  # a hook must never break the caller's (already committed) work
            logger.exception("outbox_relay_wakeup_failed")

    def _is_subscribed(self, event_type: str) -> bool:
        found = self._subscribed.get(event_type)
        if found is None:
            # Event types are a small fixed set of names, so the answers stay few.
            found = self._subscribed[event_type] = any(
                target.matches(event_type) for target in self._fan_out_targets.values()
            )
        return found

    async def _loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            busy = False
            try:
                busy = await self._pass()
                await self._maybe_purge()
            except Exception:
                # A database outage must not kill the relay; it retries on the next poll.
                logger.exception("outbox_relay_pass_failed")
            if busy or self._stopping:
                continue
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.settings.outbox_poll_interval)

    async def _pass(self) -> bool:
        """One pass of the loop; True when a batch was full, so more work is waiting."""
        fanned = await self._fan_out()
        due = await self._due_deliveries()
        delivered = 0
        for item in due:
            if self._stopping:
                return False
            delivered += await self._deliver(item)
        # A full batch of rows that other relays hold (or that all failed) is no reason
        # to spin: only progress here justifies skipping the wait.
        return fanned >= FAN_OUT_BATCH or (len(due) >= DELIVERY_BATCH and delivered > 0)

    async def _maybe_purge(self) -> None:
        if time.monotonic() - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = time.monotonic()
        purged = await self.purge_delivered(RETENTION)
        logger.info("outbox_purged", events=purged)

    # ---- one pass --------------------------------------------------------------------

    async def run_once(self) -> int:
        """Fan out undispatched events, then run due deliveries; return how many succeeded."""
        await self._fan_out()
        delivered = 0
        for item in await self._due_deliveries():
            delivered += await self._deliver(item)
        return delivered

    async def _fan_out(self) -> int:
        """Create the delivery rows of a batch of undispatched events; return the batch size."""
        now = self._clock()
        async with self.database.unit_of_work() as session:
            claimed = (
                select(OutboxEvent.id, OutboxEvent.type)
                .where(OutboxEvent.dispatched_at.is_(None))
                .order_by(OutboxEvent.id)
                .limit(FAN_OUT_BATCH)
                .with_for_update(skip_locked=True)
            )
            rows = (await session.execute(claimed)).all()
            if not rows:
                return 0
            event_ids = [row.id for row in rows]
            owed = [
                (event_id, name)
                for event_id, event_type in rows
                for name, subscription in self._fan_out_targets.items()
                if subscription.matches(event_type)
            ]
            if owed:
                # Rows that already exist are kept, so that clearing dispatched_at re-fans
                # an event out to subscriptions added since, without repeating the others.
                known = select(EventDelivery.event_id, EventDelivery.subscriber).where(
                    EventDelivery.event_id.in_(event_ids)
                )
                existing = {(r.event_id, r.subscriber) for r in await session.execute(known)}
                session.add_all(
                    EventDelivery(
                        event_id=event_id,
                        subscriber=name,
                        status=STATUS_PENDING,
                        attempts=0,
                        next_attempt_at=now,
                    )
                    for event_id, name in owed
                    if (event_id, name) not in existing
                )
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(event_ids))
                .values(dispatched_at=now)
                .execution_options(synchronize_session=False)
            )
        return len(rows)

    async def _due_deliveries(self) -> list[_Due]:
        if not self._subscriptions:
            return []
        query = (
            select(
                EventDelivery.id,
                EventDelivery.event_id,
                EventDelivery.subscriber,
                EventDelivery.attempts,
            )
            .where(
                EventDelivery.status == STATUS_PENDING,
                EventDelivery.next_attempt_at <= self._clock(),
                # Rows of a subscriber this process does not run are left to one that does.
                EventDelivery.subscriber.in_(list(self._subscriptions)),
            )
            .order_by(EventDelivery.next_attempt_at, EventDelivery.id)
            .limit(DELIVERY_BATCH)
        )
        async with self._read_primary() as session:
            rows = (await session.execute(query)).all()
        return [_Due(row.id, row.event_id, row.subscriber, row.attempts) for row in rows]

    # ---- one delivery ----------------------------------------------------------------

    async def _deliver(self, item: _Due) -> int:
        """Run one delivery; 1 if the handler succeeded here, 0 if failed or skipped."""
        subscription = self._subscriptions[item.subscriber]
        try:
            async with self.database.unit_of_work() as session:
                event = await self._claim(session, item)
                if event is None:
                    return 0
                await subscription.handler(event, session)
                await session.execute(
                    update(EventDelivery)
                    .where(EventDelivery.id == item.delivery_id)
                    .values(
                        status=STATUS_DONE,
                        attempts=EventDelivery.attempts + 1,
                        delivered_at=self._clock(),
                        last_error=None,
                    )
                    .execution_options(synchronize_session=False)
                )
        except Exception as exc:
            await self._record_failure(item, exc)
            return 0
        logger.debug("event_delivered", event_id=str(item.event_id), subscriber=item.subscriber)
        return 1

    async def _claim(self, session: AsyncSession, item: _Due) -> Event | None:
        """Lock the delivery row if it is still due; None when done or taken elsewhere."""
        locked = (
            select(EventDelivery.id)
            .where(
                EventDelivery.id == item.delivery_id,
                EventDelivery.status == STATUS_PENDING,
                # Unchanged since listed: the failure record is guarded on this count.
                EventDelivery.attempts == item.attempts,
                EventDelivery.next_attempt_at <= self._clock(),
            )
            .with_for_update(skip_locked=True)
        )
        if (await session.execute(locked)).first() is None:
            return None
        row = await session.get(OutboxEvent, item.event_id)
        if row is None:
            raise LookupError(f"outbox event {item.event_id} is missing")
        return Event(type=row.type, payload=row.payload, id=row.id, occurred_at=row.occurred_at)

    def _backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter, so failing deliveries do not retry in lockstep."""
        base = self.settings.outbox_backoff_base * 2 ** (attempts - 1)
        ceiling = min(self.settings.outbox_backoff_max, base)
        return timedelta(seconds=ceiling * random.uniform(0.5, 1.0))

    async def _record_failure(self, item: _Due, exc: Exception) -> None:
        error = "".join(traceback.format_exception(exc))[-MAX_ERROR_CHARS:]
        attempts = item.attempts + 1
        dead = attempts >= self.settings.outbox_max_attempts
        now = self._clock()
        log = logger.bind(
            event_id=str(item.event_id), subscriber=item.subscriber, attempts=attempts
        )
        try:
            async with self.database.unit_of_work() as session:
                # Guarded on the attempts we saw: if another relay delivered or failed it
                # meanwhile, its outcome stands and this one is dropped.
                result = await session.execute(
                    update(EventDelivery)
                    .where(
                        EventDelivery.id == item.delivery_id,
                        EventDelivery.status == STATUS_PENDING,
                        EventDelivery.attempts == item.attempts,
                    )
                    .values(
                        status=STATUS_DEAD if dead else STATUS_PENDING,
                        attempts=attempts,
                        last_error=error,
                        next_attempt_at=now if dead else now + self._backoff(attempts),
                    )
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    return
                if dead:
                    await self._insert_dead_letter(session, item, error, attempts, now)
        except Exception:
            log.exception("event_delivery_failure_not_recorded")
            return
        if dead:
            log.error("event_dead_lettered", error=repr(exc))
        else:
            log.warning("event_delivery_failed", error=repr(exc))

    @staticmethod
    async def _insert_dead_letter(
        session: AsyncSession, item: _Due, error: str, attempts: int, now: datetime
    ) -> None:
        event = await session.get(OutboxEvent, item.event_id)
        session.add(
            DeadLetter(
                event_id=item.event_id,
                subscriber=item.subscriber,
                event_type=event.type if event is not None else "",
                payload=event.payload if event is not None else {},
                error=error,
                attempts=attempts,
                failed_at=now,
            )
        )

    # ---- maintenance and metrics -----------------------------------------------------

    @asynccontextmanager
    async def _read_primary(self) -> AsyncIterator[AsyncSession]:
        """A read that sees the latest commits: replicas may lag behind the outbox."""
        if self.database.dialect == "sqlite":
            # SQLite's read pool is the same file (never behind) and avoids BEGIN IMMEDIATE.
            async with self.database.read_only() as session:
                yield session
            return
        async with self.database.session() as session:
            yield session

    async def purge_delivered(self, older_than: timedelta) -> int:
        """Delete events dispatched before ``now - older_than`` with nothing still pending.

        Their ``done`` delivery rows go too; dead letters stay. Returns the events deleted.
        """
        cutoff = self._clock() - older_than
        still_owed = exists().where(
            EventDelivery.event_id == OutboxEvent.id, EventDelivery.status == STATUS_PENDING
        )
        async with self.database.unit_of_work() as session:
            await session.execute(
                delete(EventDelivery)
                .where(EventDelivery.status == STATUS_DONE, EventDelivery.delivered_at < cutoff)
                .execution_options(synchronize_session=False)
            )
            result = await session.execute(
                delete(OutboxEvent)
                .where(OutboxEvent.dispatched_at < cutoff, ~still_owed)
                .execution_options(synchronize_session=False)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def stats(self) -> OutboxStats:
        """Counts and the outbox lag, read in one read-only transaction."""
        now = self._clock()
        async with self._read_primary() as session:
            pending_events, oldest_undispatched = (
                await session.execute(
                    select(func.count(), func.min(OutboxEvent.occurred_at)).where(
                        OutboxEvent.dispatched_at.is_(None)
                    )
                )
            ).one()
            pending_deliveries, oldest_owed = (
                await session.execute(
                    select(func.count(), func.min(OutboxEvent.occurred_at))
                    .select_from(EventDelivery)
                    .join(OutboxEvent, OutboxEvent.id == EventDelivery.event_id, isouter=True)
                    .where(EventDelivery.status == STATUS_PENDING)
                )
            ).one()
            dead_letters = (await session.execute(select(func.count(DeadLetter.id)))).scalar_one()
        oldest = [moment for moment in (oldest_undispatched, oldest_owed) if moment is not None]
        age = max(0.0, (now - min(oldest)).total_seconds()) if oldest else 0.0
        return OutboxStats(
            pending_events=int(pending_events),
            oldest_pending_age_seconds=age,
            pending_deliveries=int(pending_deliveries),
            dead_letters=int(dead_letters),
        )
