"""The database layer on SQLite: connection settings, the unit of work, read sessions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from engineroom.core.db import SQLITE_BUSY_TIMEOUT_MS, Database
from engineroom.core.models import UTCDateTime
from engineroom.settings import Settings

metadata = MetaData()
counter = Table(
    "test_counter",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("value", Integer, nullable=False),
)
parent = Table("test_parent", metadata, Column("id", Integer, primary_key=True))
child = Table(
    "test_child",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("parent_id", Integer, ForeignKey("test_parent.id"), nullable=False),
)
# Checked at COMMIT, so a unit of work can fail in the commit itself.
deferred_child = Table(
    "test_deferred_child",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "parent_id",
        Integer,
        ForeignKey("test_parent.id", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
)
stamp = Table(
    "test_stamp",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
)


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(settings)
    async with db.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    async with db.unit_of_work() as session:
        await session.execute(insert(counter).values(id=1, value=0))
    try:
        yield db
    finally:
        await db.dispose()


def _sqlite_path(db: Database) -> Path:
    name = db.engine.url.database
    assert name
    return Path(name)


async def _pragma(engine: AsyncEngine, name: str) -> object:
    async with engine.connect() as connection:
        return (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()


async def _counter_value(db: Database) -> int:
    async with db.read_only() as session:
        return int((await session.execute(select(counter.c.value))).scalar_one())


# ---- connections ------------------------------------------------------------------------


async def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(
    database: Database,
) -> None:
    assert database.read_engines, "the embedded database has a read pool"
    for engine in (database.engine, *database.read_engines):
        assert str(await _pragma(engine, "journal_mode")).lower() == "wal"
        assert await _pragma(engine, "foreign_keys") == 1
        assert await _pragma(engine, "busy_timeout") == SQLITE_BUSY_TIMEOUT_MS


async def test_foreign_keys_are_enforced(database: Database) -> None:
    with pytest.raises(IntegrityError):
        async with database.unit_of_work() as session:
            await session.execute(insert(child).values(id=1, parent_id=404))


def _try_to_take_write_lock(path: Path) -> str:
    connection = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        return str(exc)
    finally:
        connection.close()
    return "acquired"


async def test_write_transaction_holds_the_write_lock_from_its_start(
    database: Database,
) -> None:
    path = _sqlite_path(database)
    async with database.unit_of_work() as session:
        # Only a read so far: a deferred BEGIN would not hold the write lock yet.
        await session.execute(select(counter.c.value))
        outcome = await asyncio.to_thread(_try_to_take_write_lock, path)
    assert "locked" in outcome
    assert await asyncio.to_thread(_try_to_take_write_lock, path) == "acquired"


async def _increment(db: Database) -> None:
    async with db.unit_of_work() as session:
        value = (await session.execute(select(counter.c.value))).scalar_one()
        # Let the other units of work run between the read and the write.
        await asyncio.sleep(0)
        await session.execute(update(counter).values(value=value + 1))


async def test_concurrent_read_then_write_units_of_work_all_succeed(
    database: Database,
) -> None:
    workers = 40
    results = await asyncio.wait_for(
        asyncio.gather(*(_increment(database) for _ in range(workers)), return_exceptions=True),
        timeout=90,
    )
    failures = [result for result in results if isinstance(result, BaseException)]
    assert failures == []
    # No lost update: every read-then-write saw the previous one's result.
    assert await _counter_value(database) == workers


async def test_a_statement_is_one_call_to_the_drivers_thread(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    async with database.unit_of_work() as session:
        added = await session.execute(insert(parent).values(id=5))
        values = (await session.execute(select(counter.c.id, counter.c.value))).all()
        updated = await session.execute(update(counter).values(value=3))
        nothing = (await session.execute(select(parent.c.id).where(parent.c.id == 404))).all()
    # BEGIN IMMEDIATE, four statements, COMMIT; and no rollback when the connection goes
    # back to the pool after that commit.
    assert len(calls) == 6
    assert added.lastrowid == 5
    assert values == [(1, 0)]
    assert updated.rowcount == 1  # type: ignore[attr-defined]
    assert nothing == []
    assert await _counter_value(database) == 3


async def test_a_failed_statement_raises_the_database_error_and_rolls_back(
    database: Database,
) -> None:
    async def insert_twice() -> None:
        async with database.unit_of_work() as session:
            await session.execute(insert(parent).values(id=9))
            await session.execute(insert(parent).values(id=9))

    with pytest.raises(IntegrityError, match="UNIQUE"):
        await insert_twice()
    async with database.read_only() as session:
        assert (await session.execute(select(func.count()).select_from(parent))).scalar() == 0


async def test_a_transaction_left_open_is_rolled_back_when_its_connection_returns(
    database: Database,
) -> None:
    def begin_behind_sqlalchemy(connection: Any) -> None:
        cursor = connection.connection.dbapi_connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.close()

    async with database.engine.connect() as connection:
        await connection.run_sync(begin_behind_sqlalchemy)
        held = await asyncio.to_thread(_try_to_take_write_lock, _sqlite_path(database))
    assert "locked" in held
    # Back in the pool, rolled back: the write lock is free again.
    assert await asyncio.to_thread(_try_to_take_write_lock, _sqlite_path(database)) == "acquired"


# ---- unit of work -----------------------------------------------------------------------


async def test_unit_of_work_commits_on_success(database: Database) -> None:
    async with database.unit_of_work() as session:
        await session.execute(update(counter).values(value=7))
    assert await _counter_value(database) == 7


async def test_unit_of_work_rolls_back_on_exception(database: Database) -> None:
    class Boom(Exception):
        pass

    async def write_then_fail() -> None:
        async with database.unit_of_work() as session:
            await session.execute(update(counter).values(value=99))
            await session.flush()
            raise Boom

    with pytest.raises(Boom):
        await write_then_fail()
    assert await _counter_value(database) == 0


async def test_after_commit_hooks_run_only_after_a_successful_commit(
    database: Database,
) -> None:
    calls: list[tuple[AsyncSession, bool]] = []
    database.add_after_commit_hook(
        lambda session: calls.append((session, session.in_transaction()))
    )

    async with database.unit_of_work() as session:
        await session.execute(update(counter).values(value=1))
        assert calls == []
    assert calls == [(session, False)]

    async def fail_before_commit() -> None:
        async with database.unit_of_work() as session:
            await session.execute(update(counter).values(value=2))
            raise RuntimeError("fail before commit")

    with pytest.raises(RuntimeError):
        await fail_before_commit()
    assert len(calls) == 1

    # A commit that fails (a deferred foreign key) is not a success either.
    with pytest.raises(IntegrityError):
        async with database.unit_of_work() as session:
            await session.execute(insert(deferred_child).values(id=5, parent_id=123))
    assert len(calls) == 1
    assert await _counter_value(database) == 1


# ---- read sessions ----------------------------------------------------------------------


async def test_read_only_sees_committed_data(database: Database) -> None:
    async with database.unit_of_work() as session:
        await session.execute(insert(parent).values(id=1))
    async with database.read_only() as session:
        count = (await session.execute(select(func.count()).select_from(parent))).scalar_one()
    assert count == 1


async def test_read_only_never_writes(database: Database) -> None:
    with pytest.raises(OperationalError, match="readonly"):
        async with database.read_only() as session:
            await session.execute(update(counter).values(value=42))
    async with database.read_only() as session:
        # An ORM-free write through read_session() is refused the same way.
        with pytest.raises(OperationalError, match="readonly"):
            await session.execute(text("DELETE FROM test_counter"))
    assert await _counter_value(database) == 0


async def test_read_only_does_not_take_the_write_lock(database: Database) -> None:
    path = _sqlite_path(database)
    async with database.read_only() as session:
        await session.execute(select(counter.c.value))
        outcome = await asyncio.to_thread(_try_to_take_write_lock, path)
    assert outcome == "acquired"


# ---- UTCDateTime ------------------------------------------------------------------------


async def test_utc_datetime_round_trips_aware_values_as_utc(database: Database) -> None:
    paris_summer = timezone(timedelta(hours=2))
    moment = datetime(2024, 7, 1, 12, 30, 15, 123456, tzinfo=paris_summer)
    async with database.unit_of_work() as session:
        await session.execute(insert(stamp).values(id=1, at=moment))
    async with database.read_only() as session:
        stored = (await session.execute(select(stamp.c.at))).scalar_one()
    assert stored == moment
    assert stored.tzinfo is UTC
    assert stored == datetime(2024, 7, 1, 10, 30, 15, 123456, tzinfo=UTC)


async def test_utc_datetime_rejects_naive_values(database: Database) -> None:
    naive = datetime(2024, 7, 1, 12, 30)  # noqa: DTZ001 - the point of the test
    with pytest.raises(StatementError, match="naive datetime"):
        async with database.unit_of_work() as session:
            await session.execute(insert(stamp).values(id=2, at=naive))
    async with database.read_only() as session:
        count = (await session.execute(select(func.count()).select_from(stamp))).scalar_one()
    assert count == 0


def test_a_fresh_sqlite_file_is_in_wal_mode_before_any_pool_connects(tmp_path: Path) -> None:
    # The pools' first connections must never race to switch the journal mode.
    import sqlite3
    from contextlib import closing

    from engineroom.core.db import create_engine_for

    path = tmp_path / "fresh" / "app.db"
    create_engine_for(f"sqlite+aiosqlite:///{path}", Settings(_env_file=None, data_dir=tmp_path))
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_deadlock_victim_transaction_runs_again(settings: Settings) -> None:
    from sqlalchemy.exc import OperationalError

    from engineroom.core.db import Database

    database = Database(settings)
    calls: list[int] = []

    async def deadlocks_once(session: AsyncSession) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception(1213, "Deadlock found"))
        return "done"

    async def locked_out(session: AsyncSession) -> str:
        raise OperationalError("SELECT 1", {}, Exception(1205, "Lock wait timeout"))

    try:
        assert await database.transaction(deadlocks_once) == "done"
        assert len(calls) == 2
        with pytest.raises(OperationalError, match="Lock wait timeout"):
            await database.transaction(locked_out)
    finally:
        await database.dispose()
