"""The lifecycle services on PostgreSQL: mailed tokens, revocation, deletion, audit, search."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engineroom.identity import audit, verification
from engineroom.identity.models import ApiKey, OneTimeToken, RefreshToken, User
from engineroom.identity.refresh import ClientInfo
from engineroom.settings import Settings
from tests.support.identity_lifecycle import (
    PASSWORD,
    audit_entries,
    bearer,
    client_at,
    lifecycle_app,
    login,
    register,
    staff,
    token_in,
    user_with_tokens,
    wait_for_mails,
)

pytestmark = pytest.mark.postgres

NEW_PASSWORD = "a brand new passphrase"


async def test_reset_and_email_change_on_postgres(settings: Settings, postgres_url: str) -> None:
    async with lifecycle_app(settings, database_url=postgres_url) as env:
        assert env.platform.database.dialect == "postgresql"
        user, tokens = await user_with_tokens(env, "alice")
        unknown = await env.client.post(
            "/api/v1/identity/password/forgot", json={"email": "ghost@example.com"}
        )
        known = await env.client.post(
            "/api/v1/identity/password/forgot", json={"email": "alice@example.com"}
        )
        assert unknown.status_code == known.status_code == 202
        assert unknown.json() == known.json()
        [mail] = await wait_for_mails(env, 1)
        reset = await env.client.post(
            "/api/v1/identity/password/reset",
            json={"token": token_in(mail), "new_password": NEW_PASSWORD},
        )
        assert reset.status_code == 204
        refused = await env.client.post(
            "/api/v1/identity/token/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refused.status_code == 401
        fresh = await login(env.client, password=NEW_PASSWORD)

        asked = await env.client.post(
            "/api/v1/identity/me/email",
            json={"new_email": "alice@new.example.com", "password": NEW_PASSWORD},
            headers=bearer(fresh["access_token"]),
        )
        assert asked.status_code == 202
        mails = await wait_for_mails(env, 3)
        token = token_in(next(m for m in mails if m["To"] == "alice@new.example.com"))
        confirmed = await env.client.post(
            "/api/v1/identity/email/change/confirm", json={"token": token}
        )
        assert confirmed.json() == {"email": "alice@new.example.com", "email_verified": True}
        actions = [e.action for e in await audit_entries(env, user_id=user["id"])]
        assert {"password.reset", "email.change", "login"} <= set(actions)
        failed = await audit_entries(env, action="password.reset_request")
        assert sorted(e.outcome for e in failed) == ["failure", "success"]


async def test_a_token_is_redeemed_once_under_concurrency(
    settings: Settings, postgres_url: str
) -> None:
    async with lifecycle_app(settings, database_url=postgres_url) as env:
        user = await register(env.client, "alice")
        async with env.platform.database.unit_of_work() as session:
            raw = await verification.issue_token(
                session,
                user_id=uuid.UUID(user["id"]),
                purpose=verification.Purpose.VERIFY_EMAIL,
                ttl=timedelta(hours=1),
                new_email="alice@example.com",
            )

        async def redeem() -> bool:
            try:
                async with env.platform.database.unit_of_work() as session:
                    await verification.verify_email(session, raw, client=ClientInfo())
            except (verification.OneTimeTokenInvalid, verification.OneTimeTokenExpired):
                return False
            return True

        results = await asyncio.gather(*(redeem() for _ in range(8)))
        assert results.count(True) == 1
        async with env.platform.database.read_only() as session:
            used = await session.scalar(
                select(func.count())
                .select_from(OneTimeToken)
                .where(OneTimeToken.used_at.is_not(None))
            )
        assert used == 1


async def test_disable_and_delete_on_postgres(settings: Settings, postgres_url: str) -> None:
    async with lifecycle_app(settings, database_url=postgres_url) as env:
        admin = await staff(env, "root", "admin")
        bob, bob_tokens = await user_with_tokens(env, "bob")
        headers = bearer(bob_tokens["access_token"])
        created = await env.client.post(
            "/api/v1/identity/api-keys", json={"name": "ci"}, headers=headers
        )
        assert created.status_code == 201
        disabled = await env.client.post(
            f"/api/v1/identity/users/{bob['id']}/disable", headers=admin
        )
        assert disabled.json()["disabled"] is True
        assert (
            await env.client.get(
                "/api/v1/identity/me", headers={"X-API-Key": created.json()["key"]}
            )
        ).status_code == 401
        await env.client.post(f"/api/v1/identity/users/{bob['id']}/enable", headers=admin)

        bob_again = bearer((await login(env.client, email="bob@example.com"))["access_token"])
        deleted = await env.client.post(
            "/api/v1/identity/me/delete", json={"password": PASSWORD}, headers=bob_again
        )
        assert deleted.status_code == 204
        async with env.platform.database.read_only() as session:
            owner = uuid.UUID(bob["id"])
            assert await session.get(User, owner) is None
            for model in (RefreshToken, ApiKey):
                count = await session.scalar(
                    select(func.count()).select_from(model).where(model.user_id == owner)
                )
                assert count == 0
        entries = await audit_entries(env, user_id=bob["id"])
        assert [e.action for e in entries][-1] == "user.delete"


async def test_search_and_audit_pages_on_postgres(settings: Settings, postgres_url: str) -> None:
    async with lifecycle_app(settings, database_url=postgres_url) as env:
        admin = await staff(env, "root", "admin")
        for name in ("Ann_1", "ann21", "bob"):
            await register(env.client, name, email=f"{name.lower()}@example.com")
        found = await env.client.get("/api/v1/identity/users", params={"q": "ANN_"}, headers=admin)
        assert [u["username"] for u in found.json()["users"]] == ["Ann_1"]
        attacker = client_at(env, "203.0.113.9")
        for _ in range(3):
            await attacker.post(
                "/api/v1/identity/token", json={"email": "bob@example.com", "password": "wrong!!!"}
            )
        await audit.flush(env.platform)
        events: list[dict[str, object]] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"outcome": "failure", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = await env.client.get(
                "/api/v1/identity/audit-events", params=params, headers=admin
            )
            assert page.status_code == 200, page.text
            events.extend(page.json()["events"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert len(events) == 3
        assert {e["ip"] for e in events} == {"203.0.113.9"}
