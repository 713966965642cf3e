"""Rate limits: the limiter (in memory) and the ``RateLimit`` dependency over HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from engineroom.core.auth import Principal, remember_principal
from engineroom.core.errors import ErrorRenderers, install_error_handlers
from engineroom.core.http import install_middleware
from engineroom.core.ratelimit import RateLimit, RateLimiter, RateLimitResult, client_key
from engineroom.core.responses import ORJSONResponse
from engineroom.settings import Settings

WAIT_LIMIT = 10.0  # generous: the machine is noisy


@pytest.fixture
async def limiter(settings: Settings) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(settings)
    yield limiter
    await limiter.close()


async def use_header_principal(request: Request) -> None:
    """Stands in for the auth dependency: the principal is resolved before the limit."""
    subject = request.headers.get("x-user")
    if subject:
        remember_principal(request, Principal(subject=subject))


def build_app(settings: Settings, limiter: RateLimiter) -> FastAPI:
    app = FastAPI(default_response_class=ORJSONResponse)
    app.state.platform = SimpleNamespace(rate_limiter=limiter)
    install_error_handlers(app, ErrorRenderers())

    @app.get("/api/v1/limited", dependencies=[Depends(RateLimit("2/second", scope="limited"))])
    async def limited() -> dict[str, bool]:
        return {"ok": True}

    @app.get(
        "/api/v1/items/{name}",
        dependencies=[
            Depends(RateLimit("1/minute", scope="items", key=lambda r: r.path_params["name"]))
        ],
    )
    async def item(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get(
        "/api/v1/me",
        dependencies=[
            Depends(use_header_principal),
            Depends(RateLimit("1/minute", scope="me")),
        ],
    )
    async def me() -> dict[str, bool]:
        return {"ok": True}

    install_middleware(app, settings)
    return app


@pytest.fixture
async def client(settings: Settings, limiter: RateLimiter) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(settings, limiter))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


# ---- the dependency ------------------------------------------------------------------


async def test_allowed_responses_carry_the_ratelimit_headers(client: httpx.AsyncClient) -> None:
    first = await client.get("/api/v1/limited")
    second = await client.get("/api/v1/limited")
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["ratelimit-limit"] == "2"
    assert first.headers["ratelimit-remaining"] == "1"
    assert second.headers["ratelimit-remaining"] == "0"
    assert first.headers["ratelimit-policy"] == "2;w=1"
    assert int(first.headers["ratelimit-reset"]) in (0, 1)


async def test_past_the_limit_the_answer_is_a_429_problem_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(2):
        assert (await client.get("/api/v1/limited")).status_code == 200
    response = await client.get("/api/v1/limited")
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-limit"] == "2"
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-policy"] == "2;w=1"
    assert "ratelimit-reset" in response.headers
    # The other middleware still wraps the refusal.
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_window_moves_on(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        await client.get("/api/v1/limited")
    response = await client.get("/api/v1/limited")
    assert response.status_code == 429
    deadline = time.monotonic() + WAIT_LIMIT
    await asyncio.sleep(int(response.headers["retry-after"]))
    while response.status_code == 429 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        response = await client.get("/api/v1/limited")
    assert response.status_code == 200


async def test_separate_keys_do_not_share_a_limit(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/items/a")).status_code == 200
    assert (await client.get("/api/v1/items/a")).status_code == 429
    assert (await client.get("/api/v1/items/b")).status_code == 200


async def test_clients_are_limited_one_by_one(settings: Settings, limiter: RateLimiter) -> None:
    app = build_app(settings, limiter)
    statuses = []
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        transport = httpx.ASGITransport(app=app, client=(address, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            statuses.append((await client.get("/api/v1/me")).status_code)
    assert statuses == [200, 429, 200]


async def test_a_resolved_principal_is_limited_instead_of_the_address(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/api/v1/me", headers={"x-user": "alice"})).status_code == 200
    assert (await client.get("/api/v1/me", headers={"x-user": "alice"})).status_code == 429
    # Same address, another user; then the address itself, anonymously.
    assert (await client.get("/api/v1/me", headers={"x-user": "bob"})).status_code == 200
    assert (await client.get("/api/v1/me")).status_code == 200


@pytest.mark.parametrize("limit", ["bogus", "0/second", "5/fortnight", "1/second;5/minute", ""])
def test_a_bad_limit_fails_when_the_route_is_declared(limit: str) -> None:
    with pytest.raises(ValueError, match="limit"):
        RateLimit(limit, scope="login")


@pytest.mark.parametrize("scope", ["", "has space", "slash/ed", "x" * 65])
def test_a_bad_scope_fails_when_the_route_is_declared(scope: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        RateLimit("5/minute", scope=scope)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_an_unreachable_redis_fails_open_and_fails_readiness(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    limiter = RateLimiter(down)
    try:
        transport = httpx.ASGITransport(app=build_app(settings, limiter))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            responses = [await client.get("/api/v1/limited") for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert "ratelimit-limit" not in responses[0].headers
        with pytest.raises(ConnectionError):
            await limiter.ping()
    finally:
        await limiter.close()


# ---- the limiter ---------------------------------------------------------------------


async def test_hits_count_down_then_refuse(limiter: RateLimiter) -> None:
    results = [await limiter.hit("3/minute", "scope", "k") for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert all(r.limit == 3 for r in results)
    assert 0 < results[-1].reset_after <= 60
    assert results[-1].retry_after >= 1


async def test_keys_with_slashes_do_not_collide(limiter: RateLimiter) -> None:
    assert (await limiter.hit("1/minute", "a/b", "c")).allowed
    assert (await limiter.hit("1/minute", "a", "b/c")).allowed
    assert not (await limiter.hit("1/minute", "a", "b/c")).allowed


async def test_reset_forgets_the_hits(limiter: RateLimiter) -> None:
    await limiter.hit("1/minute", "login", "alice")
    assert not (await limiter.hit("1/minute", "login", "alice")).allowed
    await limiter.reset("1/minute", "login", "alice")
    assert (await limiter.hit("1/minute", "login", "alice")).allowed


async def test_peek_reports_without_counting(limiter: RateLimiter) -> None:
    fresh = await limiter.peek("2/minute", "login", "bob")
    assert fresh.allowed
    assert fresh.remaining == 2
    await limiter.hit("2/minute", "login", "bob")
    assert (await limiter.peek("2/minute", "login", "bob")).remaining == 1
    assert (await limiter.peek("2/minute", "login", "bob")).remaining == 1
    await limiter.hit("2/minute", "login", "bob")
    full = await limiter.peek("2/minute", "login", "bob")
    assert not full.allowed
    assert full.remaining == 0
    assert 0 < full.reset_after <= 60


async def test_the_memory_limiter_is_ready(limiter: RateLimiter) -> None:
    await limiter.ping()


def test_result_headers_round_up() -> None:
    result = RateLimitResult(allowed=False, limit=5, remaining=0, reset_after=0.2)
    assert result.retry_after == 1
    assert result.headers() == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "1",
    }
    assert RateLimitResult(True, 5, 4, 12.01).retry_after == 13


def request_from(host: str) -> Request:
    return Request({"type": "http", "headers": [], "client": (host, 1234), "state": {}})


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.9", "ip:203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::7", "ip:2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "ip:203.0.113.9"),
        ("not-an-ip", "ip:not-an-ip"),
    ],
)
def test_client_keys_group_ipv6_by_64(host: str, key: str) -> None:
    assert client_key(request_from(host)) == key


def test_the_principal_wins_over_the_address() -> None:
    request = request_from("203.0.113.9")
    remember_principal(request, Principal(subject="user-1"))
    assert client_key(request) == "user:user-1"
