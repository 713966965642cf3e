"""Alembic migrations for the kernel and every selected module, on SQLite, PostgreSQL and
MariaDB/MySQL.

One Alembic environment serves them all. Each module's revisions form their own branch
(branch label = module name) in the module's ``migrations/`` directory, and one shared
``alembic_version`` table holds one head per branch. The kernel's revisions are the
``core`` branch and are always included. Upgrades go to ``heads`` and downgrades to
``base``; revision files are named ``YYYY-MM-DD_slug.py``.

Alembic's command API is synchronous and runs ``env.py``, which drives an async engine
with ``asyncio.run``. The async functions below therefore run the command in a worker
thread, which works the same whether the caller is the CLI or a running application.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.schema import SchemaItem

from engineroom.core.db import CONNECT_TIMEOUT_S, SQLITE_BUSY_TIMEOUT_MS, Database
from engineroom.core.models import Base, UTCDateTime
from engineroom.settings import Settings

if TYPE_CHECKING:
    from engineroom.core.module import Module

CORE_BRANCH = "core"
MIGRATIONS_DIR = Path(__file__).resolve().parent
CORE_VERSIONS_DIR = MIGRATIONS_DIR / "versions"
FILE_TEMPLATE = "%(year)d-%(month).2d-%(day).2d_%(slug)s"
# Any constant works; it only has to be the same in every engineroom process.
_LOCK_KEY = 0x656E67696E65
_MYSQL_LOCK_NAME = "engineroom_migrations"
_MYSQL_LOCK_TIMEOUT_S = 300
_COMMAND_LOCK = threading.Lock()


class MigrationError(Exception):
    """Migrations cannot run as asked; the message says what to do."""


# ---- configuration ----------------------------------------------------------------------


def branch_directories(modules: Sequence[Module]) -> dict[str, Path]:
    """Branch label -> directory of its revisions: ``core`` first, then each module."""
    branches = {CORE_BRANCH: CORE_VERSIONS_DIR}
    for module in modules:
        if module.migrations is not None:
            branches[module.name] = Path(module.migrations)
    return branches


def _ini_escape(value: str) -> str:
    # Config values go through configparser interpolation, where "%" is special.
    return value.replace("%", "%%")


def migration_config(settings: Settings, modules: Sequence[Module]) -> Config:
    """An Alembic ``Config`` for the kernel and ``modules``, built without an ini file."""
    branches = branch_directories(modules)
    config = Config()
    config.set_main_option("script_location", _ini_escape(str(MIGRATIONS_DIR)))
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "version_locations",
        _ini_escape(os.pathsep.join(str(path) for path in branches.values())),
    )
    config.set_main_option("file_template", _ini_escape(FILE_TEMPLATE))
    config.set_main_option("truncate_slug_length", "40")
    config.attributes["settings"] = settings
    config.attributes["url"] = settings.resolved_database_url
    config.attributes["branches"] = tuple(branches)
    return config


def config_url(config: Config) -> str:
    url = config.attributes.get("url")
    if not isinstance(url, str):
        raise MigrationError("the Alembic config was not built by migration_config()")
    return url


# ---- what env.py uses -------------------------------------------------------------------


def table_belongs_to(table_name: str, branches: Sequence[str]) -> bool:
    """Tables carry their module's name as prefix (``core_outbox``, ``blog_article``)."""
    return any(table_name == b or table_name.startswith(f"{b}_") for b in branches)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render the shared column types by their importable name."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("from engineroom.core.models import UTCDateTime")
        return "UTCDateTime()"
    return False


def context_options(config: Config, *, dialect_name: str) -> dict[str, Any]:
    """Keyword arguments for ``context.configure`` shared by online and offline runs."""
    # Autogenerating one module's revision must see only that module's tables.
    only = config.attributes.get("autogenerate_branch")
    branches: tuple[str, ...] = (only,) if only else config.attributes.get("branches", ())

    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        return type_ != "table" or name is None or table_belongs_to(name, branches)

    def include_object(obj: SchemaItem, name: str | None, type_: str, *_args: Any) -> bool:
        return type_ != "table" or name is None or table_belongs_to(name, branches)

    sqlite = dialect_name == "sqlite"
    return {
        "target_metadata": _target_metadata(),
        "compare_type": True,
        "compare_server_default": False,
        "include_name": include_name,
        "include_object": include_object,
        "render_item": render_item,
        # SQLite alters tables by copying them; batch mode writes migrations that way.
        "render_as_batch": sqlite,
        # SQLite does run DDL in a transaction once the driver stops managing them
        # (see migration_engine), so a failed upgrade leaves no half-built schema.
        "transactional_ddl": True if sqlite else None,
    }


def _target_metadata() -> MetaData:
    # The kernel's own tables live with the events code; loading them registers them.
    importlib.import_module("engineroom.core.events.models")
    return Base.metadata


def migration_engine(url: str) -> AsyncEngine:
    """A pool-less engine for one migration run."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, poolclass=NullPool)
        _install_sqlite_migration_pragmas(engine)
        return engine
    connect_args: dict[str, Any] = (
        {"timeout": CONNECT_TIMEOUT_S}
        if backend == "postgresql"
        else {"connect_timeout": CONNECT_TIMEOUT_S}
    )
    return create_async_engine(url, poolclass=NullPool, connect_args=connect_args)


def _install_sqlite_migration_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # SQLite's own procedure for rebuilding a table (what batch mode does) turns
        # foreign keys off; check_foreign_keys() verifies them before the commit.
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        # Two processes migrating at once: the second waits, then finds nothing to do.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Serialise concurrent migration runs (SQLite's BEGIN IMMEDIATE already does)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        yield
        return
    if dialect not in ("mysql", "mariadb"):
        yield
        return
    got = connection.execute(
        text("SELECT GET_LOCK(:name, :timeout)"),
        {"name": _MYSQL_LOCK_NAME, "timeout": _MYSQL_LOCK_TIMEOUT_S},
    ).scalar()
    if got != 1:
        raise MigrationError("another process holds the migration lock; try again later")
    try:
        yield
    finally:
        connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK_NAME})


def check_foreign_keys(connection: Connection) -> None:
    """On SQLite, refuse to commit a migration that left dangling foreign keys."""
    if connection.dialect.name != "sqlite":
        return
    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise MigrationError(f"migration left foreign key violations: {problems[:5]}")


# ---- commands ---------------------------------------------------------------------------


def _run_command(fn: Any, config: Config, *args: Any, **kwargs: Any) -> None:
    try:
        # Alembic keeps the running environment in module globals (alembic.context,
        # alembic.op): two commands at once in one process would share them.
        with _COMMAND_LOCK:
            fn(config, *args, **kwargs)
    except CommandError as exc:
        if "Can't locate revision" in str(exc):
            branches = ", ".join(config.attributes.get("branches", ()))
            raise MigrationError(
                f"{exc}: the database has revisions of modules that are not selected "
                f"(selected: {branches}) or that are newer than this engineroom"
            ) from exc
        raise MigrationError(str(exc)) from exc


def upgrade_sync(settings: Settings, modules: Sequence[Module], revision: str = "heads") -> None:
    """Upgrade from synchronous code (no running event loop in this thread)."""
    _run_command(command.upgrade, migration_config(settings, modules), revision)


async def upgrade(settings: Settings, modules: Sequence[Module], revision: str = "heads") -> None:
    """Apply every pending revision of the kernel and ``modules`` (default: to all heads)."""
    config = migration_config(settings, modules)
    await asyncio.to_thread(_run_command, command.upgrade, config, revision)


def downgrade_sync(settings: Settings, modules: Sequence[Module], revision: str = "base") -> None:
    _run_command(command.downgrade, migration_config(settings, modules), revision)


async def downgrade(settings: Settings, modules: Sequence[Module], revision: str = "base") -> None:
    """Revert revisions (default: everything, back to an empty schema)."""
    config = migration_config(settings, modules)
    await asyncio.to_thread(_run_command, command.downgrade, config, revision)


# ---- status -----------------------------------------------------------------------------


def _current_heads(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


def _unapplied(config: Config, current: tuple[str, ...]) -> list[str]:
    script = ScriptDirectory.from_config(config)
    applied = _applied(script, current)
    # walk_revisions goes from the heads down; callers read them in the order they run.
    return [
        script_.revision
        for script_ in reversed(list(script.walk_revisions()))
        if script_.revision not in applied
    ]


def _applied(script: ScriptDirectory, current: tuple[str, ...]) -> set[str]:
    """Every revision the database has, given the heads in its version table.

    Alembic records a branch's head only, and drops a dependency's head once a revision
    depending on it is applied, so ancestors are followed through both links. Heads of
    branches that are not selected belong to other services sharing the database and
    are skipped.
    """
    applied: set[str] = set()
    stack = [head for head in current if _is_known(script, head)]
    while stack:
        found = script.get_revision(stack.pop())
        if found is None or found.revision in applied:
            continue
        applied.add(found.revision)
        stack.extend(_as_tuple(found.down_revision))
        stack.extend(_as_tuple(found.dependencies))
    return applied


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _is_known(script: ScriptDirectory, revision: str) -> bool:
    try:
        script.get_revision(revision)
    except CommandError:
        return False
    return True


def _status_engine(database: Database) -> AsyncEngine:
    # The SQLite write engine starts every transaction with BEGIN IMMEDIATE; a readiness
    # probe must not queue behind writers, so it reads through the deferred read pool.
    if database.dialect == "sqlite" and database.read_engines:
        return database.read_engines[0]
    return database.engine


async def pending_migrations(database: Database, modules: Sequence[Module]) -> list[str]:
    """Revision ids of the kernel and ``modules`` not yet applied, oldest first."""
    async with _status_engine(database).connect() as connection:
        current = await connection.run_sync(_current_heads)
    config = migration_config(database.settings, modules)
    return await asyncio.to_thread(_unapplied, config, current)


async def is_at_head(database: Database, modules: Sequence[Module]) -> bool:
    return not await pending_migrations(database, modules)


def _schema_diff(connection: Connection, branches: tuple[str, ...]) -> list[Any]:
    config = Config()
    config.attributes["branches"] = branches
    options = context_options(config, dialect_name=connection.dialect.name)
    context = MigrationContext.configure(
        connection,
        opts={
            key: options[key]
            for key in ("compare_type", "compare_server_default", "include_name", "include_object")
        },
    )
    return list(compare_metadata(context, options["target_metadata"]))


async def schema_differences(engine: AsyncEngine, modules: Sequence[Module]) -> list[Any]:
    """Alembic's autogenerate diff between the models and the live schema (empty = same)."""
    branches = tuple(branch_directories(modules))
    async with engine.connect() as connection:
        return await connection.run_sync(_schema_diff, branches)


# ---- authoring --------------------------------------------------------------------------


def new_revision(
    settings: Settings,
    modules: Sequence[Module],
    module_name: str,
    message: str,
    autogenerate: bool = True,
) -> None:
    """Write a new revision file into ``module_name``'s migrations directory.

    With ``autogenerate`` the database must be at head; the revision then holds the
    difference between that module's models and its tables.
    """
    config = migration_config(settings, modules)
    directories = branch_directories(modules)
    if module_name not in directories:
        raise MigrationError(f"module {module_name!r} is not selected or has no migrations")
    directory = directories[module_name]
    directory.mkdir(parents=True, exist_ok=True)
    config.attributes["autogenerate_branch"] = module_name
    _add_format_hooks(config)
    script = ScriptDirectory.from_config(config)
    options: dict[str, Any] = {"version_path": str(directory)}
    if _is_known(script, f"{module_name}@head"):
        options["head"] = f"{module_name}@head"
    else:
        options.update(head="base", branch_label=module_name)
        if module_name != CORE_BRANCH:
            options["depends_on"] = script.get_revision(f"{CORE_BRANCH}@head").revision
    _run_command(command.revision, config, message=message, autogenerate=autogenerate, **options)


def _add_format_hooks(config: Config) -> None:
    # Generated files pass the project's lint and format checks when ruff is installed.
    if importlib.util.find_spec("ruff") is None:
        return
    config.set_section_option("post_write_hooks", "hooks", "ruff_fix, ruff_format")
    for name, options in (
        ("ruff_fix", "check --fix --quiet REVISION_SCRIPT_FILENAME"),
        ("ruff_format", "format --quiet REVISION_SCRIPT_FILENAME"),
    ):
        config.set_section_option("post_write_hooks", f"{name}.type", "module")
        config.set_section_option("post_write_hooks", f"{name}.module", "ruff")
        config.set_section_option("post_write_hooks", f"{name}.options", options)
