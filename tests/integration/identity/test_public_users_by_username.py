"""The facade's batch lookup by username, on SQLite, PostgreSQL and MariaDB: the same
matching as ``get_user_by_username`` and the same users as ``get_users``, in one
statement whatever the number of names."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engineroom.identity import public, rbac
from engineroom.settings import Settings
from tests.support.chat_domain import StatementCounter
from tests.support.identity import PASSWORD, IdentityApp, bearer, identity_app, login, register


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}"
    fixture = {"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
async def env(settings: Settings, database_url: str) -> AsyncIterator[IdentityApp]:
    async with identity_app(settings.model_copy(update={"database_url": database_url})) as app:
        assert database_url.startswith(app.platform.database.dialect)
        yield app


async def _grant(env: IdentityApp, user_id: str, role: str) -> None:
    async with env.platform.database.unit_of_work() as session:
        await rbac.assign_role(session, uuid.UUID(user_id), role)


async def test_names_match_in_any_case_and_carry_roles_in_one_statement(
    env: IdentityApp,
) -> None:
    alice = await register(env.client, "Alice")
    bob = await register(env.client, "bob")
    carol = await register(env.client, "carol.smith")
    await register(env.client, "dave")
    await _grant(env, alice["id"], "moderator")
    asked = ["alice", "BOB", "Carol.Smith", "carol.smith", "nobody", "x" * 80, ""]

    with StatementCounter(env.platform) as counter:
        async with env.platform.database.read_only() as session:
            counter.counting = True
            found = await public.get_users_by_usernames(session, asked)
            nothing = await public.get_users_by_usernames(session, [])
            counter.counting = False
            one_by_one = {name: await public.get_user_by_username(session, name) for name in asked}
            by_id = await public.get_users(
                session, [uuid.UUID(user["id"]) for user in (alice, bob, carol)]
            )

    assert len(counter.statements) == 1, counter.statements
    assert nothing == {}
    # Keyed by the names as asked; names that match nobody are left out.
    assert list(found) == ["alice", "BOB", "Carol.Smith", "carol.smith"]
    assert found == {name: user for name, user in one_by_one.items() if user is not None}
    assert found["alice"] == by_id[uuid.UUID(alice["id"])]
    assert found["BOB"] == by_id[uuid.UUID(bob["id"])]
    assert found["Carol.Smith"] == found["carol.smith"] == by_id[uuid.UUID(carol["id"])]
    assert found["alice"].username == "Alice"
    assert found["alice"].roles == frozenset({"member", "moderator"})
    assert found["BOB"].roles == frozenset({"member"})
    assert found["BOB"].email == "bob@example.com"
    assert all(user.is_active for user in found.values())


async def test_disabled_users_are_found_and_deleted_ones_are_not(env: IdentityApp) -> None:
    root = await register(env.client, "root")
    await _grant(env, root["id"], "admin")
    admin = bearer((await login(env.client, email="root@example.com"))["access_token"])
    bob = await register(env.client, "bob")
    await register(env.client, "carol")
    disabled = await env.client.post(f"/api/v1/identity/users/{bob['id']}/disable", headers=admin)
    assert disabled.status_code == 200, disabled.text
    carol_token = (await login(env.client, email="carol@example.com"))["access_token"]
    deleted = await env.client.post(
        "/api/v1/identity/me/delete", json={"password": PASSWORD}, headers=bearer(carol_token)
    )
    assert deleted.status_code == 204, deleted.text

    async with env.platform.database.read_only() as session:
        found = await public.get_users_by_usernames(session, ["Bob", "carol", "root"])
        single_bob = await public.get_user_by_username(session, "Bob")
        single_carol = await public.get_user_by_username(session, "carol")

    assert sorted(found) == ["Bob", "root"]
    assert found["Bob"].id == uuid.UUID(bob["id"])
    assert found["Bob"].is_active is False
    assert found["Bob"] == single_bob
    assert single_carol is None
    assert found["root"].roles == frozenset({"admin", "member"})
