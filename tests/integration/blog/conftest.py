"""The blog with the identity module, on SQLite, PostgreSQL and MariaDB.

Users are registered through ``POST /api/users`` and act with the tokens it returns. The
outbox relay does not run by itself here (``deliver_events`` runs it), so tests see both
a user the blog knows only from a token and one its projection learned from events.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.engine import Connection

from engineroom.app import create_app
from engineroom.blog import module as blog_module
from engineroom.blog.config import blog_settings
from engineroom.core.migrations.runner import upgrade
from engineroom.core.platform import Platform
from engineroom.identity import module as identity_module
from engineroom.identity import public as identity_public
from engineroom.identity import rbac
from engineroom.identity.config import configure
from engineroom.settings import Settings
from tests.support.identity import PASSWORD, fast_identity_settings

MODULES = (identity_module, blog_module)
FRONT_END = "http://localhost:4200"
"""Where a RealWorld front end runs in development; CORS lets it call the API."""


@dataclass(frozen=True)
class User:
    username: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


@dataclass
class Blog:
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
        response = await self.client.post(
            "/api/users", json={"user": {"username": name, "email": email, "password": PASSWORD}}
        )
        assert response.status_code == 201, response.text
        return User(username=name, email=email, token=response.json()["user"]["token"])

    async def moderator(self, username: str = "mod") -> User:
        """A user with identity's built-in moderator role, logged in again for its token."""
        user = await self.user(username)
        async with self.platform.database.unit_of_work() as session:
            found = await identity_public.get_user_by_username(session, username)
            assert found is not None
            await rbac.assign_role(session, found.id, "moderator")
        response = await self.client.post(
            "/api/users/login", json={"user": {"email": user.email, "password": PASSWORD}}
        )
        assert response.status_code == 200, response.text
        return User(username=username, email=user.email, token=response.json()["user"]["token"])

    async def deliver_events(self) -> None:
        """Run the outbox relay until nothing is left (identity's events reach the blog)."""
        while await self.platform.relay.run_once():
            pass

    async def article(self, user: User, **fields: Any) -> dict[str, Any]:
        payload = {
            "title": "A title",
            "description": "A description",
            "body": "A *body*.",
            "tagList": [],
        }
        payload.update(fields)
        response = await self.client.post(
            "/api/articles", json={"article": payload}, headers=user.auth
        )
        assert response.status_code == 201, response.text
        article: dict[str, Any] = response.json()["article"]
        return article


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'blog.db'}"
    fixture = {"postgresql": "postgres_url", "mariadb": "mariadb_url"}[backend]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def blog_settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Generous write limits for tests that are not about limits."""
    monkeypatch.setenv("ENGINEROOM_BLOG_WRITE_RATE_LIMIT", "10000/minute")
    blog_settings.cache_clear()
    yield
    blog_settings.cache_clear()


@pytest.fixture
async def blog(
    backend: str, database_url: str, tmp_path: Path, blog_settings_env: None
) -> AsyncIterator[Blog]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        allowed_hosts=["*"],
        log_format="console",
        cors_origins=[FRONT_END],
    )
    configure(settings, fast_identity_settings())
    await upgrade(settings, list(MODULES))
    app = create_app(settings, modules=list(MODULES), run_background=False)
    async with LifespanManager(app):
        # The app itself, not manager.app: the latter hands every request the same
        # scope["state"] dict, so request.state (the resolved principal) would leak from
        # one request into the next. Servers give each request a copy.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Blog(app=app, client=client, backend=backend)


class StatementCounter:
    """Counts the SQL statements an engine runs while ``counting`` is on."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.counting = False

    def __call__(self, _conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.counting and not statement.lstrip().upper().startswith(
            ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")
        ):
            self.statements.append(statement)


@pytest.fixture
def statements(blog: Blog) -> Iterator[StatementCounter]:
    counter = StatementCounter()
    database = blog.platform.database
    engines = {id(e): e for e in (database.engine, *database.read_engines)}.values()
    for engine in engines:
        event.listen(engine.sync_engine, "before_cursor_execute", counter)
    yield counter
    for engine in engines:
        event.remove(engine.sync_engine, "before_cursor_execute", counter)
