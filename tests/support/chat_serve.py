"""Helpers for the chat domain's end-to-end tests against real ``engineroom serve``
processes: users registered through the served identity API, rooms and messages over
REST, and access tokens signed with the server's own keys (for an already expired one).
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from centrifuge import PublicationContext

from engineroom.core.platform import Platform
from engineroom.identity import module as identity_module
from engineroom.identity.config import IdentitySettings, configure
from engineroom.identity.tokens import issue_access_token
from engineroom.settings import Settings
from tests.support.chat import next_item
from tests.support.server import ServerProcess, server_env

API = "/api/v1/chat"
PASSWORD = "correct horse battery staple"
COMMAND_TIMEOUT = 120.0

SERVER_ENV = {
    # Cheap password hashing: every test registers and signs in its own users.
    "ENGINEROOM_IDENTITY_PASSWORD_MEMORY_COST": "8192",
    "ENGINEROOM_IDENTITY_PASSWORD_TIME_COST": "1",
    # Every login comes from 127.0.0.1; with Redis the counts are shared by whatever
    # else signs in from this address today.
    "ENGINEROOM_IDENTITY_LOGIN_LIMIT_PER_ADDRESS": "100000/minute",
    "ENGINEROOM_IDENTITY_LOGIN_LIMIT_PER_ADDRESS_DAILY": "1000000/day",
    "ENGINEROOM_IDENTITY_LOGIN_LIMIT_PER_ACCOUNT": "100000/hour",
    # The tests send more, and more alike, messages than a person would.
    "ENGINEROOM_CHAT_MESSAGE_RATE_LIMIT": "10000/minute",
    "ENGINEROOM_CHAT_MESSAGE_REPEAT_LIMIT": "10000/minute",
}
SETUP_EVENTS = frozenset({"room.created", "member.joined"})
"""Live events of a room's setup, which a subscriber may still see after subscribing."""


def ws_url(server: ServerProcess) -> str:
    return server.base_url.replace("http://", "ws://") + "/connection/websocket"


@dataclass(frozen=True)
class ServedUser:
    id: str
    username: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class ChatApi:
    """REST calls to one running server; each asserts the status it expects."""

    def __init__(self, server: ServerProcess, http: httpx.AsyncClient) -> None:
        self.server = server
        self.http = http

    async def user(self, prefix: str) -> ServedUser:
        """A new user (``prefix`` plus a random suffix) registered and signed in."""
        name = f"{prefix}{secrets.token_hex(4)}"
        email = f"{name}@example.com"
        registered = await self.http.post(
            "/api/v1/identity/users",
            json={"email": email, "username": name, "password": PASSWORD},
        )
        assert registered.status_code == 201, registered.text
        login = await self.http.post(
            "/api/v1/identity/token", json={"email": email, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        return ServedUser(registered.json()["id"], name, login.json()["access_token"])

    async def room(self, owner: ServedUser, kind: str = "public") -> str:
        created = await self.http.post(
            f"{API}/rooms", json={"name": f"{kind} e2e", "kind": kind}, headers=owner.auth
        )
        assert created.status_code == 201, created.text
        room_id: str = created.json()["id"]
        return room_id

    async def join(self, user: ServedUser, room_id: str) -> None:
        joined = await self.http.post(f"{API}/rooms/{room_id}/join", headers=user.auth)
        assert joined.status_code == 201, joined.text

    async def send(self, user: ServedUser, room_id: str, body: str) -> dict[str, Any]:
        sent = await self.http.post(
            f"{API}/rooms/{room_id}/messages", json={"body": body}, headers=user.auth
        )
        assert sent.status_code == 201, sent.text
        message: dict[str, Any] = sent.json()
        return message

    async def get(self, user: ServedUser, path: str, **params: Any) -> dict[str, Any]:
        response = await self.http.get(f"{API}{path}", params=params, headers=user.auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def history_ids(self, user: ServedUser, room_id: str, **params: Any) -> list[str]:
        page = await self.get(user, f"/rooms/{room_id}/messages", **params)
        return [message["id"] for message in page["messages"]]

    async def mark_read(self, user: ServedUser, room_id: str, message_id: str) -> dict[str, Any]:
        marked = await self.http.post(
            f"{API}/rooms/{room_id}/read", json={"message_id": message_id}, headers=user.auth
        )
        assert marked.status_code == 200, marked.text
        state: dict[str, Any] = marked.json()
        return state

    async def unread(self, user: ServedUser, room_id: str) -> dict[str, Any]:
        """The user's read state of the room, from ``GET /unread``."""
        summary = await self.get(user, "/unread")
        states = [state for state in summary["rooms"] if state["room_id"] == room_id]
        assert len(states) == 1, summary
        state: dict[str, Any] = states[0]
        return state


async def room_events(
    queue: asyncio.Queue[PublicationContext], count: int, *, skip: frozenset[str] = SETUP_EVENTS
) -> list[dict[str, Any]]:
    """The data of the next ``count`` publications, passing over the room's setup events
    (any other publication counts)."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        data = (await next_item(queue)).pub.data
        assert isinstance(data, dict), data
        if data.get("type") not in skip:
            found.append(data)
    return found


async def sent_messages(
    queue: asyncio.Queue[PublicationContext], count: int
) -> list[dict[str, Any]]:
    """The messages of the next ``count`` ``message.sent`` publications."""
    events = await room_events(queue, count)
    assert [event["type"] for event in events] == ["message.sent"] * count, events
    return [event["message"] for event in events]


async def expired_token(
    server: ServerProcess, user: ServedUser, *, database_url: str | None = None
) -> str:
    """An access token for ``user`` signed with the server's key, expired five minutes ago.

    Reads the signing key from the server's database with the root secret of its data
    dir, the way the server itself does.
    """
    data_dir = server.data_dir
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=data_dir,
        database_url=database_url or f"sqlite+aiosqlite:///{(data_dir / 'engineroom.db')}",
        secret_key_file=data_dir / "secret_key",
    )
    configure(settings, IdentitySettings(_env_file=None))  # type: ignore[call-arg]
    platform = Platform(settings, [identity_module])
    try:
        issued = await issue_access_token(
            platform,
            user_id=uuid.UUID(user.id),
            username=user.username,
            roles=("member",),
            permissions=(),
            ttl=timedelta(minutes=-5),
        )
    finally:
        await platform.database.dispose()
        await platform.rate_limiter.close()
        await platform.cache.close()
    return issued.token


def migrate(workdir: Path, env: dict[str, str]) -> None:
    """``engineroom migrate`` on the server database of ``env``."""
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "engineroom", "migrate"],
        cwd=workdir,
        env=server_env(workdir / "data", env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
