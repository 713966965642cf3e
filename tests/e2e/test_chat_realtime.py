"""The chat transport against real ``engineroom serve`` processes, with the real
centrifuge-python SDK: one embedded process, then two processes sharing the real Redis.
Tokens come from the served identity API (register, then log in)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from centrifuge import ClientState, ConnectingContext, StreamPosition

from tests.e2e.conftest import StartServer
from tests.support.chat import (
    new_client,
    new_subscription,
    next_item,
    nothing_more,
    settle,
    take,
)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(autouse=True)
async def _settle_clients() -> AsyncIterator[None]:
    yield
    await settle()


PASSWORD = "correct horse battery staple"


def ws_url(server: ServerProcess) -> str:
    return server.base_url.replace("http://", "ws://") + "/connection/websocket"


def user_token(server: ServerProcess, username: str) -> tuple[str, str]:
    """Register through the served API and log in: (user id, access token)."""
    with server.client() as http:
        registered = http.post(
            "/api/v1/identity/users",
            json={"email": f"{username}@example.com", "username": username, "password": PASSWORD},
        )
        assert registered.status_code == 201, registered.text
        login = http.post(
            "/api/v1/identity/token",
            json={"email": f"{username}@example.com", "password": PASSWORD},
        )
        assert login.status_code == 200, login.text
        return registered.json()["id"], login.json()["access_token"]


async def test_embedded_server_end_to_end(start_server: StartServer) -> None:
    server = start_server()
    alice_id, alice_token = user_token(server, "alice")
    _, bob_token = user_token(server, "bob")
    alice, _ = new_client(ws_url(server), alice_token)
    bob, _ = new_client(ws_url(server), bob_token)
    await alice.connect()
    await bob.connect()
    alice_sub, alice_events = new_subscription(alice, "public:e2e")
    bob_sub, bob_events = new_subscription(bob, "public:e2e")
    await alice_sub.subscribe()
    await bob_sub.subscribe()
    await next_item(alice_events.subscribed)
    await next_item(bob_events.subscribed)

    await alice_sub.publish({"n": 1})
    assert await take(bob_events.publications, 1) == [{"n": 1}]
    presence = await bob_sub.presence()
    assert len(presence.clients) == 2
    history = await bob_sub.history(limit=10)
    assert [p.data for p in history.publications] == [{"n": 1}]

    await bob.disconnect()
    for number in (2, 3, 4):
        await alice_sub.publish({"n": number})
    await bob.connect()
    resubscribed = await next_item(bob_events.subscribed)
    assert resubscribed.recovered
    assert await take(bob_events.publications, 3) == [{"n": 2}, {"n": 3}, {"n": 4}]
    await nothing_more(bob_events.publications)

    forbidden, forbidden_events = new_subscription(alice, f"#{alice_id}x")
    await forbidden.subscribe()
    assert (await next_item(forbidden_events.unsubscribed)).code == 103

    intruder, intruder_events = new_client(ws_url(server), alice_token + "x")
    await intruder.connect()
    assert (await next_item(intruder_events.disconnected)).code == 3500
    await alice.disconnect()
    await bob.disconnect()


async def test_two_processes_share_redis(
    start_server: StartServer, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"engineroom-test-{secrets.token_hex(4)}:chat:"
    # Only the transport uses the shared Redis: the platform's rate limits stay per process,
    # so other suites logging in from this address at the same time cannot exhaust them.
    env = {"ENGINEROOM_CHAT_REDIS_URL": redis_url, "ENGINEROOM_CHAT_REDIS_PREFIX": prefix}
    data_dir = tmp_path / "shared-data"
    one = start_server(env=env, data_dir=data_dir)
    two = start_server(env=env, data_dir=data_dir)
    try:
        await _messages_cross_and_recover(one, two)
        await _rolling_restart_tells_clients_to_reconnect(two, one)
    finally:
        client = aioredis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _messages_cross_and_recover(one: ServerProcess, two: ServerProcess) -> None:
    _, alice_token = user_token(one, "alice")
    _, bob_token = user_token(two, "bob")
    alice, _ = new_client(ws_url(one), alice_token)
    bob, _ = new_client(ws_url(two), bob_token)
    await alice.connect()
    await bob.connect()
    alice_sub, alice_events = new_subscription(alice, "public:cluster")
    bob_sub, bob_events = new_subscription(bob, "public:cluster")
    await alice_sub.subscribe()
    await bob_sub.subscribe()
    await next_item(alice_events.subscribed)
    await next_item(bob_events.subscribed)
    await alice_sub.publish("one -> two")
    await bob_sub.publish("two -> one")
    for events in (alice_events, bob_events):
        assert await take(events.publications, 2) == ["one -> two", "two -> one"]

    top = await bob_sub.history(limit=0)
    await bob.disconnect()
    for number in (1, 2, 3):
        await alice_sub.publish(number)

    async def saved(channel: str) -> StreamPosition:
        return StreamPosition(offset=top.offset, epoch=top.epoch)

    # Bob comes back through the other process and recovers exactly what he missed.
    returning, _ = new_client(ws_url(one), bob_token)
    await returning.connect()
    resumed, resumed_events = new_subscription(returning, "public:cluster", get_state=saved)
    await resumed.subscribe()
    assert (await next_item(resumed_events.subscribed)).recovered
    assert await take(resumed_events.publications, 3) == [1, 2, 3]
    await nothing_more(resumed_events.publications)
    for client in (alice, returning):
        await client.disconnect()


async def _rolling_restart_tells_clients_to_reconnect(
    stopping: ServerProcess, staying: ServerProcess
) -> None:
    _, token = user_token(staying, "carol")
    # A long first retry delay: the test ends before the client tries the stopped server.
    client, events = new_client(
        ws_url(stopping), token, min_reconnect_delay=5, max_reconnect_delay=60
    )
    codes: asyncio.Queue[int] = asyncio.Queue()

    async def on_connecting(ctx: ConnectingContext) -> None:
        if ctx.code:
            await codes.put(ctx.code)

    events.on_connecting = on_connecting  # type: ignore[method-assign]
    await client.connect()
    await next_item(events.connected)
    await asyncio.to_thread(stopping.stop)
    assert stopping.exit_code == 0
    assert await next_item(codes) == 3001
    assert client.state == ClientState.CONNECTING
    await client.disconnect()
    async with httpx.AsyncClient(base_url=staying.base_url) as http:
        assert (await http.get("/healthz")).status_code == 200
