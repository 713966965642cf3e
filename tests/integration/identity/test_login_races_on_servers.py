"""On PostgreSQL and MariaDB too, a password login confirms in its transaction the account
it read before hashing: a change committed during the hash refuses the login."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from engineroom.core.clock import utcnow
from engineroom.identity import passwords
from engineroom.identity.config import IdentitySettings
from engineroom.identity.models import AuditEvent, RefreshToken, User
from tests.support.identity import PASSWORD, IdentityApp, identity_app, login, register
from tests.support.settings import settings_on

TOKEN = "/api/v1/identity/token"


async def _races(env: IdentityApp, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id = uuid.UUID((await register(env.client, "alice"))["id"])
    original = passwords.verify_password
    change: dict[str, Any] = {}

    async def changed_meanwhile(
        config: IdentitySettings, encoded: str, password: str
    ) -> passwords.Verification:
        async with env.platform.database.unit_of_work() as session:
            await session.execute(update(User).where(User.id == user_id).values(**change))
        return await original(config, encoded, password)

    monkeypatch.setattr(passwords, "verify_password", changed_meanwhile)
    for values in ({"password_changed_at": utcnow()}, {"disabled_at": utcnow()}):
        change.clear()
        change.update(values)
        refused = await env.client.post(
            TOKEN, json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert refused.status_code == 401, refused.text
    monkeypatch.setattr(passwords, "verify_password", original)
    async with env.platform.database.unit_of_work() as session:
        await session.execute(update(User).where(User.id == user_id).values(disabled_at=None))
    await login(env.client)
    async with env.platform.database.read_only() as session:
        tokens = await session.scalar(select(func.count()).select_from(RefreshToken))
        successes = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "login", AuditEvent.outcome == "success")
        )
    assert (tokens, successes) == (1, 1)


@pytest.fixture(
    params=[
        pytest.param("postgres_url", marks=pytest.mark.postgres, id="postgresql"),
        pytest.param("mariadb_url", marks=pytest.mark.mariadb, id="mariadb"),
    ]
)
def server_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each server (its fixture creates and drops it)."""
    return str(request.getfixturevalue(request.param))


async def test_login_races_on_servers(
    tmp_path: Path, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with identity_app(settings_on(server_url, tmp_path)) as env:
        await _races(env, monkeypatch)
