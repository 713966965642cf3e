"""Factories and fixtures of the receipts, typing and presence tests (no tests here).

Test modules import the fixtures (``backend_fixture``, ``database_url_fixture``,
``world_fixture``, named ``backend``, ``database_url`` and ``world``) to use them.

The server is the real app (identity + chat) on a loopback port (``tests.support.chat``),
on SQLite or PostgreSQL, reached over HTTP by httpx and over WebSocket by the
centrifuge-python SDK. Rooms, members and messages are written straight into the tables,
so these tests depend on the receipt and activity services only. The outbox relay does
not run by itself: ``deliver_events`` runs it.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.engine import Connection

from engineroom.chat.config import ChatSettings
from engineroom.chat.models import Ban, Member, MemberRole, Message, Room
from engineroom.core.clock import new_id, utcnow
from engineroom.core.events.models import OutboxEvent
from engineroom.core.platform import Platform
from engineroom.settings import Settings
from tests.support.chat import ChatServer, chat_server, chat_settings
from tests.support.settings import settings_on

API = "/api/v1/chat"
POSTGRES = pytest.param("postgresql", marks=pytest.mark.postgres)


@dataclass(frozen=True)
class Person:
    id: uuid.UUID
    username: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Posted:
    id: uuid.UUID
    seq: int


@dataclass
class World:
    server: ChatServer
    http: httpx.AsyncClient
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def platform(self) -> Platform:
        return self.server.platform

    async def person(self, username: str | None = None) -> Person:
        name = username or f"user{next(self._numbers)}"
        user_id, token = await self.server.token(username=name)
        return Person(uuid.UUID(user_id), name, token)

    async def room(
        self, owner: Person, *, kind: str = "public", members: Sequence[Person] = ()
    ) -> uuid.UUID:
        now = utcnow()
        room_id = new_id()
        async with self.platform.database.unit_of_work() as session:
            session.add(
                Room(
                    id=room_id,
                    kind=kind,
                    name=f"room {next(self._numbers)}",
                    created_by=owner.id,
                    last_seq=0,
                    member_count=1 + len(members),
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.flush()
            session.add(Member(room_id=room_id, user_id=owner.id, role=MemberRole.OWNER.value))
            for person in members:
                session.add(Member(room_id=room_id, user_id=person.id))
        return room_id

    async def join(self, room_id: uuid.UUID, person: Person) -> None:
        async with self.platform.database.unit_of_work() as session:
            session.add(Member(room_id=room_id, user_id=person.id))

    async def mute(self, room_id: uuid.UUID, person: Person) -> None:
        async with self.platform.database.unit_of_work() as session:
            member = await session.get(Member, (room_id, person.id))
            assert member is not None
            member.muted_until = utcnow() + timedelta(minutes=10)

    async def ban(self, room_id: uuid.UUID, person: Person, by: Person) -> None:
        async with self.platform.database.unit_of_work() as session:
            session.add(Ban(room_id=room_id, user_id=person.id, banned_by=by.id))

    async def post(
        self,
        room_id: uuid.UUID,
        author: Person,
        *,
        thread: Posted | None = None,
        mentions: Sequence[Person] = (),
        deleted: bool = False,
    ) -> Posted:
        """A message with the room's next seq (``chat_room.last_seq`` follows)."""
        async with self.platform.database.unit_of_work() as session:
            await session.execute(
                update(Room).where(Room.id == room_id).values(last_seq=Room.last_seq + 1)
            )
            seq = int(await session.scalar(select(Room.last_seq).where(Room.id == room_id)) or 0)
            message = Message(
                room_id=room_id,
                seq=seq,
                author_id=author.id,
                body="" if deleted else f"message {seq}",
                thread_root_id=thread.id if thread is not None else None,
                mentions=[str(person.id) for person in mentions],
                attachments=[],
                deleted_at=utcnow() if deleted else None,
                deleted_by=author.id if deleted else None,
            )
            session.add(message)
            await session.flush()
            return Posted(message.id, seq)

    async def delete(self, posted: Posted) -> None:
        async with self.platform.database.unit_of_work() as session:
            message = await session.get(Message, posted.id)
            assert message is not None
            message.deleted_at = utcnow()
            message.body = ""

    async def read_seq(self, room_id: uuid.UUID, person: Person) -> int:
        async with self.platform.database.unit_of_work() as session:
            member = await session.get(Member, (room_id, person.id))
            assert member is not None
            return member.last_read_seq

    async def mark(self, person: Person, room_id: uuid.UUID, **position: Any) -> httpx.Response:
        return await self.http.post(
            f"{API}/rooms/{room_id}/read", json=position, headers=person.auth
        )

    async def unread(self, person: Person) -> dict[str, Any]:
        response = await self.http.get(f"{API}/unread", headers=person.auth)
        assert response.status_code == 200, response.text
        summary: dict[str, Any] = response.json()
        return summary

    async def unread_in(self, person: Person, room_id: uuid.UUID) -> tuple[int, int]:
        """(unread, mentions) of one room."""
        for room in (await self.unread(person))["rooms"]:
            if room["room_id"] == str(room_id):
                return room["unread"], room["mentions"]
        raise AssertionError(f"{room_id} is not among the rooms of {person.username}")

    async def events_of(self, event_type: str) -> list[dict[str, Any]]:
        async with self.platform.database.unit_of_work() as session:
            rows = await session.scalars(
                select(OutboxEvent).where(OutboxEvent.type == event_type).order_by(OutboxEvent.id)
            )
            return [dict(row.payload) for row in rows]

    async def outbox_size(self) -> int:
        async with self.platform.database.unit_of_work() as session:
            return int(await session.scalar(select(func.count()).select_from(OutboxEvent)) or 0)

    async def deliver_events(self) -> None:
        while await self.platform.relay.run_once():
            pass

    async def statuses(self, viewer: Person, *people: Person) -> dict[str, str]:
        """``GET /presence`` as ``viewer``: user id -> status."""
        response = await self.http.get(
            f"{API}/presence",
            params=[("user_id", str(person.id)) for person in people],
            headers=viewer.auth,
        )
        assert response.status_code == 200, response.text
        statuses: dict[str, str] = response.json()["statuses"]
        return statuses


def activity_settings(**overrides: Any) -> ChatSettings:
    """Scans every 20 ms (tests wait for statuses, they do not sleep), no typing throttle
    unless a test is about it."""
    values: dict[str, Any] = {"presence_scan_interval": 0.02, "typing_throttle": 0.0}
    values.update(overrides)
    return chat_settings(**values)


def settings_for(database_url: str, tmp_path: Path) -> Settings:
    return settings_on(database_url, tmp_path, outbox_poll_interval=0.05)


@asynccontextmanager
async def world_on(settings: Settings, chat: ChatSettings | None = None) -> AsyncIterator[World]:
    async with (
        chat_server(settings, chat or activity_settings()) as server,
        httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=30) as http,
    ):
        yield World(server, http)


@pytest.fixture(name="backend", params=["sqlite", POSTGRES])
def backend_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="database_url")
def database_url_fixture(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(name="world")
async def world_fixture(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with world_on(settings_for(database_url, tmp_path)) as built:
        yield built


class StatementCounter:
    """Counts the SQL statements the platform's engines run inside the ``with`` block."""

    def __init__(self, platform: Platform) -> None:
        database = platform.database
        engines = (database.engine, *database.read_engines)
        self._engines = list({id(engine): engine for engine in engines}.values())
        self.statements: list[str] = []

    def _record(self, _conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if (
            not statement.lstrip()
            .upper()
            .startswith(("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT", "PRAGMA"))
        ):
            self.statements.append(statement)

    def __enter__(self) -> StatementCounter:
        for engine in self._engines:
            event.listen(engine.sync_engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_exc: object) -> None:
        for engine in self._engines:
            event.remove(engine.sync_engine, "before_cursor_execute", self._record)
