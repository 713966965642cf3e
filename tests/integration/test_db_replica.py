"""Read routing: with DATABASE_REPLICA_URLS set, reads go to the replica, writes to the
primary. Two PostgreSQL databases stand in for a primary and its replica, holding
different rows so that each read shows where it went."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import insert, select

from engineroom.app import create_app
from engineroom.core.db import Database
from engineroom.core.migrations.runner import upgrade
from engineroom.settings import Settings
from tests.support import services
from tests.support.demo_module import demo_module
from tests.support.demo_module.models import DemoNote
from tests.support.settings import settings_on

pytestmark = pytest.mark.postgres
MODULES = (demo_module,)


async def _admin(statement: str) -> None:
    async with services.postgres_admin() as connection:
        await connection.execute(statement)


@pytest.fixture
async def replica_url(postgres_url: str) -> AsyncIterator[str]:
    """A second database on the same server (postgres_url has checked it is up)."""
    name = f"engineroom_test_{services.random_suffix()}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _settings(tmp_path: Path, url: str, replicas: list[str]) -> Settings:
    return settings_on(url, tmp_path, database_replica_urls=replicas, outbox_poll_interval=0.05)


@pytest.fixture
async def routed(tmp_path: Path, postgres_url: str, replica_url: str) -> Settings:
    """Both databases migrated; the primary holds "on primary", the replica "on replica"."""
    for url, title in ((postgres_url, "on primary"), (replica_url, "on replica")):
        alone = _settings(tmp_path, url, [])
        await upgrade(alone, MODULES)
        database = Database(alone)
        try:
            async with database.unit_of_work() as session:
                await session.execute(insert(DemoNote).values(title=title))
        finally:
            await database.dispose()
    return _settings(tmp_path, postgres_url, [replica_url])


async def _titles(database: Database, *, read: bool) -> list[str]:
    query = select(DemoNote.title).order_by(DemoNote.title)
    if read:
        async with database.read_only() as session:
            return list((await session.scalars(query)).all())
    async with database.unit_of_work() as session:
        return list((await session.scalars(query)).all())


async def test_read_sessions_use_the_replica_and_writes_the_primary(routed: Settings) -> None:
    database = Database(routed)
    try:
        assert await _titles(database, read=True) == ["on replica"]
        assert await _titles(database, read=False) == ["on primary"]
        async with database.read_session() as session:
            assert list(await session.scalars(select(DemoNote.title))) == ["on replica"]
        async with database.session() as session:
            assert list(await session.scalars(select(DemoNote.title))) == ["on primary"]
    finally:
        await database.dispose()


async def test_requests_read_from_the_replica_and_write_to_the_primary(routed: Settings) -> None:
    app = create_app(routed, modules=MODULES)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        created = await client.post("/api/v1/demo/notes", json={"title": "from a request"})
        assert created.status_code == 201, created.text
        listed = await client.get("/api/v1/demo/notes")
        assert listed.status_code == 200, listed.text
        assert [note["title"] for note in listed.json()["notes"]] == ["on replica"]

    database = Database(routed)
    try:
        assert await _titles(database, read=False) == ["from a request", "on primary"]
    finally:
        await database.dispose()
