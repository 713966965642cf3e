"""Email change, account deletion, admin disable/enable and the admin user listing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from engineroom.core.events.models import OutboxEvent
from engineroom.identity.models import ApiKey, RefreshToken, User
from engineroom.settings import Settings
from tests.support.identity_lifecycle import (
    PASSWORD,
    LifecycleApp,
    audit_entries,
    bearer,
    body_of,
    client_at,
    lifecycle_app,
    login,
    register,
    staff,
    token_in,
    user_with_tokens,
    wait_for_mails,
)

ME = "/api/v1/identity/me"
CHANGE = "/api/v1/identity/me/email"
CONFIRM = "/api/v1/identity/email/change/confirm"
DELETE = "/api/v1/identity/me/delete"
USERS = "/api/v1/identity/users"
TOKEN = "/api/v1/identity/token"


async def events(env: LifecycleApp, event_type: str) -> list[dict[str, Any]]:
    async with env.platform.database.read_only() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type == event_type).order_by(OutboxEvent.id)
        )
        return [dict(row.payload) for row in rows]


async def test_email_change_applies_only_once_confirmed(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        user, tokens = await user_with_tokens(env, "alice")
        headers = bearer(tokens["access_token"])
        asked = await env.client.post(
            CHANGE,
            json={"new_email": " Alice@New.Example.com", "password": PASSWORD},
            headers=headers,
        )
        assert asked.status_code == 202, asked.text
        mails = await wait_for_mails(env, 2)
        by_recipient = {mail["To"]: mail for mail in mails}
        assert set(by_recipient) == {"alice@new.example.com", "alice@example.com"}
        notice = body_of(by_recipient["alice@example.com"])
        assert "alice@new.example.com" in notice
        assert "token" not in notice.lower()
        token = token_in(by_recipient["alice@new.example.com"])

        # Nothing changes before the confirmation.
        assert (await env.client.get(ME, headers=headers)).json()["email"] == "alice@example.com"
        await login(env.client, email="alice@example.com")

        confirmed = await env.client.post(CONFIRM, json={"token": token})
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json() == {"email": "alice@new.example.com", "email_verified": True}
        me = (await env.client.get(ME, headers=headers)).json()
        assert me["email"] == "alice@new.example.com"
        assert me["email_verified"] is True
        await login(env.client, email="alice@new.example.com")
        old = await env.client.post(
            TOKEN, json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert old.status_code == 401

        updated = await events(env, "identity.user.updated")
        assert updated[-1]["email"] == "alice@new.example.com"
        assert updated[-1]["user_id"] == user["id"]
        again = await env.client.post(CONFIRM, json={"token": token})
        assert again.status_code == 400
        actions = [e.action for e in await audit_entries(env, user_id=user["id"])]
        assert "email.change_request" in actions
        assert "email.change" in actions


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"new_email": "new@example.com", "password": "wrong password!"}, 403, "wrong_password"),
        ({"new_email": "bob@example.com", "password": PASSWORD}, 409, "email_taken"),
        ({"new_email": "ALICE@example.com", "password": PASSWORD}, 422, "validation_failed"),
        ({"new_email": "not-an-email", "password": PASSWORD}, 422, "validation_failed"),
        ({"new_email": "new@example.com"}, 422, "validation_failed"),
        ({"new_email": "new@example.com", "password": PASSWORD, "x": 1}, 422, "validation_failed"),
    ],
)
async def test_email_change_refusals(
    settings: Settings, payload: dict[str, str], status: int, code: str
) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "bob")
        _, tokens = await user_with_tokens(env, "alice")
        response = await env.client.post(
            CHANGE, json=payload, headers=bearer(tokens["access_token"])
        )
        assert response.status_code == status, response.text
        assert response.json()["code"] == code


async def test_email_change_needs_credentials(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        response = await env.client.post(
            CHANGE, json={"new_email": "x@example.com", "password": PASSWORD}
        )
        assert response.status_code == 401


async def test_confirming_an_address_taken_meanwhile_is_a_conflict(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        _, tokens = await user_with_tokens(env, "alice")
        await env.client.post(
            CHANGE,
            json={"new_email": "shared@example.com", "password": PASSWORD},
            headers=bearer(tokens["access_token"]),
        )
        mails = await wait_for_mails(env, 2)
        token = token_in(next(m for m in mails if m["To"] == "shared@example.com"))
        await register(env.client, "carol", email="shared@example.com")
        response = await env.client.post(CONFIRM, json={"token": token})
        assert response.status_code == 409
        assert response.json()["code"] == "email_taken"


async def test_delete_account(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        user, tokens = await user_with_tokens(env, "alice")
        headers = bearer(tokens["access_token"])
        key = await env.client.post(
            "/api/v1/identity/api-keys", json={"name": "bot"}, headers=headers
        )
        assert key.status_code == 201

        wrong = await env.client.post(DELETE, json={"password": "not my password"}, headers=headers)
        assert wrong.status_code == 403
        assert wrong.json()["code"] == "wrong_password"

        deleted = await env.client.post(DELETE, json={"password": PASSWORD}, headers=headers)
        assert deleted.status_code == 204, deleted.text

        assert await events(env, "identity.user.deleted") == [
            {"user_id": user["id"], "username": "alice"}
        ]
        async with env.platform.database.read_only() as session:
            for model in (User, RefreshToken, ApiKey):
                count = await session.scalar(select(func.count()).select_from(model))
                assert count == 0, model
        refused = await env.client.post(
            "/api/v1/identity/token/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refused.status_code == 401
        api_key = await env.client.get(ME, headers={"X-API-Key": key.json()["key"]})
        assert api_key.status_code == 401
        gone = await env.client.post(
            TOKEN, json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert gone.status_code == 401

        entries = await audit_entries(env, user_id=user["id"])
        assert entries[-1].action == "user.delete"
        assert all("email" not in (e.details or {}) for e in entries)
        # The name is free again.
        await register(env.client, "alice")


async def test_the_last_admin_cannot_delete_their_account(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        headers = await staff(env, "root", "admin")
        response = await env.client.post(DELETE, json={"password": PASSWORD}, headers=headers)
        assert response.status_code == 409
        assert response.json()["code"] == "last_admin"


async def test_delete_refuses_bad_input(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        _, tokens = await user_with_tokens(env, "alice")
        headers = bearer(tokens["access_token"])
        for payload in ({}, {"password": 1}, {"password": "x" * 2000}):
            response = await env.client.post(DELETE, json=payload, headers=headers)
            assert response.status_code == 422
        assert (await env.client.post(DELETE, json={"password": PASSWORD})).status_code == 401


async def test_admin_disable_and_enable(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        admin = await staff(env, "root", "admin")
        bob, bob_tokens = await user_with_tokens(env, "bob")
        browser = client_at(env, "127.0.0.1")
        signed_in = await browser.post(
            "/api/v1/identity/sessions", json={"email": "bob@example.com", "password": PASSWORD}
        )
        assert signed_in.status_code == 201

        member = bearer(bob_tokens["access_token"])
        assert (
            await env.client.post(f"{USERS}/{bob['id']}/disable", headers=member)
        ).status_code == 403

        disabled = await env.client.post(f"{USERS}/{bob['id']}/disable", headers=admin)
        assert disabled.status_code == 200, disabled.text
        assert disabled.json()["disabled"] is True
        assert disabled.json()["disabled_at"] is not None
        twice = await env.client.post(f"{USERS}/{bob['id']}/disable", headers=admin)
        assert twice.status_code == 200

        refresh = await env.client.post(
            "/api/v1/identity/token/refresh", json={"refresh_token": bob_tokens["refresh_token"]}
        )
        assert refresh.status_code == 401
        assert (await browser.get("/api/v1/identity/sessions")).status_code == 401
        login_refused = await env.client.post(
            TOKEN, json={"email": "bob@example.com", "password": PASSWORD}
        )
        assert login_refused.status_code == 403
        assert login_refused.json()["code"] == "account_disabled"
        assert await events(env, "identity.user.disabled") == [
            {"user_id": bob["id"], "username": "bob"}
        ]

        enabled = await env.client.post(f"{USERS}/{bob['id']}/enable", headers=admin)
        assert enabled.status_code == 200
        assert enabled.json()["disabled"] is False
        await login(env.client, email="bob@example.com")
        assert await events(env, "identity.user.enabled") == [
            {"user_id": bob["id"], "username": "bob"}
        ]
        entries = await audit_entries(env, user_id=bob["id"])
        disable = next(e for e in entries if e.action == "user.disable")
        assert disable.actor_id is not None
        assert disable.actor_id != disable.user_id


async def test_admin_cannot_disable_themselves_nor_unknown_users(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        admin = await staff(env, "root", "admin")
        me = (await env.client.get(ME, headers=admin)).json()
        own = await env.client.post(f"{USERS}/{me['id']}/disable", headers=admin)
        assert own.status_code == 409
        assert own.json()["code"] == "cannot_manage_self"
        missing = await env.client.post(f"{USERS}/{uuid.uuid4()}/disable", headers=admin)
        assert missing.status_code == 404
        assert missing.json()["code"] == "user_not_found"
        assert (
            await env.client.post(f"{USERS}/not-a-uuid/enable", headers=admin)
        ).status_code == 422
        assert (await env.client.get(f"{USERS}/{uuid.uuid4()}", headers=admin)).status_code == 404


async def test_admin_lists_and_searches_users(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        admin = await staff(env, "root", "admin")
        names = ["ann", "ben", "cat", "dan", "eve_x"]
        for name in names:
            await register(env.client, name)
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = await env.client.get(USERS, params=params, headers=admin)
            assert page.status_code == 200, page.text
            body = page.json()
            assert len(body["users"]) <= 2
            seen.extend(u["username"] for u in body["users"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == ["root", *names]

        found = await env.client.get(USERS, params={"q": "EVE_"}, headers=admin)
        assert [u["username"] for u in found.json()["users"]] == ["eve_x"]
        # "_" is not a wildcard.
        none = await env.client.get(USERS, params={"q": "n_n"}, headers=admin)
        assert none.json()["users"] == []
        by_mail = await env.client.get(USERS, params={"q": "ben@EX"}, headers=admin)
        assert [u["username"] for u in by_mail.json()["users"]] == ["ben"]
        admins = await env.client.get(USERS, params={"role": "admin"}, headers=admin)
        assert [u["username"] for u in admins.json()["users"]] == ["root"]
        assert admins.json()["users"][0]["roles"] == ["admin", "member"]

        ben = by_mail.json()["users"][0]
        await env.client.post(f"{USERS}/{ben['id']}/disable", headers=admin)
        disabled = await env.client.get(USERS, params={"status": "disabled"}, headers=admin)
        assert [u["username"] for u in disabled.json()["users"]] == ["ben"]
        active = await env.client.get(USERS, params={"status": "active"}, headers=admin)
        assert "ben" not in [u["username"] for u in active.json()["users"]]
        one = await env.client.get(f"{USERS}/{ben['id']}", headers=admin)
        assert one.json()["disabled"] is True


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": 101}, 422),
        ({"limit": "many"}, 422),
        ({"status": "sleeping"}, 422),
        ({"cursor": "!!!"}, 400),
        ({"cursor": "AAAA"}, 400),
        ({"q": "x" * 101}, 422),
    ],
)
async def test_user_listing_refuses_bad_parameters(
    settings: Settings, params: dict[str, object], status: int
) -> None:
    async with lifecycle_app(settings) as env:
        admin = await staff(env, "root", "admin")
        response = await env.client.get(USERS, params=params, headers=admin)
        assert response.status_code == status, response.text


async def test_user_listing_needs_the_permission(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        moderator = await staff(env, "mod", "moderator")
        assert (await env.client.get(USERS, headers=moderator)).status_code == 403
        assert (await env.client.get(USERS)).status_code == 401


@pytest.mark.parametrize("surface", ["native", "realworld"])
async def test_a_password_change_ends_the_other_sign_ins(settings: Settings, surface: str) -> None:
    async with lifecycle_app(settings) as env:
        user, tokens = await user_with_tokens(env, "alice")
        browser = client_at(env, "198.51.100.2")
        signed_in = await browser.post(
            "/api/v1/identity/sessions", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert signed_in.status_code == 201
        headers = bearer(tokens["access_token"])
        new_password = "another long passphrase"
        if surface == "native":
            changed = await env.client.post(
                "/api/v1/identity/me/password",
                json={"current_password": PASSWORD, "new_password": new_password},
                headers=headers,
            )
        else:
            changed = await env.client.put(
                "/api/user", json={"user": {"password": new_password}}, headers=headers
            )
        assert changed.status_code == 200, changed.text
        assert (await browser.get("/api/v1/identity/sessions")).status_code == 401
        refused = await env.client.post(
            "/api/v1/identity/token/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refused.status_code == 401
        entries = await audit_entries(env, action="password.change", user_id=user["id"])
        assert len(entries) == 1
        assert entries[0].details == {"sessions_revoked": 1}


async def test_realworld_user_follows_disable_enable_and_delete_at_once(
    settings: Settings,
) -> None:
    # GET /api/user answers from a profile cache: these changes must not wait for it.
    async with lifecycle_app(settings) as env:
        admin = await staff(env, "root", "admin")
        bob, bob_tokens = await user_with_tokens(env, "bob")
        headers = {"Authorization": f"Token {bob_tokens['access_token']}"}
        assert (await env.client.get("/api/user", headers=headers)).status_code == 200

        await env.client.post(f"{USERS}/{bob['id']}/disable", headers=admin)
        disabled = await env.client.get("/api/user", headers=headers)
        assert disabled.status_code == 403, disabled.text
        assert "disabled" in disabled.text

        await env.client.post(f"{USERS}/{bob['id']}/enable", headers=admin)
        assert (await env.client.get("/api/user", headers=headers)).status_code == 200

        deleted = await env.client.post(DELETE, json={"password": PASSWORD}, headers=headers)
        assert deleted.status_code == 204, deleted.text
        assert (await env.client.get("/api/user", headers=headers)).status_code == 401
