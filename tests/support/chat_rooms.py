"""The chat rooms tests' app: identity and chat on SQLite or PostgreSQL, real users.

Users register and sign in through the identity API and act with the access tokens it
issues. The outbox relay does not run by itself (``deliver_events`` runs it), so tests
decide when events reach their subscribers: live clients, ending subscriptions, and the
chat module's handler of ``identity.user.deleted``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from engineroom.app import create_app
from engineroom.chat import build_module
from engineroom.chat.realtime.runtime import ChatRuntime, find_runtime
from engineroom.core.migrations.runner import upgrade
from engineroom.core.platform import Platform
from engineroom.identity import module as identity_module
from engineroom.identity import public as identity_public
from engineroom.identity import rbac
from engineroom.identity.config import configure
from engineroom.settings import Settings
from tests.support.chat import chat_settings
from tests.support.identity import PASSWORD, fast_identity_settings

API = "/api/v1/chat"


@dataclass(frozen=True)
class User:
    id: str
    username: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class ChatApp:
    app: FastAPI
    client: httpx.AsyncClient
    backend: str
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def platform(self) -> Platform:
        platform: Platform = self.app.state.platform
        return platform

    async def user(self, username: str | None = None) -> User:
        name = username or f"user{next(self._names)}"
        email = f"{name}@example.com"
        registered = await self.client.post(
            "/api/v1/identity/users",
            json={"email": email, "username": name, "password": PASSWORD},
        )
        assert registered.status_code == 201, registered.text
        return await self._sign_in(registered.json()["id"], name, email)

    async def _sign_in(self, user_id: str, name: str, email: str) -> User:
        response = await self.client.post(
            "/api/v1/identity/token", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        return User(id=user_id, username=name, email=email, token=response.json()["access_token"])

    async def moderator(self, username: str = "platform_mod") -> User:
        """A user with identity's built-in ``moderator`` role (``chat:room:moderate``)."""
        user = await self.user(username)
        async with self.platform.database.unit_of_work() as session:
            await rbac.assign_role(session, uuid.UUID(user.id), "moderator")
        return await self._sign_in(user.id, user.username, user.email)

    @property
    def runtime(self) -> ChatRuntime:
        runtime = find_runtime(self.platform)
        assert runtime is not None
        return runtime

    async def published(self, channel: str) -> list[dict[str, Any]]:
        """The data of every publication in the channel's history (oldest first)."""
        page = await self.runtime.hub.history(channel, limit=-1)
        return [orjson.loads(b"{" + item.body + b"}")["data"] for item in page.publications]

    async def personal(self, user: User) -> list[dict[str, Any]]:
        """What the user's personal channel received, oldest first."""
        return await self.published(f"#{user.id}")

    async def deliver_events(self) -> None:
        """Run the outbox relay until nothing is left."""
        while await self.platform.relay.run_once():
            pass

    async def room(self, owner: User, kind: str = "public", **fields: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {"name": f"{kind} room", "kind": kind, **fields}
        response = await self.client.post(f"{API}/rooms", json=payload, headers=owner.auth)
        assert response.status_code == 201, response.text
        room: dict[str, Any] = response.json()
        return room

    async def join(self, user: User, room_id: str) -> httpx.Response:
        return await self.client.post(f"{API}/rooms/{room_id}/join", headers=user.auth)

    async def member(self, user: User, room_id: str) -> None:
        """Make ``user`` a member of a public room."""
        response = await self.join(user, room_id)
        assert response.status_code == 201, response.text

    async def invite(self, inviter: User, room_id: str, invitee: User) -> httpx.Response:
        return await self.client.post(
            f"{API}/rooms/{room_id}/invites", json={"user_id": invitee.id}, headers=inviter.auth
        )

    async def members(self, viewer: User, room_id: str) -> dict[str, str]:
        """user id -> role."""
        response = await self.client.get(
            f"{API}/rooms/{room_id}/members", params={"limit": 100}, headers=viewer.auth
        )
        assert response.status_code == 200, response.text
        return {m["user_id"]: m["role"] for m in response.json()["members"]}


def settings_for(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        allowed_hosts=["*"],
        log_format="console",
        outbox_poll_interval=0.05,
    )


@pytest.fixture(
    name="chat_database",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def chat_database_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, database URL): a fresh SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    return "postgresql", str(request.getfixturevalue("postgres_url"))


@pytest.fixture(name="chat")
async def chat_fixture(chat_database: tuple[str, str], tmp_path: Path) -> AsyncIterator[ChatApp]:
    """The app on each database; test modules import this and ``chat_database_fixture``."""
    backend, database_url = chat_database
    settings = settings_for(database_url, tmp_path)
    configure(settings, fast_identity_settings())
    modules = [identity_module, build_module(settings=chat_settings())]
    await upgrade(settings, modules)
    app = create_app(settings, modules=modules, run_background=False)
    async with LifespanManager(app):
        # The app itself, not manager.app: the latter shares one scope["state"] between
        # requests, and the resolved principal would leak from one request to the next.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield ChatApp(app=app, client=client, backend=backend)


async def user_exists(platform: Platform, user_id: str) -> bool:
    async with platform.database.read_only() as session:
        return await identity_public.get_user(session, uuid.UUID(user_id)) is not None
