"""Every migration, on each of the three real databases: empty -> heads -> base.

Every module of the catalog takes part, plus the test-only demo module, so a module that
lands with a migration that does not run on one of the three databases fails here.

After the upgrade the schema must match the models exactly (Alembic's autogenerate
comparison finds nothing), so a model changed without a migration fails here.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

import engineroom.core.events.models  # noqa: F401 - registers the kernel's tables
from engineroom.catalog import load_modules
from engineroom.core.db import Database
from engineroom.core.migrations.runner import (
    downgrade,
    is_at_head,
    is_search_index_table,
    pending_migrations,
    schema_differences,
    table_belongs_to,
)
from engineroom.core.models import Base
from engineroom.settings import Settings
from tests.support.demo_module import demo_module
from tests.support.settings import settings_on

MODULES = (*load_modules(), demo_module)
REPOSITORY = Path(__file__).resolve().parents[2]
BRANCHES = ("core", *(module.name for module in MODULES))


def _settings(tmp_path: Path, url: str) -> Settings:
    return settings_on(url, tmp_path)


async def _table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names)


def _model_tables() -> set[str]:
    return {name for name in Base.metadata.tables if table_belongs_to(name, BRANCHES)}


_UPGRADE = """
import sys
from engineroom.core.migrations.runner import upgrade_sync
from engineroom.settings import Settings
from engineroom.catalog import load_modules
from tests.support.demo_module import demo_module
url, data_dir = sys.argv[1:3]
settings = Settings(_env_file=None, environment="test", data_dir=data_dir, database_url=url)
upgrade_sync(settings, [*load_modules(), demo_module])
"""


async def _upgrade_from_two_processes_at_once(settings: Settings) -> None:
    """Two replicas starting together: one migrates, the other waits and finds no work."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _UPGRADE,
            settings.resolved_database_url,
            str(settings.data_dir),
            cwd=REPOSITORY,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = await asyncio.wait_for(
        asyncio.gather(*(process.communicate() for process in processes)), timeout=120
    )
    for process, (_stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode(errors="replace")


async def _round_trip(settings: Settings) -> None:
    database = Database(settings)
    try:
        pending = await pending_migrations(database, MODULES)
        assert len(pending) >= 2, "core and demo each have at least one revision"
        assert not await is_at_head(database, MODULES)

        await _upgrade_from_two_processes_at_once(settings)

        tables = await _table_names(database.engine)
        expected = _model_tables()
        assert {"core_outbox", "core_event_delivery", "core_dead_letter", "demo_note"} <= expected
        # Full-text index tables are dialect-specific DDL without models (see the runner).
        modelled = {name for name in tables if not is_search_index_table(name)}
        assert modelled == expected | {"alembic_version"}
        assert await pending_migrations(database, MODULES) == []
        assert await is_at_head(database, MODULES)
        assert await schema_differences(database.engine, MODULES) == []

        await downgrade(settings, MODULES)
        assert await _table_names(database.engine) <= {"alembic_version"}
        assert await pending_migrations(database, MODULES) == pending
    finally:
        await database.dispose()


async def test_sqlite_migrates_up_and_down(tmp_path: Path) -> None:
    await _round_trip(_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"))


@pytest.mark.postgres
async def test_postgresql_migrates_up_and_down(tmp_path: Path, postgres_url: str) -> None:
    await _round_trip(_settings(tmp_path, postgres_url))


@pytest.mark.mariadb
async def test_mariadb_migrates_up_and_down(tmp_path: Path, mariadb_url: str) -> None:
    await _round_trip(_settings(tmp_path, mariadb_url))
