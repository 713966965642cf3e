"""The chat tests' app: identity and chat on SQLite, PostgreSQL or MariaDB, real users.

Users are registered through the identity API (so that mentions resolve). Two drivers
share the app, its client and the events:

- ``ChatApp`` acts with access tokens signed by the identity module and writes rooms,
  memberships, bans and mutes straight into the tables, so that the message, search and
  GraphQL tests depend on the message services only;
- ``RoomsApp`` signs users in through the identity API and drives rooms through the REST
  API, as the rooms tests do (their ``chat`` and ``chat_database`` fixtures).

The outbox relay does not run by itself: ``deliver_events`` runs it, so tests decide when
events reach their subscribers (live clients, ending subscriptions, the chat module's
handler of ``identity.user.deleted``), and ``events_of`` reads what the services recorded.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event, select
from sqlalchemy.engine import Connection

from engineroom.app import create_app
from engineroom.chat import build_module
from engineroom.chat.config import ChatSettings
from engineroom.chat.models import Ban, Member, MemberRole, Room
from engineroom.chat.realtime.runtime import ChatRuntime, find_runtime
from engineroom.core.clock import new_id, utcnow
from engineroom.core.events.models import OutboxEvent
from engineroom.core.migrations.runner import upgrade
from engineroom.core.platform import Platform
from engineroom.identity import module as identity_module
from engineroom.identity import rbac
from engineroom.identity.config import configure
from engineroom.identity.tokens import issue_access_token
from engineroom.settings import Settings
from tests.support.chat import chat_settings
from tests.support.identity import PASSWORD, fast_identity_settings
from tests.support.settings import settings_on

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


class _Bearer:
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class ChatUser(_Bearer):
    id: uuid.UUID
    username: str
    token: str


@dataclass(frozen=True)
class RoomsUser(_Bearer):
    """A user as the rooms API shows them: ids are the strings of the JSON."""

    id: str
    username: str
    email: str
    token: str


def _email(username: str) -> str:
    return f"{username}@example.com"


@dataclass
class _App:
    """What both drivers share: the app, its HTTP client, registration and events."""

    app: FastAPI
    client: httpx.AsyncClient
    backend: str
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def platform(self) -> Platform:
        platform: Platform = self.app.state.platform
        return platform

    @property
    def runtime(self) -> ChatRuntime:
        runtime = find_runtime(self.platform)
        assert runtime is not None
        return runtime

    async def _register(self, username: str | None) -> tuple[str, str]:
        """(id, username) of a new user registered through the identity API."""
        name = username or f"user{next(self._numbers)}"
        response = await self.client.post(
            "/api/v1/identity/users",
            json={"email": _email(name), "username": name, "password": PASSWORD},
        )
        assert response.status_code == 201, response.text
        return response.json()["id"], name

    # ---- events -----------------------------------------------------------------------

    async def events_of(self, event_type: str) -> list[dict[str, Any]]:
        """Payloads of the outbox events of ``event_type``, oldest first."""
        async with self.platform.database.unit_of_work() as session:
            rows = await session.scalars(
                select(OutboxEvent).where(OutboxEvent.type == event_type).order_by(OutboxEvent.id)
            )
            return [dict(row.payload) for row in rows]

    async def published(self, channel: str) -> list[dict[str, Any]]:
        """The data of every publication in the channel's history (oldest first)."""
        page = await self.runtime.hub.history(channel, limit=-1)
        return [orjson.loads(b"{" + item.body + b"}")["data"] for item in page.publications]

    async def deliver_events(self) -> None:
        """Run the outbox relay until nothing is left."""
        while await self.platform.relay.run_once():
            pass


App = TypeVar("App", bound=_App)


class ChatApp(_App):
    """Rooms written straight to the tables; messages through the API."""

    # ---- people and rooms -------------------------------------------------------------

    async def user(self, username: str | None = None, *, moderator: bool = False) -> ChatUser:
        """A registered user; ``moderator``: with the identity moderator's chat permissions."""
        user_id, name = await self._register(username)
        token = await issue_access_token(
            self.platform,
            user_id=uuid.UUID(user_id),
            username=name,
            roles=("member", "moderator") if moderator else ("member",),
            permissions=MODERATOR_PERMISSIONS if moderator else (),
        )
        return ChatUser(id=uuid.UUID(user_id), username=name, token=token.token)

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


class RoomsApp(_App):
    """Users signed in through the identity API; rooms through the rooms API, as JSON."""

    async def user(self, username: str | None = None) -> RoomsUser:
        user_id, name = await self._register(username)
        return await self._sign_in(user_id, name)

    async def _sign_in(self, user_id: str, name: str) -> RoomsUser:
        response = await self.client.post(
            "/api/v1/identity/token", json={"email": _email(name), "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        return RoomsUser(id=user_id, username=name, email=_email(name), token=token)

    async def moderator(self, username: str = "platform_mod") -> RoomsUser:
        """A user with identity's built-in ``moderator`` role (``chat:room:moderate``)."""
        user = await self.user(username)
        async with self.platform.database.unit_of_work() as session:
            await rbac.assign_role(session, uuid.UUID(user.id), "moderator")
        return await self._sign_in(user.id, user.username)

    async def personal(self, user: RoomsUser) -> list[dict[str, Any]]:
        """What the user's personal channel received, oldest first."""
        return await self.published(f"#{user.id}")

    async def room(self, owner: RoomsUser, kind: str = "public", **fields: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {"name": f"{kind} room", "kind": kind, **fields}
        response = await self.client.post(f"{API}/rooms", json=payload, headers=owner.auth)
        assert response.status_code == 201, response.text
        room: dict[str, Any] = response.json()
        return room

    async def join(self, user: RoomsUser, room_id: str) -> httpx.Response:
        return await self.client.post(f"{API}/rooms/{room_id}/join", headers=user.auth)

    async def member(self, user: RoomsUser, room_id: str) -> None:
        """Make ``user`` a member of a public room."""
        response = await self.join(user, room_id)
        assert response.status_code == 201, response.text

    async def invite(self, inviter: RoomsUser, room_id: str, invitee: RoomsUser) -> httpx.Response:
        return await self.client.post(
            f"{API}/rooms/{room_id}/invites", json={"user_id": invitee.id}, headers=inviter.auth
        )

    async def members(self, viewer: RoomsUser, room_id: str) -> dict[str, str]:
        """user id -> role."""
        response = await self.client.get(
            f"{API}/rooms/{room_id}/members", params={"limit": 100}, headers=viewer.auth
        )
        assert response.status_code == 200, response.text
        return {m["user_id"]: m["role"] for m in response.json()["members"]}


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
    return settings_on(database_url, tmp_path)


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
async def _serving(settings: Settings, chat: ChatSettings, driver: type[App]) -> AsyncIterator[App]:
    """A migrated database and the identity + chat app started, with an HTTP client."""
    configure(settings, fast_identity_settings())
    modules = [identity_module, build_module(settings=chat)]
    await upgrade(settings, modules)
    app = create_app(settings, modules=modules, run_background=False)
    async with LifespanManager(app):
        # The app itself, not the manager's: that one shares one scope["state"] between
        # requests, so a resolved principal could leak into the next request.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            platform: Platform = app.state.platform
            yield driver(app=app, client=client, backend=platform.database.dialect)


def chat_app(
    settings: Settings, chat: ChatSettings | None = None
) -> AbstractAsyncContextManager[ChatApp]:
    """The app of ``ChatApp``, with ``messages_settings()`` unless ``chat`` is given."""
    return _serving(settings, chat or messages_settings(), ChatApp)


@pytest.fixture(name="chat_database", params=[SQLITE, POSTGRES])
def rooms_database_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, database URL): a fresh SQLite file, or a fresh PostgreSQL database."""
    return request.param, database_url_for(request, tmp_path)


@pytest.fixture(name="chat")
async def rooms_fixture(chat_database: tuple[str, str], tmp_path: Path) -> AsyncIterator[RoomsApp]:
    """``RoomsApp`` on each database; test modules import this and ``rooms_database_fixture``."""
    settings = settings_for(chat_database[1], tmp_path)
    async with _serving(settings, chat_settings(), RoomsApp) as app:
        yield app


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
