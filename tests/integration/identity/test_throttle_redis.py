"""Login limits, known addresses and session revocation with Redis, shared by processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest

from engineroom.core.clock import utcnow
from engineroom.identity.config import IdentitySettings
from engineroom.identity.session_store import RedisSessionStore, session_store
from engineroom.settings import Settings
from tests.support.identity_lifecycle import (
    PASSWORD,
    LifecycleApp,
    clear_redis,
    client_at,
    identity_settings,
    lifecycle_app,
    register,
    token_in,
    wait_for_mails,
)

pytestmark = pytest.mark.redis

TOKEN = "/api/v1/identity/token"
WRONG = "not the password at all"


@asynccontextmanager
async def redis_app(
    settings: Settings,
    redis_url: str,
    redis_prefix: str,
    identity: IdentitySettings | None = None,
) -> AsyncIterator[LifecycleApp]:
    try:
        async with lifecycle_app(
            settings, identity=identity, redis_url=redis_url, redis_prefix=redis_prefix
        ) as env:
            yield env
    finally:
        await clear_redis(redis_url, redis_prefix)


async def attempt(client: httpx.AsyncClient, password: str = WRONG) -> int:
    response = await client.post(TOKEN, json={"email": "alice@example.com", "password": password})
    return response.status_code


async def test_lockout_scope_and_known_addresses_in_redis(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    limits = identity_settings(login_limit_per_account="4/hour")
    async with redis_app(settings, redis_url, redis_prefix, limits) as env:
        await register(env.client, "alice")
        home = client_at(env, "198.51.100.4")
        assert await attempt(home, PASSWORD) == 200
        attacker = client_at(env, "203.0.113.9")
        assert [await attempt(attacker) for _ in range(4)] == [401, 401, 401, 401]
        assert await attempt(attacker) == 429
        # The account window is full: a new place waits, the owner's place does not.
        assert await attempt(client_at(env, "192.0.2.1"), PASSWORD) == 429
        assert await attempt(home, PASSWORD) == 200


async def test_the_redis_lockout_expires(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    limits = identity_settings(login_limit_per_account_address="2/2 seconds")
    async with redis_app(settings, redis_url, redis_prefix, limits) as env:
        await register(env.client, "alice")
        assert [await attempt(env.client) for _ in range(3)] == [401, 401, 429]
        await asyncio.sleep(2.2)
        assert await attempt(env.client, PASSWORD) == 200


async def test_two_processes_share_the_limits(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(redis_app(settings, redis_url, redis_prefix))
        two = await stack.enter_async_context(
            lifecycle_app(settings, redis_url=redis_url, redis_prefix=redis_prefix)
        )
        assert one.platform is not two.platform
        await register(one.client, "alice")
        first = client_at(one, "203.0.113.9")
        second = client_at(two, "203.0.113.9")
        assert [await attempt(first) for _ in range(3)] == [401, 401, 401]
        assert [await attempt(second) for _ in range(3)] == [401, 401, 429]
        assert await attempt(first, PASSWORD) == 429


async def test_a_reset_ends_the_redis_sessions(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    async with redis_app(settings, redis_url, redis_prefix) as env:
        user = await register(env.client, "alice")
        browser = client_at(env, "127.0.0.1")
        signed_in = await browser.post(
            "/api/v1/identity/sessions", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert signed_in.status_code == 201
        assert (await browser.get("/api/v1/identity/sessions")).status_code == 200

        asked = await env.client.post(
            "/api/v1/identity/password/forgot", json={"email": "alice@example.com"}
        )
        assert asked.status_code == 202
        [mail] = await wait_for_mails(env, 1)
        reset = await env.client.post(
            "/api/v1/identity/password/reset",
            json={"token": token_in(mail), "new_password": "a brand new passphrase"},
        )
        assert reset.status_code == 204
        assert (await browser.get("/api/v1/identity/sessions")).status_code == 401
        async with env.platform.database.read_only() as session:
            store = session_store(env.platform)
            assert isinstance(store, RedisSessionStore)
            assert await store.list_for_user(session, uuid.UUID(user["id"]), utcnow()) == []
