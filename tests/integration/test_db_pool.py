"""Pooled server connections: pinged before use only after sitting idle (PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from engineroom.core import db
from engineroom.core.db import Database
from tests.support import services
from tests.support.settings import settings_on

pytestmark = pytest.mark.postgres


@pytest.fixture
async def database(tmp_path: Path, postgres_url: str) -> AsyncIterator[Database]:
    settings = settings_on(postgres_url, tmp_path)
    database = Database(settings)
    try:
        yield database
    finally:
        await database.dispose()


def count_pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    pings: list[object] = []
    dialect = database.engine.dialect
    original = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return original(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


async def backend_pid(database: Database) -> int:
    async with database.unit_of_work() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_used_moments_ago_is_not_pinged(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = count_pings(database, monkeypatch)
    first = await backend_pid(database)
    second = await backend_pid(database)
    assert first == second  # the same pooled connection, reused
    assert pings == []

    monkeypatch.setattr(db, "IDLE_PING_AFTER_S", 0.0)
    assert await backend_pid(database) == first
    assert len(pings) == 1


async def test_an_idle_connection_that_died_is_replaced_before_use(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = await backend_pid(database)
    async with services.postgres_admin() as admin:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", dead) is True
    # As if it had sat in the pool past the idle threshold.
    monkeypatch.setattr(db, "IDLE_PING_AFTER_S", 0.0)
    replacement = await backend_pid(database)
    assert replacement != dead
