"""Create the kernel's tables on a test database without running migrations.

Also holds ``event_effect``, the table event-handler tests write to: its UNIQUE
(event_id, subscriber) turns a duplicate delivery into an error instead of a silent count.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Column, Integer, MetaData, String, Table, UniqueConstraint, Uuid, select
from sqlalchemy.ext.asyncio import AsyncSession

import engineroom.core.events.models  # noqa: F401 - registers the outbox tables on Base
from engineroom.core.db import Database
from engineroom.core.events import Event
from engineroom.core.models import Base

test_metadata = MetaData()
event_effect = Table(
    "test_event_effect",
    test_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Uuid(), nullable=False),
    Column("subscriber", String(200), nullable=False),
    UniqueConstraint("event_id", "subscriber", name="uq_test_event_effect"),
)


async def create_all(database: Database) -> None:
    """Create every table on ``Base`` plus the test-only tables."""
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
        await connection.run_sync(test_metadata.create_all)


async def record_effect(session: AsyncSession, event: Event, subscriber: str) -> None:
    await session.execute(event_effect.insert().values(event_id=event.id, subscriber=subscriber))


async def effects(database: Database) -> list[tuple[uuid.UUID, str]]:
    """Every (event id, subscriber) written by handlers, in insertion order."""
    async with database.session() as session:
        rows = await session.execute(
            select(event_effect.c.event_id, event_effect.c.subscriber).order_by(event_effect.c.id)
        )
        return [(row.event_id, row.subscriber) for row in rows]
