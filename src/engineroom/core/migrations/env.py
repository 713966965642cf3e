"""The one Alembic environment for the kernel and every module.

Alembic executes this file synchronously; the online run opens its own async engine and
drives it with ``asyncio.run``. ``engineroom.core.migrations.runner`` therefore calls
Alembic commands in a worker thread when an event loop is already running, so this file
never needs to know whether it was started from the CLI or from inside the app.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection, make_url

from engineroom.core.migrations import runner

config = context.config


def run_migrations_offline() -> None:
    """``--sql`` mode: write the DDL instead of executing it."""
    url = make_url(runner.config_url(config))
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **runner.context_options(config, dialect_name=url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with_connection(connection: Connection) -> None:
    context.configure(
        connection=connection,
        **runner.context_options(config, dialect_name=connection.dialect.name),
    )
    with context.begin_transaction(), runner.migration_lock(connection):
        context.run_migrations()
        runner.check_foreign_keys(connection)


async def _run_online() -> None:
    engine = runner.migration_engine(runner.config_url(config))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_with_connection)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(_run_online())
