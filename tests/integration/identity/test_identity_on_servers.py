"""The identity flows on PostgreSQL (and MariaDB for the parts that lock rows).

Concurrency is where the databases differ: refreshes of one token are serialised by a row
lock, and registrations of one email by the unique index.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from engineroom.identity.commands import create_admin
from engineroom.identity.models import RefreshToken, User
from engineroom.settings import Settings
from tests.support.identity import (
    PASSWORD,
    IdentityApp,
    bearer,
    identity_app,
    login,
    register,
)
from tests.support.settings import settings_on

REFRESH = "/api/v1/identity/token/refresh"


def _settings(tmp_path: Path, url: str) -> Settings:
    return settings_on(url, tmp_path)


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


async def _flows(env: IdentityApp) -> None:
    client = env.client
    alice = await register(client, "Alice")
    tokens = await login(client, email="ALICE@example.com")
    me = await client.get("/api/v1/identity/me", headers=bearer(tokens["access_token"]))
    assert me.json() == alice

    # Concurrent refreshes: one rotation, the other waits for the lock and gets its pair.
    pairs = await asyncio.gather(*(_refresh(client, tokens["refresh_token"]) for _ in range(3)))
    assert [p.status_code for p in pairs] == [200, 200, 200], [p.text for p in pairs]
    assert len({p.json()["refresh_token"] for p in pairs}) == 1
    async with env.platform.database.read_only() as session:
        count = await session.scalar(select(func.count()).select_from(RefreshToken))
    assert count == 2

    # Reuse after the grace window revokes the family.
    async with env.platform.database.unit_of_work() as session:
        for row in await session.scalars(select(RefreshToken)):
            if row.rotated_at is not None:
                row.rotated_at = row.rotated_at.replace(year=row.rotated_at.year - 1)
    assert (await _refresh(client, tokens["refresh_token"])).status_code == 401
    assert (await _refresh(client, pairs[0].json()["refresh_token"])).status_code == 401

    # Registrations racing for one email make one account.
    bodies = [
        {"email": "race@example.com", "username": f"racer{i}", "password": PASSWORD}
        for i in range(4)
    ]
    raced = await asyncio.gather(*(client.post("/api/v1/identity/users", json=b) for b in bodies))
    assert sorted(r.status_code for r in raced) == [201, 409, 409, 409]

    # RealWorld and roles.
    rw = await client.post(
        "/api/users/login", json={"user": {"email": "alice@example.com", "password": PASSWORD}}
    )
    assert rw.status_code == 200
    token = rw.json()["user"]["token"]
    current = await client.get("/api/user", headers={"Authorization": f"Token {token}"})
    assert current.json()["user"]["username"] == "Alice"
    await create_admin(env.settings, email="root@example.com", username="root", password=PASSWORD)
    admin = bearer((await login(client, email="root@example.com"))["access_token"])
    made = await client.post(
        "/api/v1/identity/roles", json={"name": "editor", "permissions": ["blog:*"]}, headers=admin
    )
    assert made.status_code == 201
    given = await client.put(f"/api/v1/identity/users/{alice['id']}/roles/editor", headers=admin)
    assert given.json()["roles"] == ["editor", "member"]
    async with env.platform.database.read_only() as session:
        users = await session.scalar(select(func.count()).select_from(User))
    assert users == 3


@pytest.mark.postgres
async def test_identity_flows_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    async with identity_app(_settings(tmp_path, postgres_url)) as env:
        await _flows(env)


@pytest.mark.mariadb
async def test_identity_flows_on_mariadb(tmp_path: Path, mariadb_url: str) -> None:
    async with identity_app(_settings(tmp_path, mariadb_url)) as env:
        await _flows(env)
