"""The native account routes: register, token, me, profile and password changes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from engineroom.core.clock import utcnow
from engineroom.core.events.models import OutboxEvent
from engineroom.identity import rbac
from engineroom.identity.config import IdentitySettings
from engineroom.identity.models import User
from engineroom.settings import Settings
from tests.support.identity import (
    PASSWORD,
    IdentityApp,
    bearer,
    identity_app,
    login,
    register,
)

PROBLEM = "application/problem+json"
USERS = "/api/v1/identity/users"
TOKEN = "/api/v1/identity/token"
ME = "/api/v1/identity/me"


async def events(env: IdentityApp, event_type: str) -> list[dict[str, Any]]:
    async with env.platform.database.read_only() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type == event_type).order_by(OutboxEvent.id)
        )
        return [dict(row.payload) for row in rows]


async def test_register_login_and_me(settings: Settings) -> None:
    async with identity_app(settings) as env:
        created = await register(env.client, "Alice", email="  Alice@Example.COM ")
        assert created["email"] == "alice@example.com"
        assert created["username"] == "Alice"
        assert created["roles"] == ["member"]
        assert created["email_verified"] is False
        uuid.UUID(created["id"])

        tokens = await login(env.client, email="ALICE@example.com")
        assert tokens["token_type"] == "Bearer"
        assert 890 <= tokens["expires_in"] <= 900
        assert tokens["refresh_token"].startswith("ert_")
        assert tokens["scope"] is None

        me = await env.client.get(ME, headers=bearer(tokens["access_token"]))
        assert me.status_code == 200
        assert me.json() == created

        assert await events(env, "identity.user.registered") == [
            {
                "user_id": created["id"],
                "username": "Alice",
                "email": "alice@example.com",
                "bio": None,
                "image": None,
            }
        ]
        assert await events(env, "identity.user.logged_in") == [
            {"user_id": created["id"], "method": "password"}
        ]


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "is invalid"),
        ({"username": "ab"}, "username", "must be 3 to 32 characters"),
        ({"username": "a" * 33}, "username", "must be 3 to 32 characters"),
        ({"username": "-alice"}, "username", "starting with a letter or digit"),
        ({"username": "al ice"}, "username", "must be 3 to 32"),
        ({"username": "alicé"}, "username", "must be 3 to 32"),
        ({"password": "short"}, "password", "is too short"),
        ({"password": "x" * 257}, "password", "is too long"),
        ({"password": "password1"}, "password", "is too common"),
        ({"password": "Qwertyuiop"}, "password", "is too common"),
        ({"password": "alice@example.com"}, "password", "must not be your username or email"),
    ],
)
async def test_register_refuses_invalid_input(
    settings: Settings, payload: dict[str, str], field: str, message: str
) -> None:
    body = {"email": "alice@example.com", "username": "alice", "password": PASSWORD} | payload
    async with identity_app(settings) as env:
        response = await env.client.post(USERS, json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["code"] == "validation_failed"
        assert [error["field"] for error in problem["errors"]] == [field]
        assert message in problem["errors"][0]["message"]
        async with env.platform.database.read_only() as session:
            assert list(await session.scalars(select(User))) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "a@example.com", "username": "alice"},
        {"email": "a@example.com", "username": "alice", "password": PASSWORD, "admin": True},
        {"email": 5, "username": "alice", "password": PASSWORD},
        {"email": "a@example.com", "username": "alice", "password": "p" * 2000},
    ],
)
async def test_register_refuses_malformed_bodies(settings: Settings, body: dict[str, Any]) -> None:
    async with identity_app(settings) as env:
        response = await env.client.post(USERS, json=body)
        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM


async def test_email_and_username_are_unique_whatever_their_case(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        taken_email = await env.client.post(
            USERS, json={"email": "ALICE@example.com", "username": "other", "password": PASSWORD}
        )
        taken_name = await env.client.post(
            USERS, json={"email": "b@example.com", "username": "ALICE", "password": PASSWORD}
        )
    assert taken_email.status_code == 409
    assert taken_email.json()["code"] == "email_taken"
    assert taken_email.json()["errors"] == [{"field": "email", "message": "has already been taken"}]
    assert taken_name.status_code == 409
    assert taken_name.json()["code"] == "username_taken"


async def test_concurrent_registrations_of_one_email_make_one_account(settings: Settings) -> None:
    async with identity_app(settings) as env:
        bodies = [
            {"email": "same@example.com", "username": f"user{i}", "password": PASSWORD}
            for i in range(4)
        ]
        responses = await asyncio.gather(*(env.client.post(USERS, json=b) for b in bodies))
        statuses = sorted(response.status_code for response in responses)
        async with env.platform.database.read_only() as session:
            users = list(await session.scalars(select(User)))
    assert statuses == [201, 409, 409, 409]
    assert len(users) == 1


async def _failed_login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(TOKEN, json={"email": email, "password": password})


async def test_login_does_not_tell_unknown_emails_from_wrong_passwords(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        wrong = await _failed_login(env.client, "alice@example.com", "not the password")
        unknown = await _failed_login(env.client, "nobody@example.com", "not the password")
        malformed = await _failed_login(env.client, "not an email", "not the password")
    for response in (wrong, unknown, malformed):
        assert response.status_code == 401
        body = response.json()
        body.pop("request_id", None)
        assert body == {
            "type": "https://engineroom.dev/problems/invalid_credentials",
            "title": "Unauthorized",
            "status": 401,
            "detail": "The email or password is incorrect.",
            "code": "invalid_credentials",
            "instance": TOKEN,
        }
        assert "www-authenticate" not in response.headers


async def test_unknown_email_costs_a_password_verification(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engineroom.identity import passwords

    calls: list[str] = []
    original = passwords._Pool.verify

    def counting(self: passwords._Pool, encoded: str, password: str) -> passwords.Verification:
        calls.append(password)
        return original(self, encoded, password)

    monkeypatch.setattr(passwords._Pool, "verify", counting)
    async with identity_app(settings) as env:
        await _failed_login(env.client, "nobody@example.com", "guess one")
        await register(env.client, "alice")
        await _failed_login(env.client, "alice@example.com", "guess two")
    assert calls == ["guess one", "guess two"]


async def test_disabled_account_cannot_log_in(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        async with env.platform.database.unit_of_work() as session:
            user = (await session.scalars(select(User))).one()
            user.disabled_at = user.created_at
        refused = await _failed_login(env.client, "alice@example.com", PASSWORD)
        wrong = await _failed_login(env.client, "alice@example.com", "wrong password!")
    assert refused.status_code == 403
    assert refused.json()["code"] == "account_disabled"
    # Without the password nothing is revealed about the account.
    assert wrong.status_code == 401


async def test_me_requires_a_valid_token(settings: Settings) -> None:
    async with identity_app(settings) as env:
        missing = await env.client.get(ME)
        garbage = await env.client.get(ME, headers=bearer("not-a-jwt"))
        wrong_scheme = await env.client.get(ME, headers={"Authorization": "Basic abc"})
    for response in (missing, garbage, wrong_scheme):
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
    assert garbage.json()["code"] == "token_invalid"


async def test_update_profile(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        await register(env.client, "bob")
        token = (await login(env.client))["access_token"]
        changed = await env.client.patch(
            ME,
            json={"username": "Alice2", "bio": "hi", "image": "https://example.com/a.png"},
            headers=bearer(token),
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["username"] == "Alice2"
        assert changed.json()["bio"] == "hi"
        cleared = await env.client.patch(ME, json={"bio": None}, headers=bearer(token))
        assert cleared.json()["bio"] is None
        assert cleared.json()["image"] == "https://example.com/a.png"
        taken = await env.client.patch(ME, json={"username": "BOB"}, headers=bearer(token))
        bad_image = await env.client.patch(
            ME, json={"image": "javascript:x"}, headers=bearer(token)
        )
        no_name = await env.client.patch(ME, json={"username": None}, headers=bearer(token))
        email = await env.client.patch(ME, json={"email": "x@example.com"}, headers=bearer(token))
        updates = await events(env, "identity.user.updated")
    assert taken.status_code == 409
    assert bad_image.status_code == 422
    assert no_name.status_code == 422
    assert email.status_code == 422  # email changes go through verification, not PATCH
    assert [event["username"] for event in updates] == ["Alice2", "Alice2"]
    assert updates[-1]["bio"] is None


async def test_change_password(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        first = await login(env.client)
        other = await login(env.client)
        url = f"{ME}/password"
        headers = bearer(first["access_token"])
        wrong = await env.client.post(
            url,
            json={"current_password": "nope nope", "new_password": "a new passphrase"},
            headers=headers,
        )
        weak = await env.client.post(
            url, json={"current_password": PASSWORD, "new_password": "password"}, headers=headers
        )
        changed = await env.client.post(
            url,
            json={"current_password": PASSWORD, "new_password": "a new passphrase"},
            headers=headers,
        )
        assert changed.status_code == 200, changed.text
        fresh = changed.json()
        refresh_url = "/api/v1/identity/token/refresh"
        old = await env.client.post(refresh_url, json={"refresh_token": other["refresh_token"]})
        new = await env.client.post(refresh_url, json={"refresh_token": fresh["refresh_token"]})
        old_password = await _failed_login(env.client, "alice@example.com", PASSWORD)
        await login(env.client, password="a new passphrase")
    assert wrong.status_code == 403
    assert wrong.json()["code"] == "wrong_password"
    assert weak.status_code == 422
    assert old.status_code == 401
    assert new.status_code == 200
    assert old_password.status_code == 401


async def test_a_password_changed_during_the_check_refuses_the_login(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engineroom.identity import passwords

    original = passwords.verify_password
    async with identity_app(settings) as env:
        user = await register(env.client, "alice")

        async def changed_meanwhile(
            config: IdentitySettings, encoded: str, password: str
        ) -> passwords.Verification:
            # Another request sets a new password while this one hashes.
            async with env.platform.database.unit_of_work() as session:
                await session.execute(
                    update(User)
                    .where(User.id == uuid.UUID(user["id"]))
                    .values(password_changed_at=utcnow())
                )
            return await original(config, encoded, password)

        monkeypatch.setattr(passwords, "verify_password", changed_meanwhile)
        refused = await _failed_login(env.client, "alice@example.com", PASSWORD)
        monkeypatch.setattr(passwords, "verify_password", original)
        await login(env.client)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_credentials"


@pytest.mark.parametrize("route", ["native", "realworld"])
async def test_login_tokens_carry_the_roles_and_permissions(settings: Settings, route: str) -> None:
    async with identity_app(settings) as env:
        user = await register(env.client, "alice")
        async with env.platform.database.unit_of_work() as session:
            await rbac.create_role(
                session,
                name="editor",
                description=None,
                permissions=["blog:article:delete", "blog:comment:delete"],
            )
            await rbac.assign_role(session, uuid.UUID(user["id"]), "editor")
        if route == "native":
            token = (await login(env.client))["access_token"]
        else:
            response = await env.client.post(
                "/api/users/login",
                json={"user": {"email": "alice@example.com", "password": PASSWORD}},
            )
            assert response.status_code == 200, response.text
            token = response.json()["user"]["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["roles"] == ["editor", "member"]
    assert claims["perms"] == ["blog:article:delete", "blog:comment:delete"]
