"""API keys over HTTP, on SQLite, PostgreSQL and MariaDB: life cycle, scopes, refusals."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from engineroom.core.clock import utcnow
from engineroom.identity.api_keys import LAST_USED_RESOLUTION, parse_key
from engineroom.identity.models import ApiKey
from engineroom.identity.session_store import flush_writes
from engineroom.settings import Settings
from tests.support.identity_credentials import (
    IdentityApp,
    bearer,
    grant_role,
    identity_app,
    register,
    revoke_role,
    set_user_columns,
)

KEYS = "/api/v1/identity/api-keys"
WHOAMI = "/api/v1/probe/whoami"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def running(tmp_path: Path, database_url: str | None) -> AsyncIterator[IdentityApp]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        allowed_hosts=["*"],
        log_format="console",
    )
    async with identity_app(settings) as app:
        yield app


@pytest.fixture
async def ann(running: IdentityApp) -> dict[str, Any]:
    user = await register(running.client, "ann")
    return {"user": user, "headers": await bearer(running.client, "ann")}


async def create_key(running: IdentityApp, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await running.client.post(KEYS, json={"name": "bot", **body}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_create_list_use_and_revoke(running: IdentityApp, ann: dict[str, Any]) -> None:
    created = await create_key(running, ann["headers"], name="deploy bot")
    key = created["key"]
    parsed = parse_key(key)
    assert parsed is not None
    assert created["prefix"] == parsed.prefix
    assert created["status"] == "active"
    assert created["scopes"] is None
    assert created["last_used_at"] is None

    listed = await running.client.get(KEYS, headers=ann["headers"])
    assert listed.status_code == 200
    [entry] = listed.json()["api_keys"]
    assert entry["id"] == created["id"]
    assert "key" not in entry, "the secret is shown once"
    assert key not in listed.text

    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        me = await running.client.get(WHOAMI, headers=headers)
        assert me.status_code == 200, me.text
        assert me.json()["kind"] == "api_key"
        assert me.json()["subject"] == ann["user"]["id"]
        assert me.json()["credential_id"] == created["id"]

    # Machines send no CSRF token: a key is never subject to it.
    write = await running.client.post("/api/v1/probe/write", headers={"X-API-Key": key})
    assert write.status_code == 200

    revoke = await running.client.delete(f"{KEYS}/{created['id']}", headers=ann["headers"])
    assert revoke.status_code == 204
    refused = await running.client.get(WHOAMI, headers={"X-API-Key": key})
    assert refused.status_code == 401
    assert refused.json()["code"] == "api_key_invalid"
    again = await running.client.delete(f"{KEYS}/{created['id']}", headers=ann["headers"])
    assert again.status_code == 204
    shown = await running.client.get(f"{KEYS}/{created['id']}", headers=ann["headers"])
    assert shown.json()["status"] == "revoked"


async def test_the_database_keeps_only_a_hash(running: IdentityApp, ann: dict[str, Any]) -> None:
    created = await create_key(running, ann["headers"])
    async with running.platform.database.read_only() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.id == uuid.UUID(created["id"])))
        assert row is not None
        stored = (row.prefix, row.key_hash, row.name)
    secret = created["key"].rsplit("_", 1)[1]
    assert all(secret not in value for value in stored)


@pytest.mark.parametrize(
    "value",
    [
        "er_",
        "er_short_key",
        "er_abcdefghijkl_" + "A" * 42,
        "er_ABCDEFGHIJKL_" + "A" * 43,
        "er_abcdefghijkl_" + "A" * 43,  # well-formed, unknown
    ],
)
async def test_malformed_and_unknown_keys_are_401(
    running: IdentityApp, ann: dict[str, Any], value: str
) -> None:
    for headers in ({"X-API-Key": value}, {"Authorization": f"Bearer {value}"}):
        response = await running.client.get(WHOAMI, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "api_key_invalid"


async def test_a_key_with_a_wrong_secret_is_refused(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    key = (await create_key(running, ann["headers"]))["key"]
    forged = key[:-1] + ("a" if key[-1] != "a" else "b")
    response = await running.client.get(WHOAMI, headers={"X-API-Key": forged})
    assert response.status_code == 401


async def test_expired_keys_are_refused(running: IdentityApp, ann: dict[str, Any]) -> None:
    soon = (utcnow() + timedelta(hours=1)).isoformat()
    created = await create_key(running, ann["headers"], expires_at=soon)
    assert (await running.client.get(WHOAMI, headers={"X-API-Key": created["key"]})).is_success
    async with running.platform.database.unit_of_work() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == uuid.UUID(created["id"]))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    response = await running.client.get(WHOAMI, headers={"X-API-Key": created["key"]})
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_expired"
    listed = (await running.client.get(KEYS, headers=ann["headers"])).json()["api_keys"]
    assert listed[0]["status"] == "expired"


async def test_a_disabled_owner_stops_every_key_at_once(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    key = (await create_key(running, ann["headers"]))["key"]
    await set_user_columns(running.platform, ann["user"]["id"], disabled_at=utcnow())
    response = await running.client.get(WHOAMI, headers={"X-API-Key": key})
    assert response.status_code == 401


async def test_scopes_narrow_and_never_exceed_the_owner(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    refused = await running.client.post(
        KEYS, json={"name": "x", "scopes": ["chat:room:moderate"]}, headers=ann["headers"]
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "api_key_scope_not_allowed"

    await grant_role(running.platform, ann["user"]["id"], "chatmod", ["chat:*", "blog:*"])
    headers = await bearer(running.client, "ann")
    narrow = await create_key(running, headers, scopes=["blog:article:read"])
    broad = await create_key(running, headers, scopes=["chat:room:moderate"])
    unscoped = await create_key(running, headers)
    assert narrow["scopes"] == ["blog:article:read"]

    moderate = "/api/v1/probe/moderate"
    assert (
        await running.client.post(moderate, headers={"X-API-Key": narrow["key"]})
    ).status_code == 403
    assert (await running.client.post(moderate, headers={"X-API-Key": broad["key"]})).is_success
    assert (await running.client.post(moderate, headers={"X-API-Key": unscoped["key"]})).is_success
    whoami = await running.client.get(WHOAMI, headers={"X-API-Key": narrow["key"]})
    assert whoami.json()["scopes"] == ["blog:article:read"]

    # The owner loses the role: the scoped key loses the permission with it.
    await revoke_role(running.platform, ann["user"]["id"], "chatmod")
    for key in (broad["key"], unscoped["key"]):
        assert (await running.client.post(moderate, headers={"X-API-Key": key})).status_code == 403


async def test_a_key_cannot_manage_credentials(running: IdentityApp, ann: dict[str, Any]) -> None:
    key = (await create_key(running, ann["headers"]))["key"]
    headers = {"X-API-Key": key}
    for call in (
        running.client.post(KEYS, json={"name": "child"}, headers=headers),
        running.client.get(KEYS, headers=headers),
        running.client.get("/api/v1/identity/sessions", headers=headers),
        running.client.post("/api/v1/identity/sessions/revoke-others", headers=headers),
        running.client.get("/api/v1/identity/mfa", headers=headers),
        running.client.post("/api/v1/identity/mfa/totp", headers=headers),
    ):
        response = await call
        assert response.status_code == 403
        assert response.json()["code"] == "api_key_forbidden"


async def test_other_users_keys_are_invisible(running: IdentityApp, ann: dict[str, Any]) -> None:
    created = await create_key(running, ann["headers"])
    await register(running.client, "bob")
    bob = await bearer(running.client, "bob")
    assert (await running.client.get(f"{KEYS}/{created['id']}", headers=bob)).status_code == 404
    assert (await running.client.delete(f"{KEYS}/{created['id']}", headers=bob)).status_code == 404
    assert (await running.client.get(KEYS, headers=bob)).json() == {"api_keys": []}
    assert (await running.client.get(WHOAMI, headers={"X-API-Key": created["key"]})).is_success


async def test_last_used_is_written_at_most_once_a_minute(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    created = await create_key(running, ann["headers"])
    headers = {"X-API-Key": created["key"]}

    async def last_used() -> str | None:
        shown = await running.client.get(f"{KEYS}/{created['id']}", headers=ann["headers"])
        value: str | None = shown.json()["last_used_at"]
        return value

    await running.client.get(WHOAMI, headers=headers)
    await flush_writes(running.platform)
    first = await last_used()
    assert first is not None
    await asyncio.gather(*(running.client.get(WHOAMI, headers=headers) for _ in range(5)))
    await flush_writes(running.platform)
    assert await last_used() == first
    async with running.platform.database.unit_of_work() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == uuid.UUID(created["id"]))
            .values(last_used_at=utcnow() - LAST_USED_RESOLUTION)
        )
    # Recorded even when the request's own transaction holds the write lock already.
    lazy = await asyncio.wait_for(
        running.client.get("/api/v1/probe/lazy-whoami", headers=headers), timeout=5
    )
    assert lazy.status_code == 200
    await flush_writes(running.platform)
    assert (await last_used()) != first


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "x", "scopes": ["Not A Scope"]},
        {"name": "x", "scopes": "blog:article:read"},
        {"name": "x", "scopes": [f"m:r{i}" for i in range(33)]},
        {"name": "x", "expires_at": "2001-01-01T00:00:00Z"},
        {"name": "x", "expires_at": "2099-01-01T00:00:00"},  # no offset
        {"name": "x", "expires_at": "tomorrow"},
        {"name": "x", "owner": "someone else"},
    ],
)
async def test_bad_input_is_422(
    running: IdentityApp, ann: dict[str, Any], body: dict[str, Any]
) -> None:
    response = await running.client.post(KEYS, json=body, headers=ann["headers"])
    assert response.status_code == 422, response.text


async def test_unknown_and_malformed_ids(running: IdentityApp, ann: dict[str, Any]) -> None:
    assert (
        await running.client.get(f"{KEYS}/{uuid.uuid4()}", headers=ann["headers"])
    ).status_code == 404
    assert (
        await running.client.get(f"{KEYS}/not-a-uuid", headers=ann["headers"])
    ).status_code == 422


async def test_anonymous_callers_get_401(running: IdentityApp) -> None:
    assert (await running.client.get(KEYS)).status_code == 401
    assert (await running.client.post(KEYS, json={"name": "x"})).status_code == 401


async def test_a_key_reads_its_owner_but_manages_nothing(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    key = (await create_key(running, ann["headers"]))["key"]
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        me = await running.client.get("/api/v1/identity/me", headers=headers)
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "ann"
        # RealWorld answers a session token, which a key is not: a clear refusal.
        realworld = await running.client.get("/api/user", headers=headers)
        assert realworld.status_code == 403, realworld.text
        assert "API keys" in realworld.text
        changed = await running.client.patch(
            "/api/v1/identity/me", json={"bio": "from a key"}, headers=headers
        )
        assert changed.status_code == 401, changed.text
        assert "API keys" in changed.json()["detail"]
