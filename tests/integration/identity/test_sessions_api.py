"""Cookie sessions over HTTP: sign-in, CSRF, listing, revocation, timeouts.

Every test runs with the database session store (SQLite) and the Redis store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from engineroom.core.clock import utcnow
from engineroom.identity import sessions
from engineroom.identity.session_store import (
    RedisSessionStore,
    flush_writes,
    use_session_store,
)
from engineroom.settings import Settings
from tests.support.identity_credentials import (
    PASSWORD,
    IdentityApp,
    bearer,
    identity_app,
    register,
    set_user_columns,
)

OpenApp = Callable[..., AbstractAsyncContextManager[IdentityApp]]
SESSIONS = "/api/v1/identity/sessions"


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def store_kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    if request.param == "redis":
        return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return "", ""


@pytest.fixture
async def open_app(settings: Settings, store_kind: tuple[str, str]) -> AsyncIterator[OpenApp]:
    redis_url, prefix = store_kind

    @asynccontextmanager
    async def open_(**identity: Any) -> AsyncIterator[IdentityApp]:
        async with identity_app(settings, **identity) as running:
            if redis_url:
                store = RedisSessionStore.from_url(redis_url, key_prefix=prefix)
                use_session_store(running.platform, store)
            yield running

    yield open_
    if redis_url:
        client = Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def running(open_app: OpenApp) -> AsyncIterator[IdentityApp]:
    async with open_app() as app:
        await register(app.client, "ann")
        yield app


async def sign_in(client: httpx.AsyncClient, name: str = "ann", **headers: str) -> dict[str, Any]:
    response = await client.post(
        SESSIONS, json={"email": f"{name}@example.com", "password": PASSWORD}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def csrf(body: dict[str, Any]) -> dict[str, str]:
    return {"X-CSRF-Token": body["csrf_token"]}


async def test_sign_in_sets_a_safe_cookie(running: IdentityApp) -> None:
    response = await running.client.post(
        SESSIONS, json={"email": "ANN@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.PLAIN_COOKIE_NAME}=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "samesite=lax" in cookie.lower()
    assert "path=/" in cookie.lower()
    assert "secure" not in attributes, "no Secure flag over plain HTTP"
    body = response.json()
    assert body["session"]["current"] is True
    assert len(body["csrf_token"]) == 64
    token = running.client.cookies[sessions.PLAIN_COOKIE_NAME]
    assert body["session"]["id"] == sessions.session_id(token) != token
    me = await running.client.get("/api/v1/probe/whoami")
    assert me.status_code == 200
    assert me.json()["via"] == "session"
    assert me.json()["kind"] == "user"
    assert me.json()["username"] == "ann"
    assert (await running.client.get("/api/v1/identity/me")).json()["username"] == "ann"


async def test_under_tls_the_cookie_is_secure_and_host_prefixed(running: IdentityApp) -> None:
    async with running.new_client(base_url="https://test") as browser:
        body = await sign_in(browser)
        cookies = {cookie.name: cookie for cookie in browser.cookies.jar}
        assert set(cookies) == {sessions.SECURE_COOKIE_NAME}
        secure_cookie = cookies[sessions.SECURE_COOKIE_NAME]
        assert secure_cookie.secure
        assert secure_cookie.path == "/"
        assert not secure_cookie.domain_specified
        write = await browser.post(
            "/api/v1/probe/write", headers={**csrf(body), "Origin": "https://test"}
        )
        assert write.status_code == 200
        # The same site over plain HTTP is another origin.
        downgraded = await browser.post(
            "/api/v1/probe/write", headers={**csrf(body), "Origin": "http://test"}
        )
        assert downgraded.status_code == 403


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": "ann@example.com", "password": "wrong password"},
        {"email": "nobody@example.com", "password": PASSWORD},
    ],
)
async def test_bad_credentials_set_no_cookie(
    running: IdentityApp, credentials: dict[str, str]
) -> None:
    response = await running.client.post(SESSIONS, json=credentials)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "body",
    [{}, {"email": "ann@example.com"}, {"email": "a", "password": "b", "extra": 1}, []],
)
async def test_malformed_sign_in_is_422(running: IdentityApp, body: object) -> None:
    response = await running.client.post(SESSIONS, json=body)
    assert response.status_code == 422


async def test_every_sign_in_makes_a_new_session_and_ends_the_previous(
    running: IdentityApp,
) -> None:
    await sign_in(running.client)
    first = running.client.cookies[sessions.PLAIN_COOKIE_NAME]
    await sign_in(running.client)
    second = running.client.cookies[sessions.PLAIN_COOKIE_NAME]
    assert first != second
    async with running.new_client() as attacker:
        # A session id known before sign-in (planted or stolen) is worth nothing after it.
        attacker.cookies.set(sessions.PLAIN_COOKIE_NAME, first)
        response = await attacker.get("/api/v1/probe/whoami")
        assert response.status_code == 401
        assert response.json()["code"] == "session_invalid"


async def test_a_cookie_id_that_never_was_a_session_is_refused(running: IdentityApp) -> None:
    name = sessions.PLAIN_COOKIE_NAME.encode()
    for value in (b"nonsense", b"x" * 500, "é".encode(), b"%00"):
        async with running.new_client() as client:
            response = await client.get(
                "/api/v1/probe/whoami", headers={"Cookie": name + b"=" + value}
            )
            assert response.status_code == 401, value
            assert response.json()["code"] == "session_invalid"


async def test_unsafe_requests_with_the_cookie_need_the_csrf_token(running: IdentityApp) -> None:
    body = await sign_in(running.client)
    missing = await running.client.post("/api/v1/probe/write")
    assert missing.status_code == 403
    assert missing.json()["code"] == "csrf_failed"
    wrong = await running.client.post("/api/v1/probe/write", headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    foreign = await running.client.post(
        "/api/v1/probe/write", headers={**csrf(body), "Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    ok = await running.client.post(
        "/api/v1/probe/write", headers={**csrf(body), "Origin": "http://test"}
    )
    assert ok.status_code == 200
    # Safe methods need no token.
    assert (await running.client.get("/api/v1/probe/whoami")).status_code == 200


async def test_another_sessions_csrf_token_does_not_work(running: IdentityApp) -> None:
    async with running.new_client() as other:
        other_body = await sign_in(other)
    await sign_in(running.client)
    response = await running.client.post("/api/v1/probe/write", headers=csrf(other_body))
    assert response.status_code == 403


async def test_bearer_requests_are_not_subject_to_csrf(running: IdentityApp) -> None:
    headers = await bearer(running.client, "ann")
    async with running.new_client() as client:
        response = await client.post(
            "/api/v1/probe/write", headers={**headers, "Origin": "https://evil.example"}
        )
    assert response.status_code == 200
    assert response.json()["via"] == "bearer"


async def test_sign_in_from_a_foreign_origin_is_refused(running: IdentityApp) -> None:
    response = await running.client.post(
        SESSIONS,
        json={"email": "ann@example.com", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_current_session_hands_out_the_same_csrf_token(running: IdentityApp) -> None:
    body = await sign_in(running.client)
    current = await running.client.get(f"{SESSIONS}/current")
    assert current.status_code == 200
    assert current.json() == {**body, "session": {**current.json()["session"]}}
    assert current.json()["csrf_token"] == body["csrf_token"]
    assert current.json()["session"]["id"] == body["session"]["id"]
    headers = await bearer(running.client, "ann")
    async with running.new_client() as client:
        not_cookie = await client.get(f"{SESSIONS}/current", headers=headers)
    assert not_cookie.status_code == 404


async def test_list_revoke_one_and_revoke_others(running: IdentityApp) -> None:
    async with running.new_client() as laptop, running.new_client() as phone:
        mine = await sign_in(running.client)
        laptop_body = await sign_in(laptop)
        await sign_in(phone)
        listed = await running.client.get(SESSIONS)
        assert listed.status_code == 200
        ids = [s["id"] for s in listed.json()["sessions"]]
        assert len(ids) == 3
        assert [s["current"] for s in listed.json()["sessions"]] == [True, False, False]

        revoke = await running.client.delete(
            f"{SESSIONS}/{laptop_body['session']['id']}", headers=csrf(mine)
        )
        assert revoke.status_code == 204
        assert (await laptop.get("/api/v1/probe/whoami")).status_code == 401
        again = await running.client.delete(
            f"{SESSIONS}/{laptop_body['session']['id']}", headers=csrf(mine)
        )
        assert again.status_code == 404
        assert again.json()["code"] == "session_not_found"

        others = await running.client.post(f"{SESSIONS}/revoke-others", headers=csrf(mine))
        assert others.status_code == 200
        assert others.json() == {"revoked": 1}
        assert (await phone.get("/api/v1/probe/whoami")).status_code == 401
        assert (await running.client.get("/api/v1/probe/whoami")).status_code == 200
        remaining = (await running.client.get(SESSIONS)).json()["sessions"]
        assert [s["id"] for s in remaining] == [mine["session"]["id"]]


async def test_nobody_revokes_someone_elses_session(running: IdentityApp) -> None:
    await register(running.client, "bob")
    ann = await sign_in(running.client)
    async with running.new_client() as bob:
        bob_body = await sign_in(bob, "bob")
        response = await bob.delete(f"{SESSIONS}/{ann['session']['id']}", headers=csrf(bob_body))
        assert response.status_code == 404
    assert (await running.client.get("/api/v1/probe/whoami")).status_code == 200


async def test_sign_out_ends_the_session_and_clears_the_cookie(running: IdentityApp) -> None:
    body = await sign_in(running.client)
    token = running.client.cookies[sessions.PLAIN_COOKIE_NAME]
    refused = await running.client.delete(f"{SESSIONS}/current")
    assert refused.status_code == 403, "signing out needs the CSRF token too"
    response = await running.client.delete(f"{SESSIONS}/current", headers=csrf(body))
    assert response.status_code == 204
    assert sessions.PLAIN_COOKIE_NAME not in running.client.cookies
    async with running.new_client() as replay:
        replay.cookies.set(sessions.PLAIN_COOKIE_NAME, token)
        assert (await replay.get("/api/v1/probe/whoami")).status_code == 401
        # Signing out with a dead session still clears the cookie.
        assert (await replay.delete(f"{SESSIONS}/current")).status_code == 204


async def test_a_disabled_account_loses_its_sessions_at_once(running: IdentityApp) -> None:
    await sign_in(running.client)
    await set_user_columns(running.platform, await my_id(running.client), disabled_at=utcnow())
    response = await running.client.get("/api/v1/probe/whoami")
    assert response.status_code == 401


async def test_a_password_change_ends_older_sessions(running: IdentityApp) -> None:
    await sign_in(running.client)
    await set_user_columns(
        running.platform, await my_id(running.client), password_changed_at=utcnow()
    )
    assert (await running.client.get("/api/v1/probe/whoami")).status_code == 401


async def my_id(client: httpx.AsyncClient) -> str:
    response = await client.get("/api/v1/identity/me")
    assert response.status_code == 200, response.text
    user_id: str = response.json()["id"]
    return user_id


async def test_idle_timeout(open_app: OpenApp) -> None:
    async with open_app(session_idle_timeout=timedelta(seconds=1)) as app:
        await register(app.client, "ann")
        await sign_in(app.client)
        assert (await app.client.get("/api/v1/probe/whoami")).status_code == 200
        await asyncio.sleep(1.2)
        response = await app.client.get("/api/v1/probe/whoami")
        assert response.status_code == 401
        assert response.json()["code"] == "session_invalid"


async def test_activity_extends_the_idle_deadline_but_not_the_absolute_one(
    open_app: OpenApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "TOUCH_INTERVAL", timedelta(0))
    async with open_app(
        session_idle_timeout=timedelta(seconds=2),
        session_absolute_lifetime=timedelta(seconds=5),
    ) as app:
        await register(app.client, "ann")
        await sign_in(app.client)
        token = app.client.cookies[sessions.PLAIN_COOKIE_NAME]
        # Sent by hand: a browser drops the cookie at its Max-Age (whole seconds), and the
        # server must refuse it on its own anyway.
        cookie = {"Cookie": f"{sessions.PLAIN_COOKIE_NAME}={token}"}
        async with app.new_client() as client:
            for _ in range(4):  # 4 s of activity: twice the idle timeout
                await asyncio.sleep(1)
                response = await client.get("/api/v1/probe/whoami", headers=cookie)
                assert response.status_code == 200
            await asyncio.sleep(1.2)  # 5.2 s after sign-in: past the absolute lifetime
            response = await client.get("/api/v1/probe/whoami", headers=cookie)
        assert response.status_code == 401
        assert response.json()["code"] == "session_invalid"


async def test_activity_is_recorded_without_holding_up_a_writing_request(
    running: IdentityApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "TOUCH_INTERVAL", timedelta(0))
    body = await sign_in(running.client)
    lazy = await asyncio.wait_for(running.client.get("/api/v1/probe/lazy-whoami"), timeout=5)
    assert lazy.status_code == 200
    await flush_writes(running.platform)
    listed = (await running.client.get(SESSIONS)).json()["sessions"]
    seen = datetime.fromisoformat(listed[0]["last_seen_at"])
    assert seen > datetime.fromisoformat(body["session"]["last_seen_at"])
