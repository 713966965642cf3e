"""The migration runner on SQLite: layout rules, status, authoring new revisions."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Column, String, Table, Uuid

from engineroom.core.db import Database
from engineroom.core.migrations.runner import (
    CORE_BRANCH,
    MigrationError,
    branch_directories,
    downgrade,
    is_at_head,
    migration_config,
    new_revision,
    pending_migrations,
    schema_differences,
    upgrade,
)
from engineroom.core.models import Base, UTCDateTime
from engineroom.core.module import Module
from engineroom.settings import Settings
from tests.support.demo_module import demo_module

REVISION_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}_[a-z0-9_]+\.py$")


def _script(settings: Settings, modules: tuple[Module, ...]) -> ScriptDirectory:
    return ScriptDirectory.from_config(migration_config(settings, modules))


def _root(script: ScriptDirectory, branch: str) -> Script:
    roots = [r for r in script.walk_revisions() if r.is_base and branch in r.branch_labels]
    assert len(roots) == 1, f"branch {branch} must have exactly one first revision"
    return roots[0]


def _head(script: ScriptDirectory, branch: str) -> Script:
    heads = [r for r in script.walk_revisions() if r.is_head and branch in r.branch_labels]
    assert len(heads) == 1, f"branch {branch} must have exactly one head"
    return heads[0]


def _tables(settings: Settings) -> set[str]:
    path = settings.data_dir / "engineroom.db"
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


def test_revision_files_are_named_by_date_and_slug(settings: Settings) -> None:
    for directory in branch_directories([demo_module]).values():
        files = [p.name for p in directory.glob("*.py") if p.name != "__init__.py"]
        assert files, f"{directory} holds no revisions"
        assert [name for name in files if not REVISION_FILE.match(name)] == []


def test_each_module_is_one_branch_rooted_on_core(settings: Settings) -> None:
    script = _script(settings, (demo_module,))
    for branch in (CORE_BRANCH, demo_module.name):
        _head(script, branch)
    assert _root(script, demo_module.name).dependencies == _root(script, CORE_BRANCH).revision


async def test_status_follows_upgrades_and_downgrades(settings: Settings) -> None:
    database = Database(settings)
    try:
        everything = await pending_migrations(database, [demo_module])
        core_only = await pending_migrations(database, [])
        assert everything[: len(core_only)] == core_only, "core runs first"
        assert len(everything) > len(core_only)

        await upgrade(settings, [demo_module], f"{CORE_BRANCH}@head")
        assert await pending_migrations(database, [demo_module]) == everything[len(core_only) :]
        assert await is_at_head(database, [])
        assert not await is_at_head(database, [demo_module])

        await upgrade(settings, [demo_module])
        assert await is_at_head(database, [demo_module])
        assert "demo_note" in _tables(settings)

        await downgrade(settings, [demo_module], f"{demo_module.name}@base")
        assert "demo_note" not in _tables(settings)
        assert "core_outbox" in _tables(settings)
        await downgrade(settings, [demo_module])
        assert _tables(settings) <= {"alembic_version"}
    finally:
        await database.dispose()


async def test_unknown_revisions_in_the_database_get_an_explanation(settings: Settings) -> None:
    await upgrade(settings, [demo_module])
    # The version table now names a demo revision, which a core-only run cannot place.
    with pytest.raises(MigrationError, match="not selected"):
        await upgrade(settings, [])


@pytest.fixture
def scratch_table() -> Iterator[Table]:
    """A model added to the shared metadata for one test, as a developer would."""
    table = Table(
        "scratch_item",
        Base.metadata,
        Column("id", Uuid(), primary_key=True, default=uuid.uuid4),
        Column("name", String(50), nullable=False),
        Column("seen_at", UTCDateTime(), nullable=False),
    )
    try:
        yield table
    finally:
        Base.metadata.remove(table)


async def test_new_revision_autogenerates_a_module_branch(
    settings: Settings, tmp_path: Path, scratch_table: Table
) -> None:
    scratch = Module(name="scratch", migrations=tmp_path / "scratch" / "migrations")
    modules = (demo_module, scratch)
    await upgrade(settings, modules)
    database = Database(settings)
    try:
        # The model exists and the table does not: the comparison must say so.
        differences = await schema_differences(database.engine, modules)
        assert [d[0] for d in differences] == ["add_table"]
        assert differences[0][1].name == scratch_table.name

        await asyncio.to_thread(new_revision, settings, modules, "scratch", "add items")
        [path] = list((tmp_path / "scratch" / "migrations").glob("*.py"))
        assert path.name == f"{datetime.now().date().isoformat()}_add_items.py"  # noqa: DTZ005
        source = path.read_text(encoding="utf-8")
        assert "branch_labels: str | Sequence[str] | None = ('scratch',)" in source.replace(
            '"', "'"
        )
        assert "from engineroom.core.models import UTCDateTime" in source
        assert "demo_note" not in source, "another module's tables stay out"
        core_head = _head(_script(settings, modules), CORE_BRANCH)
        assert core_head.revision in source, "a new branch depends on core"

        assert await pending_migrations(database, modules) != []
        await upgrade(settings, modules)
        assert "scratch_item" in _tables(settings)
        assert await schema_differences(database.engine, modules) == []
        assert await is_at_head(database, modules)

        await asyncio.to_thread(
            new_revision, settings, modules, "scratch", "second step", autogenerate=False
        )
        script = _script(settings, modules)
        second = _head(script, "scratch")
        assert second.path.endswith("_second_step.py")
        assert second.down_revision == _root(script, "scratch").revision
    finally:
        await database.dispose()


def test_new_revision_refuses_an_unknown_module(settings: Settings) -> None:
    with pytest.raises(MigrationError, match="nosuch"):
        new_revision(settings, [demo_module], "nosuch", "anything", autogenerate=False)
