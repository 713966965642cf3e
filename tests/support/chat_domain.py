"""The chat messages tests' app: identity and chat on SQLite, PostgreSQL or MariaDB.

Users are registered through the identity API (so that mentions resolve) and act with
access tokens signed by the identity module. Rooms, memberships, bans and mutes are
written straight into the tables by small factories, so that these tests depend on the
message services only. The outbox relay does not run by itself: ``deliver_events`` runs
it, and ``events_of`` reads what the services recorded.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event, select
from sqlalchemy.engine import Connection

from engineroom.app import create_app
from engineroom.chat import build_module
from engineroom.chat.config import ChatSettings
from engineroom.chat.models import Ban, Member, MemberRole, Room
from engineroom.core.clock import new_id, utcnow
from engineroom.core.events.models import OutboxEvent
from engineroom.core.migrations.runner import upgrade
from engineroom.core.platform import Platform
from engineroom.identity import module as identity_module
from engineroom.identity.config import configure
from engineroom.identity.tokens import issue_access_token
from engineroom.settings import Settings
from tests.support.identity import PASSWORD, fast_identity_settings

API = "/api/v1/chat"
MODERATOR_PERMISSIONS = ("chat:room:moderate", "chat:message:delete")

SQLITE = "sqlite"
POSTGRES = pytest.param("postgresql", marks=pytest.mark.postgres)
MARIADB = pytest.param("mariadb", marks=pytest.mark.mariadb)


def messages_settings(**overrides: Any) -> ChatSettings:
    """Chat settings for tests: limits out of the way unless a test is about them."""
    values: dict[str, Any] = {
        "message_rate_limit": "10000/minute",
        "message_repeat_limit": "10000/minute",
    }
    values.update(overrides)
    return ChatSettings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass(frozen=True)
class ChatUser:
    id: uuid.UUID
    username: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class ChatApp:
    app: FastAPI
    client: httpx.AsyncClient
    backend: str
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def platform(self) -> Platform:
        platform: Platform = self.app.state.platform
        return platform

    # ---- people and rooms -------------------------------------------------------------

    async def user(self, username: str | None = None, *, moderator: bool = False) -> ChatUser:
        """A registered user; ``moderator``: with the identity moderator's chat permissions."""
        name = username or f"user{next(self._numbers)}"
        response = await self.client.post(
            "/api/v1/identity/users",
            json={"email": f"{name}@example.com", "username": name, "password": PASSWORD},
        )
        assert response.status_code == 201, response.text
        user_id = uuid.UUID(response.json()["id"])
        token = await issue_access_token(
            self.platform,
            user_id=user_id,
            username=name,
            roles=("member", "moderator") if moderator else ("member",),
            permissions=MODERATOR_PERMISSIONS if moderator else (),
        )
        return ChatUser(id=user_id, username=name, token=token.token)

    async def room(
        self,
        owner: ChatUser,
        *,
        kind: str = "public",
        members: Sequence[ChatUser] = (),
        moderators: Sequence[ChatUser] = (),
    ) -> uuid.UUID:
        """A room owned by ``owner`` with these members, written straight to the tables."""
        return await create_room(
            self.platform,
            owner.id,
            kind=kind,
            members=[user.id for user in members],
            moderators=[user.id for user in moderators],
        )

    async def join(self, room_id: uuid.UUID, user: ChatUser) -> None:
        async with self.platform.database.unit_of_work() as session:
            session.add(Member(room_id=room_id, user_id=user.id, role=MemberRole.MEMBER.value))

    async def ban(self, room_id: uuid.UUID, user: ChatUser, banned_by: ChatUser) -> None:
        async with self.platform.database.unit_of_work() as session:
            session.add(Ban(room_id=room_id, user_id=user.id, banned_by=banned_by.id))

    async def mute(self, room_id: uuid.UUID, user: ChatUser, *, minutes: int = 10) -> None:
        until: datetime = utcnow() + timedelta(minutes=minutes)
        async with self.platform.database.unit_of_work() as session:
            member = await session.get(Member, (room_id, user.id))
            assert member is not None
            member.muted_until = until

    # ---- requests ---------------------------------------------------------------------

    async def send(
        self, user: ChatUser, room_id: uuid.UUID, body: str, **fields: Any
    ) -> dict[str, Any]:
        response = await self.client.post(
            f"{API}/rooms/{room_id}/messages", json={"body": body, **fields}, headers=user.auth
        )
        assert response.status_code == 201, response.text
        message: dict[str, Any] = response.json()
        return message

    async def history(self, user: ChatUser, room_id: uuid.UUID, **params: Any) -> dict[str, Any]:
        response = await self.client.get(
            f"{API}/rooms/{room_id}/messages", params=params, headers=user.auth
        )
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    # ---- events -----------------------------------------------------------------------

    async def events_of(self, event_type: str) -> list[dict[str, Any]]:
        """Payloads of the outbox events of ``event_type``, oldest first."""
        async with self.platform.database.unit_of_work() as session:
            rows = await session.scalars(
                select(OutboxEvent).where(OutboxEvent.type == event_type).order_by(OutboxEvent.id)
            )
            return [dict(row.payload) for row in rows]

    async def deliver_events(self) -> None:
        while await self.platform.relay.run_once():
            pass


async def create_room(
    platform: Platform,
    owner: uuid.UUID,
    *,
    kind: str = "public",
    members: Sequence[uuid.UUID] = (),
    moderators: Sequence[uuid.UUID] = (),
) -> uuid.UUID:
    """A room with its memberships, inserted directly (no rooms service involved)."""
    now = utcnow()
    room_id = new_id()
    async with platform.database.unit_of_work() as session:
        session.add(
            Room(
                id=room_id,
                kind=kind,
                name=None if kind == "direct" else f"room {room_id.hex[-6:]}",
                created_by=owner,
                last_seq=0,
                member_count=1 + len(members) + len(moderators),
                created_at=now,
                updated_at=now,
            )
        )
        await session.flush()
        roles = [(owner, MemberRole.OWNER)]
        roles += [(user, MemberRole.MEMBER) for user in members]
        roles += [(user, MemberRole.MODERATOR) for user in moderators]
        for user, role in roles:
            session.add(Member(room_id=room_id, user_id=user, role=role.value))
    return room_id


def settings_for(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        allowed_hosts=["*"],
        log_format="console",
    )


def database_url_for(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database of the fixture's parameter (``sqlite``, ``postgresql``, ``mariadb``)
    for one test; the server databases are dropped afterwards."""
    backend = request.param
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    if backend == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.getfixturevalue("mariadb_url"))


@asynccontextmanager
async def chat_app(settings: Settings, chat: ChatSettings | None = None) -> AsyncIterator[ChatApp]:
    """A migrated database and the identity + chat app started, with an HTTP client."""
    configure(settings, fast_identity_settings())
    modules = [identity_module, build_module(settings=chat or messages_settings())]
    await upgrade(settings, modules)
    app = create_app(settings, modules=modules, run_background=False)
    async with LifespanManager(app):
        # The app itself, not the manager's: that one shares one scope["state"] between
        # requests, so a resolved principal could leak into the next request.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            platform: Platform = app.state.platform
            yield ChatApp(app=app, client=client, backend=platform.database.dialect)


class StatementCounter:
    """Counts the SQL statements the platform's engines run while ``counting`` is on."""

    def __init__(self, platform: Platform) -> None:
        database = platform.database
        self._engines = list({id(e): e for e in (database.engine, *database.read_engines)}.values())
        self.statements: list[str] = []
        self.counting = False

    def _record(self, _conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.counting and not statement.lstrip().upper().startswith(
            ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")
        ):
            self.statements.append(statement)

    def __enter__(self) -> StatementCounter:
        for engine in self._engines:
            event.listen(engine.sync_engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_exc: object) -> None:
        for engine in self._engines:
            event.remove(engine.sync_engine, "before_cursor_execute", self._record)
