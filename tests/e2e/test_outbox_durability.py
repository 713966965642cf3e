"""No event is lost when the process dies between its commit and its delivery.

A subprocess commits an event and is SIGKILLed, either before any relay ran or while its
relay sits inside the handler (effect written, delivery claimed, nothing committed). A
fresh relay in this process then delivers the event, exactly once.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from engineroom.core.db import Database
from engineroom.core.events import OutboxRelay
from engineroom.core.events.models import EventDelivery
from engineroom.settings import Settings
from tests.support import outbox_crash_worker as worker
from tests.support.schema import effects

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres_url", marks=pytest.mark.postgres, id="postgresql"),
        pytest.param("mariadb_url", marks=pytest.mark.mariadb, id="mariadb"),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{(tmp_path / 'durable.db').as_posix()}"
    url: str = request.getfixturevalue(request.param)
    return url


@pytest.fixture
async def crashed_process() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Processes started by the test, killed by PID if the test left one running."""
    processes: list[asyncio.subprocess.Process] = []
    yield processes
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def run_and_kill(
    processes: list[asyncio.subprocess.Process], database_url: str, data_dir: Path, mode: str
) -> uuid.UUID:
    """Start the worker, wait for its kill point, SIGKILL it; return the event id."""
    kill_point = "IN_HANDLER" if mode == "mid-handler" else "COMMITTED"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "src")])}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.outbox_crash_worker",
        database_url,
        str(data_dir),
        mode,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    processes.append(process)
    assert process.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, f"worker exited early with {await process.wait()}"
            if line.startswith(kill_point + " "):
                event_id = uuid.UUID(line.split()[1])
                break
    process.kill()
    assert await process.wait() == -9
    return event_id


@pytest.mark.parametrize("mode", ["before-relay", "mid-handler"])
async def test_an_event_survives_a_kill_before_delivery(
    database_url: str,
    tmp_path: Path,
    mode: str,
    crashed_process: list[asyncio.subprocess.Process],
) -> None:
    data_dir = tmp_path / "data"
    event_id = await run_and_kill(crashed_process, database_url, data_dir, mode)

    settings = Settings(
        _env_file=None,
        environment="test",
        data_dir=data_dir,
        database_url=database_url,
    )
    database = Database(settings)
    try:
        # Nothing the killed process did after the commit survived it.
        assert await effects(database) == []
        assert await _delivery_states(database) == (
            [("pending", 0)] if mode == "mid-handler" else []
        )
        relay = OutboxRelay(database, [worker.subscription(None)], settings)
        # On a server the dead connection's row lock lasts until the server notices.
        async with asyncio.timeout(TIMEOUT):
            while True:
                delivered = await relay.run_once()
                if delivered:
                    break
                await asyncio.sleep(0.05)
        assert delivered == 1
        assert await relay.run_once() == 0
        assert await effects(database) == [(event_id, worker.SUBSCRIBER)]
        async with database.session() as session:
            row = await session.scalar(
                select(EventDelivery).where(EventDelivery.event_id == event_id)
            )
        assert row is not None
        assert (row.subscriber, row.status, row.attempts) == (worker.SUBSCRIBER, "done", 1)
    finally:
        await database.dispose()


async def _delivery_states(database: Database) -> list[tuple[str, int]]:
    async with database.session() as session:
        rows = await session.execute(select(EventDelivery.status, EventDelivery.attempts))
        return [(row.status, row.attempts) for row in rows]
