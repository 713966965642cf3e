"""UTCDateTime on PostgreSQL and MariaDB: aware UTC in, aware UTC out, microseconds kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.exc import StatementError

from engineroom.core.db import Database
from engineroom.core.models import UTCDateTime
from engineroom.settings import Settings

metadata = MetaData()
stamp = Table(
    "test_stamp",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime(), nullable=False),
)
MOMENT = datetime(2024, 7, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
MOMENT_UTC = datetime(2024, 7, 1, 10, 30, 15, 123456, tzinfo=UTC)


async def _database(tmp_path: Path, url: str) -> AsyncIterator[Database]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=tmp_path / "data",
        database_url=url,
    )
    database = Database(settings)
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def postgres(tmp_path: Path, postgres_url: str) -> AsyncIterator[Database]:
    async for database in _database(tmp_path, postgres_url):
        yield database


@pytest.fixture
async def mariadb(tmp_path: Path, mariadb_url: str) -> AsyncIterator[Database]:
    async for database in _database(tmp_path, mariadb_url):
        yield database


async def _round_trip(database: Database) -> datetime:
    async with database.unit_of_work() as session:
        await session.execute(insert(stamp).values(id=1, at=MOMENT))
    async with database.read_only() as session:
        stored: datetime = (await session.execute(select(stamp.c.at))).scalar_one()
    return stored


async def _rejects_naive(database: Database) -> None:
    naive = datetime(2024, 7, 1, 12, 30)  # noqa: DTZ001 - the point of the test
    with pytest.raises(StatementError, match="naive datetime"):
        async with database.unit_of_work() as session:
            await session.execute(insert(stamp).values(id=2, at=naive))


@pytest.mark.postgres
async def test_postgresql_keeps_utc_microseconds_whatever_the_session_zone(
    postgres: Database,
) -> None:
    stored = await _round_trip(postgres)
    assert stored == MOMENT_UTC
    assert stored.tzinfo is UTC
    async with postgres.read_only() as session:
        # A server or session in another zone must not change what the model sees.
        await session.execute(text("SET LOCAL TIME ZONE 'Asia/Tokyo'"))
        seen = (await session.execute(select(stamp.c.at))).scalar_one()
        wall_clock = (await session.execute(text("SELECT at::text FROM test_stamp"))).scalar()
    assert seen == MOMENT_UTC
    assert seen.tzinfo is UTC
    assert wall_clock == "2024-07-01 19:30:15.123456+09"
    await _rejects_naive(postgres)


@pytest.mark.mariadb
async def test_mariadb_stores_utc_with_microseconds(mariadb: Database) -> None:
    stored = await _round_trip(mariadb)
    assert stored == MOMENT_UTC
    assert stored.tzinfo is UTC
    async with mariadb.read_only() as session:
        raw = (await session.execute(text("SELECT CAST(at AS CHAR) FROM test_stamp"))).scalar()
    # Stored as the UTC wall-clock time, microseconds included (DATETIME(6)).
    assert raw == "2024-07-01 10:30:15.123456"
    await _rejects_naive(mariadb)
