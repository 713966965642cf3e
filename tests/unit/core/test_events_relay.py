"""The outbox relay on SQLite: fan-out, idempotent delivery, retries, dead letters, wake-up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.clock import utcnow
from engineroom.core.db import Database
from engineroom.core.events import Event, OutboxRelay, Subscription, publish
from engineroom.core.events.models import DeadLetter, EventDelivery, OutboxEvent
from engineroom.settings import Settings
from tests.support.schema import create_all, effects, record_effect

TIMEOUT = 15.0


class FakeClock:
    """The relay's notion of now, moved by hand so that backoff needs no sleeping."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    await create_all(database)
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def recorder(name: str, event_type: str, calls: list[Event] | None = None) -> Subscription:
    """A subscription whose handler writes one effect row in the delivery's transaction."""

    async def handler(event: Event, session: AsyncSession) -> None:
        if calls is not None:
            calls.append(event)
        await record_effect(session, event, name)

    return Subscription(name=name, event_type=event_type, handler=handler)


def failing(name: str, event_type: str, failures: int, calls: list[Event]) -> Subscription:
    """Writes its effect, then raises for the first ``failures`` calls."""

    async def handler(event: Event, session: AsyncSession) -> None:
        calls.append(event)
        await record_effect(session, event, name)
        if len(calls) <= failures:
            raise RuntimeError(f"boom {len(calls)}")

    return Subscription(name=name, event_type=event_type, handler=handler)


async def commit_event(database: Database, event_type: str, **payload: object) -> Event:
    async with database.unit_of_work() as session:
        return publish(session, event_type, payload)


async def delivery(database: Database, event_id: uuid.UUID, subscriber: str) -> EventDelivery:
    async with database.session() as session:
        row = await session.scalar(
            select(EventDelivery).where(
                EventDelivery.event_id == event_id, EventDelivery.subscriber == subscriber
            )
        )
    assert row is not None
    return row


def make_relay(
    database: Database,
    subscriptions: Sequence[Subscription],
    settings: Settings,
    clock: FakeClock,
) -> OutboxRelay:
    return OutboxRelay(database, subscriptions, settings, clock=clock)


async def test_events_reach_only_matching_subscribers(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    relay = make_relay(
        database,
        [
            recorder("exact", "identity.user.registered"),
            recorder("prefix", "identity.user.*"),
            recorder("everything", "*"),
            recorder("other", "blog.article.created"),
        ],
        settings,
        clock,
    )
    registered = await commit_event(database, "identity.user.registered", user=1)
    deleted = await commit_event(database, "identity.user.deleted", user=1)
    lookalike = await commit_event(database, "identity.userx.renamed", user=1)

    assert await relay.run_once() == 6

    assert sorted(await effects(database), key=str) == sorted(
        [
            (registered.id, "exact"),
            (registered.id, "prefix"),
            (registered.id, "everything"),
            (deleted.id, "prefix"),
            (deleted.id, "everything"),
            (lookalike.id, "everything"),
        ],
        key=str,
    )
    stats = await relay.stats()
    assert (stats.pending_events, stats.pending_deliveries) == (0, 0)


async def test_the_handler_receives_the_event_as_published(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    calls: list[Event] = []
    relay = make_relay(database, [recorder("r", "shop.order.placed", calls)], settings, clock)
    published = await commit_event(database, "shop.order.placed", order=5, lines=[1, 2])

    assert await relay.run_once() == 1
    assert calls == [published]


async def test_an_event_without_subscribers_is_still_dispatched(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    relay = make_relay(database, [recorder("r", "blog.*")], settings, clock)
    event = await commit_event(database, "shop.order.placed", order=5)

    assert await relay.run_once() == 0

    async with database.session() as session:
        row = await session.get(OutboxEvent, event.id)
        deliveries = (await session.scalars(select(EventDelivery))).all()
    assert row is not None
    assert row.dispatched_at == clock.now
    assert deliveries == []
    assert (await relay.stats()).pending_events == 0


async def test_running_again_delivers_nothing_twice(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    calls: list[Event] = []
    relay = make_relay(database, [recorder("r", "blog.*", calls)], settings, clock)
    event = await commit_event(database, "blog.article.created", slug="a")

    assert await relay.run_once() == 1
    clock.advance(3600)
    assert await relay.run_once() == 0
    # Even a second relay, and a re-fan-out of the same event, finds the delivery done.
    async with database.unit_of_work() as session:
        await session.execute(update(OutboxEvent).values(dispatched_at=None))
    other = make_relay(database, [recorder("r", "blog.*", calls)], settings, clock)
    assert await other.run_once() == 0

    assert len(calls) == 1
    assert await effects(database) == [(event.id, "r")]
    row = await delivery(database, event.id, "r")
    assert (row.status, row.attempts) == ("done", 1)
    assert row.delivered_at is not None


async def test_a_re_fan_out_reaches_only_a_new_subscriber(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    event = await commit_event(database, "blog.article.created", slug="a")
    assert await make_relay(database, [recorder("old", "blog.*")], settings, clock).run_once() == 1

    async with database.unit_of_work() as session:
        await session.execute(update(OutboxEvent).values(dispatched_at=None))
    both = [recorder("old", "blog.*"), recorder("new", "blog.*")]
    assert await make_relay(database, both, settings, clock).run_once() == 1

    assert sorted(await effects(database)) == sorted([(event.id, "old"), (event.id, "new")])


async def test_handler_writes_commit_only_with_the_delivery(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    calls: list[Event] = []
    relay = make_relay(database, [failing("f", "blog.*", 1, calls)], settings, clock)
    event = await commit_event(database, "blog.article.created", slug="a")

    assert await relay.run_once() == 0
    # The handler wrote its effect, then raised: the write rolled back with the delivery.
    assert await effects(database) == []
    row = await delivery(database, event.id, "f")
    assert (row.status, row.attempts, row.delivered_at) == ("pending", 1, None)
    assert row.last_error is not None
    assert "RuntimeError: boom 1" in row.last_error

    clock.advance(settings.outbox_backoff_max)
    assert await relay.run_once() == 1
    assert await effects(database) == [(event.id, "f")]
    row = await delivery(database, event.id, "f")
    assert (row.status, row.attempts, row.last_error) == ("done", 2, None)


async def test_a_failing_handler_is_retried_with_growing_backoff(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"outbox_backoff_base": 10.0})
    calls: list[Event] = []
    relay = make_relay(database, [failing("f", "blog.*", 2, calls)], settings, clock)
    event = await commit_event(database, "blog.article.created", slug="a")

    for attempt, delay in ((1, 10.0), (2, 20.0)):
        failed_at = clock.now
        assert await relay.run_once() == 0
        row = await delivery(database, event.id, "f")
        assert row.attempts == attempt
        # Jitter keeps the wait between half and all of base * 2 ** (attempt - 1).
        wait = (row.next_attempt_at - failed_at).total_seconds()
        assert delay / 2 <= wait <= delay
        # Not due yet: nothing runs, however often the relay passes.
        clock.advance(delay / 2 - 1)
        assert await relay.run_once() == 0
        assert len(calls) == attempt
        clock.advance(delay / 2 + 1)

    assert await relay.run_once() == 1
    assert len(calls) == 3
    row = await delivery(database, event.id, "f")
    assert (row.status, row.attempts) == ("done", 3)
    assert await effects(database) == [(event.id, "f")]


async def test_backoff_is_capped(database: Database, settings: Settings, clock: FakeClock) -> None:
    settings = settings.model_copy(
        update={"outbox_backoff_base": 1.0, "outbox_backoff_max": 4.0, "outbox_max_attempts": 20}
    )
    calls: list[Event] = []
    relay = make_relay(database, [failing("f", "blog.*", 100, calls)], settings, clock)
    event = await commit_event(database, "blog.article.created", slug="a")
    for _ in range(8):
        failed_at = clock.now
        await relay.run_once()
        clock.advance(4.0)
    row = await delivery(database, event.id, "f")
    assert row.attempts == 8
    assert (row.next_attempt_at - failed_at).total_seconds() <= 4.0


async def test_a_delivery_is_dead_lettered_after_max_attempts(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"outbox_max_attempts": 3})
    calls: list[Event] = []
    good: list[Event] = []
    relay = make_relay(
        database,
        [failing("bad", "blog.*", 1000, calls), recorder("good", "blog.*", good)],
        settings,
        clock,
    )
    event = await commit_event(database, "blog.article.created", slug="a")

    for _ in range(5):
        await relay.run_once()
        clock.advance(settings.outbox_backoff_max)

    assert len(calls) == 3
    assert len(good) == 1
    row = await delivery(database, event.id, "bad")
    assert (row.status, row.attempts) == ("dead", 3)
    async with database.session() as session:
        [letter] = (await session.scalars(select(DeadLetter))).all()
    assert (letter.event_id, letter.subscriber, letter.event_type) == (
        event.id,
        "bad",
        "blog.article.created",
    )
    assert letter.payload == {"slug": "a"}
    assert letter.attempts == 3
    assert "RuntimeError: boom 3" in letter.error
    stats = await relay.stats()
    assert (stats.dead_letters, stats.pending_deliveries, stats.pending_events) == (1, 0, 0)


async def test_a_commit_that_publishes_wakes_the_relay(
    database: Database, settings: Settings
) -> None:
    settings = settings.model_copy(update={"outbox_poll_interval": 60.0})
    delivered: asyncio.Queue[uuid.UUID] = asyncio.Queue()

    async def handler(event: Event, session: AsyncSession) -> None:
        await delivered.put(event.id)

    relay = OutboxRelay(database, [Subscription("q", "blog.*", handler)], settings)
    database.add_after_commit_hook(relay.after_commit)
    await relay.start()
    try:
        # The first may ride the pass that start() triggers; the second can only arrive
        # within the timeout (far shorter than the poll interval) if the commit wakes it.
        for slug in ("first", "second"):
            event = await commit_event(database, "blog.article.created", slug=slug)
            assert await asyncio.wait_for(delivered.get(), TIMEOUT) == event.id
    finally:
        await relay.stop()


async def test_a_commit_that_publishes_only_unsubscribed_events_waits_for_the_poll(
    database: Database, settings: Settings
) -> None:
    delivered: asyncio.Queue[uuid.UUID] = asyncio.Queue()

    async def handler(event: Event, session: AsyncSession) -> None:
        await delivered.put(event.id)

    async def dispatched(event_id: uuid.UUID) -> bool:
        async with database.session() as session:
            row = await session.get(OutboxEvent, event_id)
        assert row is not None
        return row.dispatched_at is not None

    # A woken relay answers within milliseconds; its poll comes after 2 s.
    settings = settings.model_copy(update={"outbox_poll_interval": 2.0})
    relay = OutboxRelay(database, [Subscription("q", "blog.*", handler)], settings)
    database.add_after_commit_hook(relay.after_commit)
    await relay.start()
    try:
        first = await commit_event(database, "blog.article.created", slug="first")
        assert await asyncio.wait_for(delivered.get(), TIMEOUT) == first.id
        # Past the passes that start() and that commit caused, the relay sleeps until
        # woken or until its next poll.
        await asyncio.sleep(0.3)
        quiet = await commit_event(database, "identity.user.logged_in", user=1)
        await asyncio.sleep(0.3)
        woken_for_nothing = await dispatched(quiet.id)
        # The next poll marks it dispatched all the same: nobody was owed it.
        for _ in range(100):
            if await dispatched(quiet.id):
                break
            await asyncio.sleep(0.1)
        polled = await dispatched(quiet.id)
        # An event somebody subscribes to still wakes it at once.
        wanted = await commit_event(database, "blog.article.created", slug="second")
        assert await asyncio.wait_for(delivered.get(), 1.0) == wanted.id
    finally:
        await relay.stop()
    assert not woken_for_nothing
    assert polled
    async with database.session() as session:
        owed = await session.scalar(select(EventDelivery).where(EventDelivery.event_id == quiet.id))
    assert owed is None


async def test_after_commit_clears_the_flag_and_ignores_quiet_commits(
    database: Database, settings: Settings
) -> None:
    relay = OutboxRelay(database, [], settings)
    database.add_after_commit_hook(relay.after_commit)
    async with database.unit_of_work() as session:
        publish(session, "blog.article.created", {})
    assert "engineroom.outbox_dirty" not in session.info
    assert "engineroom.outbox_types" not in session.info
    async with database.unit_of_work() as session:
        await session.execute(select(1))
    assert not relay.running


async def test_stop_lets_the_current_delivery_finish(
    database: Database, settings: Settings
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(event: Event, session: AsyncSession) -> None:
        entered.set()
        await release.wait()
        await record_effect(session, event, "slow")

    relay = OutboxRelay(database, [Subscription("slow", "blog.*", slow)], settings)
    event = await commit_event(database, "blog.article.created", slug="a")
    await relay.start()
    await asyncio.wait_for(entered.wait(), TIMEOUT)

    stopping = asyncio.create_task(relay.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, TIMEOUT)

    assert not relay.running
    assert await effects(database) == [(event.id, "slow")]
    assert (await delivery(database, event.id, "slow")).status == "done"


async def test_stop_cancels_a_delivery_that_outlasts_the_grace_period(
    database: Database, settings: Settings
) -> None:
    entered = asyncio.Event()

    async def stuck(event: Event, session: AsyncSession) -> None:
        await record_effect(session, event, "stuck")
        entered.set()
        await asyncio.Event().wait()

    relay = OutboxRelay(database, [Subscription("stuck", "blog.*", stuck)], settings)
    event = await commit_event(database, "blog.article.created", slug="a")
    await relay.start()
    await asyncio.wait_for(entered.wait(), TIMEOUT)
    await asyncio.wait_for(relay.stop(grace=0.1), TIMEOUT)

    assert not relay.running
    assert await effects(database) == []
    row = await delivery(database, event.id, "stuck")
    assert (row.status, row.attempts) == ("pending", 0)


async def test_events_published_by_a_handler_are_delivered(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    async def chain(event: Event, session: AsyncSession) -> None:
        publish(session, "blog.article.indexed", {"source": str(event.id)})

    indexed: list[Event] = []
    relay = make_relay(
        database,
        [
            Subscription("chain", "blog.article.created", chain),
            recorder("idx", "blog.article.indexed", indexed),
        ],
        settings,
        clock,
    )
    first = await commit_event(database, "blog.article.created", slug="a")
    assert await relay.run_once() == 1
    assert await relay.run_once() == 1
    assert [event.payload for event in indexed] == [{"source": str(first.id)}]


def test_subscription_names_must_be_unique(settings: Settings) -> None:
    database = Database(settings)
    with pytest.raises(ValueError, match="duplicate subscription name 'twice'"):
        OutboxRelay(database, [recorder("twice", "a.b"), recorder("twice", "c.d")], settings)


async def test_stats_report_the_outbox_lag(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    calls: list[Event] = []
    relay = make_relay(database, [failing("f", "blog.*", 1, calls)], settings, clock)
    assert await relay.stats() == type(await relay.stats())(0, 0.0, 0, 0)

    first = await commit_event(database, "blog.article.created", slug="a")
    await commit_event(database, "blog.article.created", slug="b")
    clock.now = first.occurred_at + timedelta(seconds=30)
    stats = await relay.stats()
    assert (stats.pending_events, stats.pending_deliveries) == (2, 0)
    assert stats.oldest_pending_age_seconds == pytest.approx(30.0)

    # The first delivery fails: both events are dispatched, but the first is still owed.
    await relay.run_once()
    stats = await relay.stats()
    assert (stats.pending_events, stats.pending_deliveries) == (0, 1)
    assert stats.oldest_pending_age_seconds == pytest.approx(30.0)

    clock.advance(settings.outbox_backoff_max)
    await relay.run_once()
    stats = await relay.stats()
    assert (stats.pending_events, stats.pending_deliveries) == (0, 0)
    assert stats.oldest_pending_age_seconds == 0.0


async def test_purge_removes_only_old_fully_delivered_events(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"outbox_max_attempts": 50})
    calls: list[Event] = []
    relay = make_relay(
        database,
        [recorder("ok", "blog.ok"), failing("f", "blog.failing", 1000, calls)],
        settings,
        clock,
    )
    delivered = await commit_event(database, "blog.ok", n=1)
    owed = await commit_event(database, "blog.failing", n=2)
    await relay.run_once()
    clock.advance(8 * 86400)
    recent = await commit_event(database, "blog.ok", n=3)
    await relay.run_once()

    assert await relay.purge_delivered(timedelta(days=7)) == 1

    async with database.session() as session:
        remaining = set((await session.scalars(select(OutboxEvent.id))).all())
        delivery_events = set((await session.scalars(select(EventDelivery.event_id))).all())
    assert remaining == {owed.id, recent.id}
    assert delivered.id not in delivery_events
    assert {owed.id, recent.id} <= delivery_events


async def test_peer_subscribers_get_deliveries_that_only_their_process_runs(
    database: Database, settings: Settings, clock: FakeClock
) -> None:
    # Two processes serve different modules on one database: whichever fans out first
    # must create the other's delivery rows, or the other never hears of the event.
    blog = recorder("blog.project_author", "identity.user.*")
    identity_process = OutboxRelay(
        database,
        [recorder("identity.audit", "identity.user.*")],
        settings,
        clock=clock,
        peer_subscriptions=[blog],
    )
    blog_process = OutboxRelay(database, [blog], settings, clock=clock)
    event = await commit_event(database, "identity.user.registered", user_id="u1")

    assert await identity_process.run_once() == 1
    assert (await delivery(database, event.id, "blog.project_author")).status == "pending"
    assert await identity_process.run_once() == 0  # not its subscriber to run
    assert await blog_process.run_once() == 1
    assert await effects(database) == [
        (event.id, "identity.audit"),
        (event.id, "blog.project_author"),
    ]
