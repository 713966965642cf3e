"""The audit log: what is recorded, that refusals survive their rollback, and the query API."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from engineroom.identity import audit, mfa
from engineroom.settings import Settings
from tests.support.identity_lifecycle import (
    PASSWORD,
    LifecycleApp,
    audit_entries,
    bearer,
    client_at,
    lifecycle_app,
    login,
    register,
    staff,
)

AUDIT = "/api/v1/identity/audit-events"
TOKEN = "/api/v1/identity/token"
AGENT = {"User-Agent": "audit-test/1.0"}


async def test_a_failed_login_is_recorded_although_its_request_rolled_back(
    settings: Settings,
) -> None:
    async with lifecycle_app(settings) as env:
        alice = await register(env.client, "alice")
        attacker = client_at(env, "203.0.113.9")
        wrong = await attacker.post(
            TOKEN, json={"email": "ALICE@example.com", "password": "wrong!!!"}, headers=AGENT
        )
        assert wrong.status_code == 401
        ghost = await attacker.post(
            TOKEN, json={"email": "ghost@example.com", "password": "wrong!!!"}, headers=AGENT
        )
        assert ghost.status_code == 401

        failures = [e for e in await audit_entries(env, action="login") if e.outcome == "failure"]
        assert len(failures) == 2
        known, unknown = failures
        assert str(known.user_id) == alice["id"]
        assert known.ip == "203.0.113.9"
        assert known.user_agent == "audit-test/1.0"
        assert known.details == {"error": "invalid_credentials"}
        assert unknown.user_id is None
        assert unknown.details == {"error": "invalid_credentials", "email": "ghost@example.com"}


async def test_blocked_attempts_are_recorded_as_blocked(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        for _ in range(6):
            await env.client.post(
                TOKEN, json={"email": "alice@example.com", "password": "nope!!!!"}
            )
        outcomes = [e.outcome for e in await audit_entries(env, action="login")]
        assert outcomes == ["failure"] * 5 + ["blocked"]


async def _token_lifecycle(env: LifecycleApp) -> dict[str, str]:
    """Register, log in, refresh, API keys, change password, logout."""
    user = await register(env.client, "alice")
    tokens = await login(env.client)
    headers = bearer(tokens["access_token"])
    refreshed = await env.client.post(
        "/api/v1/identity/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    key = await env.client.post("/api/v1/identity/api-keys", json={"name": "ci"}, headers=headers)
    assert key.status_code == 201
    revoked = await env.client.delete(
        f"/api/v1/identity/api-keys/{key.json()['id']}", headers=headers
    )
    assert revoked.status_code == 204
    changed = await env.client.post(
        "/api/v1/identity/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    logout = await env.client.post(
        "/api/v1/identity/logout", json={"refresh_token": changed.json()["refresh_token"]}
    )
    assert logout.status_code == 204
    return user


async def test_authentication_events_are_recorded(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        user = await _token_lifecycle(env)
        browser = client_at(env, "127.0.0.1")
        signed_in = await browser.post(
            "/api/v1/identity/sessions",
            json={"email": "alice@example.com", "password": "another long passphrase"},
        )
        assert signed_in.status_code == 201
        csrf = {"X-CSRF-Token": signed_in.json()["csrf_token"]}
        out = await browser.delete("/api/v1/identity/sessions/current", headers=csrf)
        assert out.status_code == 204

        actions = [e.action for e in await audit_entries(env, user_id=user["id"])]
        for expected in (
            "register",
            "login",
            "token.refresh",
            "api_key.create",
            "api_key.revoke",
            "password.change",
            "logout",
        ):
            assert expected in actions, (expected, actions)
        assert actions[0] == "register"
        assert actions.count("logout") == 2


async def test_refresh_token_reuse_is_recorded(settings: Settings) -> None:
    from engineroom.identity.config import configure
    from tests.support.identity import fast_identity_settings

    async with lifecycle_app(settings) as env:
        configure(env.settings, fast_identity_settings(refresh_grace_seconds=0))
        user = await register(env.client, "alice")
        tokens = await login(env.client)
        refresh = "/api/v1/identity/token/refresh"
        body = {"refresh_token": tokens["refresh_token"]}
        assert (await env.client.post(refresh, json=body)).status_code == 200
        assert (await env.client.post(refresh, json=body)).status_code == 401
        entries = await audit_entries(env, user_id=user["id"])
        reuse = [e for e in entries if e.action == "token.reuse_detected"]
        assert len(reuse) == 1
        assert reuse[0].outcome == "failure"


async def test_role_changes_name_the_admin_as_actor(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        admin = await staff(env, "root", "admin")
        bob = await register(env.client, "bob")
        path = f"/api/v1/identity/users/{bob['id']}/roles/moderator"
        assert (await env.client.put(path, headers=admin)).status_code == 200
        assert (await env.client.delete(path, headers=admin)).status_code == 200
        entries = await audit_entries(env, user_id=bob["id"])
        changes = [(e.action, (e.details or {}).get("role")) for e in entries if "role" in e.action]
        assert changes == [("role.assign", "moderator"), ("role.unassign", "moderator")]
        root = (await env.client.get("/api/v1/identity/me", headers=admin)).json()
        assert all(str(e.actor_id) == root["id"] for e in entries if "role" in e.action)


async def _seed(env: LifecycleApp) -> tuple[dict[str, str], dict[str, str]]:
    alice = await register(env.client, "alice")
    bob = await register(env.client, "bob")
    for _ in range(3):
        await login(env.client, email="alice@example.com")
    await env.client.post(TOKEN, json={"email": "bob@example.com", "password": "wrong one!"})
    return alice, bob


async def _all_pages(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        query: dict[str, str | int] = {**params, "limit": 2}
        if cursor:
            query["cursor"] = cursor
        page = await client.get(AUDIT, params=query, headers=headers)
        assert page.status_code == 200, page.text
        events.extend(page.json()["events"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return events


async def test_the_audit_log_is_searchable_page_by_page(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        moderator = await staff(env, "mod", "moderator")
        alice, bob = await _seed(env)
        await audit.flush(env.platform)

        everything = await _all_pages(env.client, moderator)
        stamps = [e["occurred_at"] for e in everything]
        assert stamps == sorted(stamps, reverse=True)
        assert len({e["id"] for e in everything}) == len(everything)

        alice_logins = await _all_pages(env.client, moderator, user_id=alice["id"], action="login")
        assert len(alice_logins) == 3
        assert all(e["user_id"] == alice["id"] for e in alice_logins)

        failures = await _all_pages(env.client, moderator, outcome="failure")
        assert [(e["user_id"], e["action"]) for e in failures] == [(bob["id"], "login")]

        future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        assert await _all_pages(env.client, moderator, since=future) == []
        naive_future = (datetime.now(UTC) + timedelta(minutes=1)).replace(tzinfo=None).isoformat()
        assert await _all_pages(env.client, moderator, since=naive_future) == []
        assert len(await _all_pages(env.client, moderator, until=future)) == len(everything)
        oldest = everything[-1]["occurred_at"]
        assert isinstance(oldest, str)
        assert len(await _all_pages(env.client, moderator, until=oldest)) == 0


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"cursor": "garbage"}, 400),
        ({"cursor": "MjAyNi0xMi0wM3xub3QtYS11dWlk"}, 400),
        ({"outcome": "maybe"}, 422),
        ({"user_id": "not-a-uuid"}, 422),
        ({"since": "yesterday"}, 422),
        ({"limit": 0}, 422),
        ({"limit": 201}, 422),
        ({"action": "x" * 65}, 422),
    ],
)
async def test_bad_audit_queries_are_refused(
    settings: Settings, params: dict[str, object], status: int
) -> None:
    async with lifecycle_app(settings) as env:
        admin = await staff(env, "root", "admin")
        response = await env.client.get(AUDIT, params=params, headers=admin)
        assert response.status_code == status, response.text


async def test_only_auditors_read_the_log(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        member = bearer((await login(env.client))["access_token"])
        assert (await env.client.get(AUDIT, headers=member)).status_code == 403
        assert (await env.client.get(AUDIT)).status_code == 401
        admin = await staff(env, "root", "admin")
        assert (await env.client.get(AUDIT, headers=admin)).status_code == 200


def test_cursors_round_trip() -> None:
    from engineroom.identity.models import AuditEvent

    event = AuditEvent(id=uuid.uuid4(), occurred_at=datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC))
    assert audit.decode_cursor(audit.encode_cursor(event)) == (event.occurred_at, event.id)


async def test_mfa_and_session_changes_are_recorded(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        user = await register(env.client, "alice")
        headers = bearer((await login(env.client))["access_token"])
        enrollment = await env.client.post("/api/v1/identity/mfa/totp", headers=headers)
        assert enrollment.status_code == 201
        code = mfa.code_at(enrollment.json()["secret"], time.time())
        confirmed = await env.client.post(
            "/api/v1/identity/mfa/totp/confirm", json={"code": code}, headers=headers
        )
        assert confirmed.status_code == 200, confirmed.text
        disabled = await env.client.post(
            "/api/v1/identity/mfa/disable", json={"password": PASSWORD}, headers=headers
        )
        assert disabled.status_code == 204

        phone = client_at(env, "198.51.100.2")
        signed_in = await phone.post(
            "/api/v1/identity/sessions", json={"email": "alice@example.com", "password": PASSWORD}
        )
        session_id = signed_in.json()["session"]["id"]
        revoked = await env.client.delete(
            f"/api/v1/identity/sessions/{session_id}", headers=headers
        )
        assert revoked.status_code == 204
        others = await env.client.post("/api/v1/identity/sessions/revoke-others", headers=headers)
        assert others.status_code == 200

        entries = await audit_entries(env, user_id=user["id"])
        actions = [e.action for e in entries]
        assert actions.count("mfa.enroll") == 1
        assert actions.count("mfa.disable") == 1
        revocations = [e.details for e in entries if e.action == "session.revoke"]
        assert revocations == [{"session_id": session_id}, {"revoked": 0}]
