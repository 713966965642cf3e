"""Roles: the built-in ones, custom roles, assignment, and who may manage them."""

from __future__ import annotations

import jwt
import pytest

from engineroom.core.auth import Principal, ensure_owner_or_permitted
from engineroom.core.errors import Forbidden
from engineroom.identity.commands import create_admin
from engineroom.settings import Settings
from tests.support.identity import PASSWORD, IdentityApp, bearer, identity_app, login, register

ROLES = "/api/v1/identity/roles"


async def _admin_token(env: IdentityApp) -> str:
    await create_admin(env.settings, email="root@example.com", username="root", password=PASSWORD)
    return str((await login(env.client, email="root@example.com"))["access_token"])


async def test_builtin_roles_are_seeded(settings: Settings) -> None:
    async with identity_app(settings) as env:
        token = await _admin_token(env)
        listed = await env.client.get(ROLES, headers=bearer(token))
    assert listed.status_code == 200
    roles = {role["name"]: role for role in listed.json()["roles"]}
    assert set(roles) == {"admin", "moderator", "member"}
    assert roles["admin"]["permissions"] == ["*"]
    assert roles["member"]["permissions"] == []
    assert roles["moderator"]["permissions"] == [
        "blog:article:delete",
        "blog:comment:delete",
        "chat:message:delete",
        "chat:room:moderate",
        "identity:audit:read",
    ]
    assert all(role["builtin"] for role in roles.values())


async def test_admin_token_carries_the_wildcard(settings: Settings) -> None:
    async with identity_app(settings) as env:
        token = await _admin_token(env)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["roles"] == ["admin", "member"]
    assert claims["perms"] == ["*"]


async def test_members_cannot_manage_roles(settings: Settings) -> None:
    async with identity_app(settings) as env:
        member = await register(env.client, "alice")
        token = (await login(env.client))["access_token"]
        listed = await env.client.get(ROLES, headers=bearer(token))
        created = await env.client.post(ROLES, json={"name": "x1"}, headers=bearer(token))
        assigned = await env.client.put(
            f"/api/v1/identity/users/{member['id']}/roles/admin", headers=bearer(token)
        )
        anonymous = await env.client.get(ROLES)
    for response in (listed, created, assigned):
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
    assert anonymous.status_code == 401


async def test_custom_role_lifecycle(settings: Settings) -> None:
    async with identity_app(settings) as env:
        admin = bearer(await _admin_token(env))
        alice = await register(env.client, "alice")
        created = await env.client.post(
            ROLES,
            json={
                "name": "editor",
                "description": "Edits articles",
                "permissions": ["blog:article:update", "blog:*", "blog:article:update"],
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        assert created.json()["permissions"] == ["blog:*", "blog:article:update"]
        duplicate = await env.client.post(ROLES, json={"name": "editor"}, headers=admin)
        assert duplicate.status_code == 409

        url = f"/api/v1/identity/users/{alice['id']}/roles/editor"
        assigned = await env.client.put(url, headers=admin)
        again = await env.client.put(url, headers=admin)
        assert assigned.json() == {"user_id": alice["id"], "roles": ["editor", "member"]}
        assert again.json() == assigned.json()

        token = (await login(env.client))["access_token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["perms"] == ["blog:*", "blog:article:update"]

        removed = await env.client.delete(url, headers=admin)
        assert removed.json()["roles"] == ["member"]
        await env.client.put(url, headers=admin)
        deleted = await env.client.delete(f"{ROLES}/editor", headers=admin)
        assert deleted.status_code == 204
        roles = await env.client.get(f"/api/v1/identity/users/{alice['id']}/roles", headers=admin)
        assert roles.json()["roles"] == ["member"]
        gone = await env.client.delete(f"{ROLES}/editor", headers=admin)
    assert gone.status_code == 404
    assert gone.json()["code"] == "role_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Editor"},
        {"name": "x"},
        {"name": "bad name"},
        {"name": "ok-name", "permissions": ["blog"]},
        {"name": "ok-name", "permissions": ["blog:article"]},
        {"name": "ok-name", "permissions": ["Blog:article:update"]},
        {"name": "ok-name", "permissions": ["blog:article:update:more"]},
        {"name": "ok-name", "permissions": ["*:article:update"]},
        {"name": "ok-name", "permissions": "blog:*"},
        {"name": "ok-name", "extra": 1},
    ],
)
async def test_invalid_roles_are_refused(settings: Settings, body: dict[str, object]) -> None:
    async with identity_app(settings) as env:
        response = await env.client.post(ROLES, json=body, headers=bearer(await _admin_token(env)))
    assert response.status_code == 422, response.text


async def test_builtin_roles_and_the_last_admin_are_protected(settings: Settings) -> None:
    async with identity_app(settings) as env:
        admin = bearer(await _admin_token(env))
        builtin = await env.client.delete(f"{ROLES}/moderator", headers=admin)
        me = (await env.client.get("/api/v1/identity/me", headers=admin)).json()
        last = await env.client.delete(
            f"/api/v1/identity/users/{me['id']}/roles/admin", headers=admin
        )
        unknown_user = await env.client.put(
            "/api/v1/identity/users/01a23d8c-0000-7000-8000-000000000000/roles/admin",
            headers=admin,
        )
        unknown_role = await env.client.put(
            f"/api/v1/identity/users/{me['id']}/roles/nope", headers=admin
        )
        bad_id = await env.client.put("/api/v1/identity/users/xyz/roles/admin", headers=admin)
    assert builtin.status_code == 409
    assert builtin.json()["code"] == "builtin_role"
    assert last.status_code == 409
    assert last.json()["code"] == "last_admin"
    assert unknown_user.status_code == 404
    assert unknown_user.json()["code"] == "user_not_found"
    assert unknown_role.status_code == 404
    assert bad_id.status_code == 422


def test_scopes_narrow_and_ownership_helper() -> None:
    moderator = Principal(
        subject="u1",
        permissions=frozenset({"blog:article:delete", "blog:comment:delete"}),
        scopes=frozenset({"blog:comment:delete"}),
    )
    assert moderator.can("blog:comment:delete")
    assert not moderator.can("blog:article:delete")  # the token's scope excludes it
    ensure_owner_or_permitted(moderator, "u1", "blog:article:delete")
    with pytest.raises(Forbidden):
        ensure_owner_or_permitted(moderator, "u2", "blog:article:delete")


async def test_scoped_login(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        bad = await env.client.post(
            "/api/v1/identity/token",
            json={"email": "alice@example.com", "password": PASSWORD, "scope": "not a scope!"},
        )
        empty = await env.client.post(
            "/api/v1/identity/token",
            json={"email": "alice@example.com", "password": PASSWORD, "scope": " "},
        )
    assert bad.status_code == 422
    assert empty.status_code == 422
