"""A process that commits an event and then hangs, for the test to SIGKILL it.

Usage: ``python -m tests.support.outbox_crash_worker DATABASE_URL DATA_DIR MODE``

MODE ``before-relay``: commit the event and sleep; no relay ever runs.
MODE ``mid-handler``: commit the event, start a relay, and block inside the handler after
it has written its effect (uncommitted) while the delivery row is claimed.

Progress lines on stdout (``COMMITTED <event id>``, ``IN_HANDLER <event id>``) tell the
test when to kill.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import suppress
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.db import Database
from engineroom.core.events import Event, OutboxRelay, Subscription, publish
from engineroom.settings import Settings
from tests.support.schema import create_all, record_effect

SUBSCRIBER = "durable"
EVENT_TYPE = "e2e.thing.happened"
ORPHAN_TIMEOUT_SECONDS = 300


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def subscription(blocked: asyncio.Event | None) -> Subscription:
    """The subscription under test; ``blocked`` (never set) makes its handler hang."""

    async def handler(event: Event, session: AsyncSession) -> None:
        await record_effect(session, event, SUBSCRIBER)
        if blocked is not None:
            await session.flush()
            report(f"IN_HANDLER {event.id}")
            await blocked.wait()

    return Subscription(name=SUBSCRIBER, event_type=EVENT_TYPE, handler=handler)


async def main(database_url: str, data_dir: str, mode: str) -> None:
    settings = Settings(
        _env_file=None,
        environment="test",
        data_dir=Path(data_dir),
        database_url=database_url,
        log_format="console",
        outbox_poll_interval=0.05,
    )
    database = Database(settings)
    await create_all(database)
    async with database.unit_of_work() as session:
        event = publish(session, EVENT_TYPE, {"mode": mode})
    report(f"COMMITTED {event.id}")
    never = asyncio.Event()
    if mode == "mid-handler":
        relay = OutboxRelay(database, [subscription(never)], settings)
        await relay.start()
    # Bounded, so that a worker whose test died without killing it does not linger.
    with suppress(TimeoutError):
        await asyncio.wait_for(never.wait(), ORPHAN_TIMEOUT_SECONDS)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
