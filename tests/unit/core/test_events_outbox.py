"""Publishing to the outbox: the event exists exactly when the caller's transaction commits."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from engineroom.core.db import Database
from engineroom.core.events import publish, publish_now
from engineroom.core.events.models import OutboxEvent
from engineroom.core.events.outbox import OUTBOX_DIRTY_KEY, OUTBOX_TYPES_KEY
from engineroom.settings import Settings
from tests.support.schema import create_all


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    await create_all(database)
    yield database
    await database.dispose()


async def _outbox_rows(database: Database) -> list[OutboxEvent]:
    async with database.session() as session:
        return list((await session.scalars(select(OutboxEvent))).all())


async def test_a_committed_event_is_stored_with_its_payload(database: Database) -> None:
    async with database.unit_of_work() as session:
        event = publish(session, "identity.user.registered", {"user_id": 7, "tags": ("a", "b")})
        assert session.info[OUTBOX_DIRTY_KEY] is True

    [row] = await _outbox_rows(database)
    assert row.id == event.id
    assert event.id.version == 7
    assert row.type == "identity.user.registered"
    # What handlers will read back, and what the returned event already says.
    assert row.payload == {"user_id": 7, "tags": ["a", "b"]}
    assert event.payload == row.payload
    assert row.occurred_at == event.occurred_at
    assert row.occurred_at.tzinfo is not None
    assert row.dispatched_at is None


async def test_a_rolled_back_transaction_leaves_no_event(database: Database) -> None:
    class Boom(Exception):
        pass

    async def publish_then_fail() -> None:
        async with database.unit_of_work() as session:
            publish(session, "blog.article.created", {"slug": "x"})
            await session.flush()
            raise Boom

    with pytest.raises(Boom):
        await publish_then_fail()

    assert await _outbox_rows(database) == []


async def test_publish_never_commits_by_itself(database: Database) -> None:
    session = database.session()
    try:
        publish(session, "blog.article.created", {"slug": "x"})
        await session.flush()
        async with database.read_only() as reader:
            count = await reader.scalar(select(func.count()).select_from(OutboxEvent))
        assert count == 0
    finally:
        await session.close()
    assert await _outbox_rows(database) == []


async def test_a_mutation_after_publish_does_not_change_the_event(database: Database) -> None:
    payload = {"items": [1, 2]}
    async with database.unit_of_work() as session:
        event = publish(session, "shop.order.placed", payload)
        payload["items"].append(3)
    [row] = await _outbox_rows(database)
    assert row.payload == {"items": [1, 2]}
    assert event.payload == {"items": [1, 2]}


@pytest.mark.parametrize(
    "event_type",
    [
        "",
        "user",
        "Identity.user.registered",
        "identity..user",
        "identity.user.",
        ".a.b",
        "a b.c",
        "identity.user-registered",
        "a." + "b" * 200,
    ],
)
async def test_a_malformed_event_type_is_refused(database: Database, event_type: str) -> None:
    async with database.unit_of_work() as session:
        with pytest.raises(ValueError, match="event type"):
            publish(session, event_type, {})
        assert OUTBOX_DIRTY_KEY not in session.info
    assert await _outbox_rows(database) == []


@pytest.mark.parametrize(
    "payload",
    [
        {"id": uuid.uuid4()},
        {"at": datetime(2026, 1, 1, tzinfo=UTC)},
        {"value": math.nan},
        {"raw": b"bytes"},
    ],
)
async def test_a_payload_that_is_not_json_is_refused_at_publish(
    database: Database, payload: dict[str, object]
) -> None:
    async with database.unit_of_work() as session:
        with pytest.raises(ValueError, match="JSON"):
            publish(session, "shop.order.placed", payload)
    assert await _outbox_rows(database) == []


async def test_a_payload_must_be_a_mapping(database: Database) -> None:
    async with database.unit_of_work() as session:
        with pytest.raises(ValueError, match="mapping"):
            publish(session, "shop.order.placed", [1, 2])  # type: ignore[arg-type]


async def test_publish_now_writes_the_row_at_once_in_the_callers_transaction(
    database: Database,
) -> None:
    async with database.unit_of_work() as session:
        event = await publish_now(session, "identity.user.logged_in", {"user_id": "7"})
        # Inserted already (no flush needed), in this transaction.
        stored = await session.scalar(select(OutboxEvent).where(OutboxEvent.id == event.id))
        assert stored is not None
        assert session.info[OUTBOX_DIRTY_KEY] is True
        assert session.info[OUTBOX_TYPES_KEY] == {"identity.user.logged_in"}

    [row] = await _outbox_rows(database)
    assert (row.id, row.type, row.payload) == (
        event.id,
        "identity.user.logged_in",
        {"user_id": "7"},
    )
    assert row.occurred_at == event.occurred_at
    assert row.dispatched_at is None


async def test_publish_now_rolls_back_with_the_callers_transaction(database: Database) -> None:
    async def publish_then_fail() -> None:
        async with database.unit_of_work() as session:
            await publish_now(session, "identity.user.logged_in", {"user_id": "7"})
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await publish_then_fail()
    assert await _outbox_rows(database) == []


async def test_publish_now_refuses_what_publish_refuses(database: Database) -> None:
    async with database.unit_of_work() as session:
        with pytest.raises(ValueError, match="event type"):
            await publish_now(session, "Identity.user", {})
        with pytest.raises(ValueError, match="JSON"):
            await publish_now(session, "identity.user.logged_in", {"at": math.nan})
        assert OUTBOX_DIRTY_KEY not in session.info
    assert await _outbox_rows(database) == []
