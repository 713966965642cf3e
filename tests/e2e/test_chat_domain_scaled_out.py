"""The chat domain on two real ``engineroom serve`` processes sharing a PostgreSQL server
database and Redis (rate limits, cache and the chat transport), with the centrifuge-python
SDK: messages sent through either process reach the clients of both, a client that
dropped off one process recovers what it missed from the other, a read made through one
process reaches the reader's connection on the other, and so does the end of a kicked
member's subscription.

Two relays share the outbox here, so publications of different messages may reach the
channel in either order; the tests compare them by ``seq`` and require every client to
see the channel's one order.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from centrifuge import Client, StreamPosition

from tests.e2e.conftest import StartServer
from tests.support.chat import (
    new_client,
    new_subscription,
    next_item,
    nothing_more,
    settle,
    take,
)
from tests.support.chat_serve import (
    SERVER_ENV,
    ChatApi,
    ServedUser,
    migrate,
    room_events,
    ws_url,
)

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
async def chat_prefix(redis_url: str) -> AsyncIterator[str]:
    """The transport's Redis key prefix for this test; its keys are removed afterwards."""
    prefix = f"engineroom-test-{secrets.token_hex(4)}:chat:"
    yield prefix
    client = aioredis.from_url(redis_url)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await settle()


def by_seq(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(messages, key=lambda message: int(message["seq"]))


async def rpc_send(client: Client, room_id: str, body: str) -> dict[str, Any]:
    message: dict[str, Any] = (
        await client.rpc("chat.send", {"room_id": room_id, "body": body})
    ).data
    return message


async def test_two_processes_share_rooms_messages_and_recovery(
    start_server: StartServer,
    postgres_url: str,
    redis_url: str,
    chat_prefix: str,
    tmp_path: Path,
) -> None:
    env = {
        **SERVER_ENV,
        "ENGINEROOM_DATABASE_URL": postgres_url,
        "ENGINEROOM_REDIS_URL": redis_url,
        "ENGINEROOM_CHAT_REDIS_PREFIX": chat_prefix,
        # One root secret for both, as for any deployment of several processes: the
        # signing keys in the shared database are encrypted with it.
        "ENGINEROOM_SECRET_KEY": secrets.token_urlsafe(48),
    }
    migrate(tmp_path / "migrate", env)
    one = start_server(env=env)
    two = start_server(env=env)
    async with AsyncExitStack() as stack:
        http_one = await stack.enter_async_context(
            httpx.AsyncClient(base_url=one.base_url, timeout=30, trust_env=False)
        )
        http_two = await stack.enter_async_context(
            httpx.AsyncClient(base_url=two.base_url, timeout=30, trust_env=False)
        )
        via_one, via_two = ChatApi(one, http_one), ChatApi(two, http_two)
        alice = await via_one.user("alice")
        bob = await via_two.user("bob")
        room_id = await via_one.room(alice)
        await via_two.join(bob, room_id)
        await _both_processes_deliver(via_one, via_two, alice, bob, room_id)
        await _a_kick_on_one_process_ends_the_subscription_on_the_other(
            via_one, via_two, alice, room_id
        )


async def _both_processes_deliver(
    via_one: ChatApi, via_two: ChatApi, alice: ServedUser, bob: ServedUser, room_id: str
) -> None:
    channel = f"room:{room_id}"
    # Bob starts on process one, Alice on process two.
    bob_ws, _ = new_client(ws_url(via_one.server), bob.token)
    alice_ws, _ = new_client(ws_url(via_two.server), alice.token)
    await bob_ws.connect()
    await alice_ws.connect()
    bob_sub, bob_events = new_subscription(bob_ws, channel, recoverable=True, positioned=True)
    alice_sub, alice_events = new_subscription(alice_ws, channel)
    await bob_sub.subscribe()
    await alice_sub.subscribe()
    await next_item(bob_events.subscribed)
    await next_item(alice_events.subscribed)
    presence = await alice_sub.presence()
    assert sorted(info.user for info in presence.clients.values()) == sorted([alice.id, bob.id])

    sent = [
        await via_one.send(alice, room_id, "REST on one"),
        await via_two.send(alice, room_id, "REST on two"),
        await rpc_send(bob_ws, room_id, "RPC on one"),
        await rpc_send(alice_ws, room_id, "RPC on two"),
    ]
    assert [message["seq"] for message in sent] == [1, 2, 3, 4]
    seen_by_bob = await room_events(bob_events.publications, 4)
    seen_by_alice = await room_events(alice_events.publications, 4)
    assert seen_by_bob == seen_by_alice
    assert by_seq([event["message"] for event in seen_by_bob]) == sent
    newest_first = [message["id"] for message in reversed(sent)]
    assert await via_one.history_ids(bob, room_id) == newest_first
    assert await via_two.history_ids(bob, room_id) == newest_first

    # Bob drops off process one at the channel's current position...
    top = await bob_sub.history(limit=0)
    await bob_ws.disconnect()
    missed_messages = [
        await via_one.send(alice, room_id, "missed, REST on one"),
        await via_two.send(alice, room_id, "missed, REST on two"),
        await rpc_send(alice_ws, room_id, "missed, RPC on two"),
    ]
    missed = await room_events(alice_events.publications, 3)
    assert by_seq([event["message"] for event in missed]) == missed_messages

    # ... and comes back through process two, which replays exactly the gap.
    async def saved(_channel: str) -> StreamPosition:
        return StreamPosition(offset=top.offset, epoch=top.epoch)

    returning, _ = new_client(ws_url(via_two.server), bob.token)
    await returning.connect()
    resumed, resumed_events = new_subscription(returning, channel, get_state=saved)
    await resumed.subscribe()
    recovered = await next_item(resumed_events.subscribed)
    assert recovered.was_recovering
    assert recovered.recovered
    assert await take(resumed_events.publications, 3) == missed
    await nothing_more(resumed_events.publications)

    live = await via_one.send(alice, room_id, "live again, REST on one")
    [to_bob] = await room_events(resumed_events.publications, 1)
    [to_alice] = await room_events(alice_events.publications, 1)
    assert to_bob == to_alice
    assert to_bob["message"] == live

    # Bob's read through process one reaches his connection on process two; his
    # counts are the same through either process.
    own, own_events = new_subscription(returning, f"#{bob.id}")
    await own.subscribe()
    await next_item(own_events.subscribed)
    state = await via_two.unread(bob, room_id)
    assert (state["unread"], state["last_seq"]) == (7, live["seq"])  # all but his own
    assert await via_one.unread(bob, room_id) == state
    marked = await via_one.mark_read(bob, room_id, live["id"])
    assert (marked["unread"], marked["last_read_seq"]) == (0, live["seq"])
    [told] = await room_events(own_events.publications, 1)
    assert told["type"] == "read.updated"
    assert (told["unread"], told["last_read_seq"]) == (0, live["seq"])
    assert (await via_two.unread(bob, room_id))["unread"] == 0
    await alice_ws.disconnect()
    await returning.disconnect()


async def _a_kick_on_one_process_ends_the_subscription_on_the_other(
    via_one: ChatApi, via_two: ChatApi, owner: ServedUser, room_id: str
) -> None:
    carol = await via_two.user("carol")
    await via_two.join(carol, room_id)
    carol_ws, carol_client_events = new_client(ws_url(via_one.server), carol.token)
    await carol_ws.connect()
    sub, events = new_subscription(carol_ws, f"room:{room_id}")
    await sub.subscribe()
    await next_item(events.subscribed)

    kicked = await via_two.http.delete(
        f"/api/v1/chat/rooms/{room_id}/members/{carol.id}", headers=owner.auth
    )
    assert kicked.status_code == 204, kicked.text
    assert (await next_item(events.unsubscribed)).code == 2000
    assert carol_client_events.disconnected.empty()
    members = await via_one.get(owner, f"/rooms/{room_id}/members")
    assert carol.id not in [member["user_id"] for member in members["members"]]
    await carol_ws.disconnect()
