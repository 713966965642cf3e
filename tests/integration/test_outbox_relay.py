"""The outbox relay on PostgreSQL and MariaDB, alone and with a second relay competing."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.db import Database
from engineroom.core.events import Event, OutboxRelay, Subscription, publish
from engineroom.core.events.models import DeadLetter, EventDelivery, OutboxEvent
from engineroom.settings import Settings
from tests.support.schema import create_all, effects, record_effect

TIMEOUT = 60.0
BACKENDS = [
    pytest.param("postgres_url", marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("mariadb_url", marks=pytest.mark.mariadb, id="mariadb"),
]


@pytest.fixture(params=BACKENDS)
def server_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url: str = request.getfixturevalue(request.param)
    return Settings(
        _env_file=None,
        environment="test",
        data_dir=tmp_path / "data",
        database_url=url,
        outbox_poll_interval=0.05,
        outbox_backoff_base=0.01,
        outbox_backoff_max=0.02,
        outbox_max_attempts=3,
    )


@pytest.fixture
async def database(server_settings: Settings) -> AsyncIterator[Database]:
    database = Database(server_settings)
    await create_all(database)
    yield database
    await database.dispose()


def recorder(name: str, event_type: str, calls: list[tuple[uuid.UUID, str]]) -> Subscription:
    async def handler(event: Event, session: AsyncSession) -> None:
        calls.append((event.id, name))
        # Yield mid-transaction so that competing relays really interleave.
        await asyncio.sleep(0)
        await record_effect(session, event, name)

    return Subscription(name=name, event_type=event_type, handler=handler)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def all_delivered(database: Database, expected: int) -> bool:
    return len(await effects(database)) >= expected


async def commit_event(database: Database, event_type: str, **payload: object) -> Event:
    async with database.unit_of_work() as session:
        return publish(session, event_type, payload)


async def test_core_flow(database: Database, server_settings: Settings) -> None:
    calls: list[tuple[uuid.UUID, str]] = []
    failures: list[uuid.UUID] = []

    async def broken(event: Event, session: AsyncSession) -> None:
        failures.append(event.id)
        await record_effect(session, event, "broken")
        raise RuntimeError("downstream is down")

    relay = OutboxRelay(
        database,
        [
            recorder("exact", "blog.article.created", calls),
            recorder("prefix", "blog.*", calls),
            Subscription("broken", "blog.article.created", broken),
        ],
        server_settings,
    )

    async def publish_then_fail() -> None:
        async with database.unit_of_work() as session:
            publish(session, "blog.article.created", {"slug": "rolled-back"})
            raise LookupError

    with pytest.raises(LookupError):
        await publish_then_fail()
    created = await commit_event(database, "blog.article.created", slug="a")
    deleted = await commit_event(database, "blog.article.deleted", slug="a")
    ignored = await commit_event(database, "shop.order.placed", order=1)

    assert await relay.run_once() == 3
    assert (await relay.stats()).pending_deliveries == 1

    async def dead_lettered() -> bool:
        await relay.run_once()
        return (await relay.stats()).dead_letters > 0

    await eventually(dead_lettered)
    assert await relay.run_once() == 0

    assert sorted(await effects(database), key=str) == sorted(
        [(created.id, "exact"), (created.id, "prefix"), (deleted.id, "prefix")], key=str
    )
    assert len(calls) == 3
    assert failures == [created.id] * 3
    async with database.session() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
        outbox = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all()
    assert (letter.event_id, letter.subscriber, letter.attempts) == (created.id, "broken", 3)
    assert "downstream is down" in letter.error
    assert letter.payload == {"slug": "a"}
    assert [row.id for row in outbox] == [created.id, deleted.id, ignored.id]
    assert all(row.dispatched_at is not None for row in outbox)
    stats = await relay.stats()
    assert (stats.pending_events, stats.pending_deliveries, stats.dead_letters) == (0, 0, 1)


async def test_two_relays_deliver_each_event_once_per_subscriber(
    database: Database, server_settings: Settings
) -> None:
    events, subscribers = 60, ("a", "b", "c")
    calls: list[tuple[uuid.UUID, str]] = []
    subscriptions = [recorder(name, "bench.*", calls) for name in subscribers]
    second_database = Database(server_settings)
    relays = [
        OutboxRelay(database, subscriptions, server_settings),
        OutboxRelay(second_database, subscriptions, server_settings),
    ]
    database.add_after_commit_hook(relays[0].after_commit)
    second_database.add_after_commit_hook(relays[1].after_commit)
    for relay in relays:
        await relay.start()
    try:
        published = await asyncio.gather(
            *(
                commit_event((database, second_database)[i % 2], "bench.tick", n=i)
                for i in range(events)
            )
        )
        await eventually(lambda: all_delivered(database, events * len(subscribers)))
        # Both relays get a last chance to (wrongly) deliver anything again.
        for relay in relays:
            await relay.run_once()
    finally:
        for relay in relays:
            await relay.stop()
        await second_database.dispose()

    expected = {(event.id, name) for event in published for name in subscribers}
    assert Counter(calls) == Counter(expected)
    assert sorted(await effects(database), key=str) == sorted(expected, key=str)
    async with database.session() as session:
        statuses = (
            await session.execute(
                select(EventDelivery.status, EventDelivery.attempts, func.count()).group_by(
                    EventDelivery.status, EventDelivery.attempts
                )
            )
        ).all()
    assert [tuple(row) for row in statuses] == [("done", 1, events * len(subscribers))]
