"""Room channels with the real centrifuge-python client: who may subscribe, live room
events, and subscriptions ending when a member leaves, is kicked or banned."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from engineroom.settings import Settings
from tests.support.chat import (
    ChatServer,
    SubEvents,
    chat_server,
    chat_settings,
    new_client,
    new_subscription,
    next_item,
)
from tests.support.chat_domain import API, rooms_database_fixture, settings_for  # noqa: F401
from tests.support.identity import PASSWORD

SERVER_UNSUBSCRIBE = 2000
PERMISSION_DENIED = 103


@dataclass(frozen=True)
class Person:
    id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def signup(http: httpx.AsyncClient, name: str) -> Person:
    email = f"{name}@example.com"
    registered = await http.post(
        "/api/v1/identity/users", json={"email": email, "username": name, "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text
    signed_in = await http.post(
        "/api/v1/identity/token", json={"email": email, "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    return Person(registered.json()["id"], signed_in.json()["access_token"])


async def create_room(http: httpx.AsyncClient, owner: Person, kind: str) -> str:
    response = await http.post(
        f"{API}/rooms", json={"name": kind, "kind": kind}, headers=owner.auth
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def deliver(server: ChatServer) -> None:
    while await server.platform.relay.run_once():
        pass


@asynccontextmanager
async def subscribed(server: ChatServer, person: Person, channel: str) -> AsyncIterator[SubEvents]:
    """A connected client subscribed to ``channel`` (whatever the answer)."""
    client, _ = new_client(server.ws_url, person.token)
    await client.connect()
    subscription, events = new_subscription(client, channel)
    await subscription.subscribe()
    try:
        yield events
    finally:
        await client.disconnect()


async def refused(server: ChatServer, person: Person, channel: str) -> int:
    """The code a subscription to ``channel`` ends with (expecting a refusal)."""
    async with subscribed(server, person, channel) as events:
        return (await next_item(events.unsubscribed)).code


async def next_data(events: SubEvents, kind: str) -> dict[str, Any]:
    """The next publication of type ``kind`` (skipping others)."""
    while True:
        data: dict[str, Any] = (await next_item(events.publications)).pub.data
        if data["type"] == kind:
            return data


@pytest.fixture
def server_settings(chat_database: tuple[str, str], tmp_path: Path) -> Settings:
    return settings_for(chat_database[1], tmp_path)


async def test_who_may_subscribe_to_a_room_channel(server_settings: Settings) -> None:
    async with (
        chat_server(server_settings) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        alice, bob = await signup(http, "alice"), await signup(http, "bob")
        private = await create_room(http, alice, "private")
        public = await create_room(http, alice, "public")
        invite_only = await create_room(http, alice, "invite_only")

        async with subscribed(server, alice, f"room:{private}") as owner_events:
            await next_item(owner_events.subscribed)
            assert await refused(server, bob, f"room:{private}") == PERMISSION_DENIED
            assert await refused(server, bob, f"room:{invite_only}") == PERMISSION_DENIED
            for malformed in (
                "room:not-a-room",
                f"room:{private.upper()}",
                f"room:{private}#{bob.id}",
                f"room:{uuid.uuid4()}",
            ):
                assert await refused(server, alice, malformed) == PERMISSION_DENIED, malformed
            async with subscribed(server, bob, f"room:{public}") as reader:
                await next_item(reader.subscribed)  # public rooms: readable by anyone

            # Invited and joined, bob may subscribe; alice sees him join, live.
            invited = await http.post(
                f"{API}/rooms/{private}/invites", json={"user_id": bob.id}, headers=alice.auth
            )
            assert invited.status_code == 201
            joined = await http.post(f"{API}/rooms/{private}/join", headers=bob.auth)
            assert joined.status_code == 201
            async with subscribed(server, bob, f"room:{private}") as member_events:
                await next_item(member_events.subscribed)
                await deliver(server)
                seen = await next_data(owner_events, "member.joined")
                assert seen["member"]["user_id"] == bob.id
                assert seen["room_id"] == private
                assert seen["member_count"] == 2
                assert (await next_data(member_events, "member.joined"))["event_id"] == seen[
                    "event_id"
                ]


async def test_kicked_member_loses_the_subscription_on_every_device(
    server_settings: Settings,
) -> None:
    async with (
        chat_server(server_settings) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        alice, bob = await signup(http, "alice"), await signup(http, "bob")
        room = await create_room(http, alice, "private")
        await http.post(f"{API}/rooms/{room}/invites", json={"user_id": bob.id}, headers=alice.auth)
        await http.post(f"{API}/rooms/{room}/join", headers=bob.auth)
        await deliver(server)
        channel = f"room:{room}"
        async with (
            subscribed(server, alice, channel) as owner,
            subscribed(server, bob, channel) as phone,
            subscribed(server, bob, channel) as laptop,
            subscribed(server, bob, f"#{bob.id}") as personal,
        ):
            for events in (owner, phone, laptop, personal):
                await next_item(events.subscribed)
            kicked = await http.delete(f"{API}/rooms/{room}/members/{bob.id}", headers=alice.auth)
            assert kicked.status_code == 204
            await deliver(server)

            for device in (phone, laptop):
                assert (await next_item(device.unsubscribed)).code == SERVER_UNSUBSCRIBE
            told = await next_data(personal, "member.kicked")
            assert (told["user_id"], told["by"]) == (bob.id, alice.id)
            assert (await next_data(owner, "member.kicked"))["user_id"] == bob.id
            assert server.runtime.hub.subscriber_count(channel) == 1
            assert await refused(server, bob, channel) == PERMISSION_DENIED


async def test_leaving_and_bans_end_subscriptions_to_public_rooms(
    server_settings: Settings,
) -> None:
    async with (
        chat_server(server_settings) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        alice, bob, carol = [await signup(http, name) for name in ("alice", "bob", "carol")]
        room = await create_room(http, alice, "public")
        channel = f"room:{room}"
        for person in (bob, carol):
            assert (
                await http.post(f"{API}/rooms/{room}/join", headers=person.auth)
            ).status_code == 201
        async with (
            subscribed(server, bob, channel) as leaving,
            subscribed(server, carol, channel) as banned,
        ):
            await next_item(leaving.subscribed)
            await next_item(banned.subscribed)
            assert (
                await http.post(f"{API}/rooms/{room}/leave", headers=bob.auth)
            ).status_code == 204
            await deliver(server)
            assert (await next_item(leaving.unsubscribed)).code == SERVER_UNSUBSCRIBE

            ban = await http.put(f"{API}/rooms/{room}/bans/{carol.id}", json={}, headers=alice.auth)
            assert ban.status_code == 200
            await deliver(server)
            assert (await next_item(banned.unsubscribed)).code == SERVER_UNSUBSCRIBE
        # Bob may read the public room again as a non-member; carol, banned, may not.
        async with subscribed(server, bob, channel) as again:
            await next_item(again.subscribed)
        assert await refused(server, carol, channel) == PERMISSION_DENIED


@pytest.mark.redis
async def test_kick_ends_a_subscription_held_on_another_process(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    config = chat_settings(broker="redis", redis_url=redis_url, redis_prefix=redis_prefix)
    async with AsyncExitStack() as stack:
        holder = await stack.enter_async_context(chat_server(settings, config))
        acting = await stack.enter_async_context(chat_server(settings, config))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=acting.base_url))
        try:
            alice, bob = await signup(http, "alice"), await signup(http, "bob")
            room = await create_room(http, alice, "invite_only")
            await http.post(
                f"{API}/rooms/{room}/invites", json={"user_id": bob.id}, headers=alice.auth
            )
            await http.post(f"{API}/rooms/{room}/join", headers=bob.auth)
            async with subscribed(holder, bob, f"room:{room}") as elsewhere:
                await next_item(elsewhere.subscribed)
                kicked = await http.delete(
                    f"{API}/rooms/{room}/members/{bob.id}", headers=alice.auth
                )
                assert kicked.status_code == 204
                # Only the acting process relays: the unsubscribe crosses through Redis.
                await deliver(acting)
                assert (await next_item(elsewhere.unsubscribed)).code == SERVER_UNSUBSCRIBE
        finally:
            client = aioredis.from_url(redis_url)
            keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
