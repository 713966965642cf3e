"""Two hubs sharing the real Redis (a random key prefix): fan-out, recovery from either,
presence, control commands, and what happens when the pub/sub connection drops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import redis.asyncio as aioredis
from centrifuge import StreamPosition

from engineroom.chat.realtime.broker import UnrecoverablePositionError
from engineroom.chat.realtime.broker_redis import RedisBroker
from engineroom.chat.realtime.channels import NamespaceOptions
from engineroom.settings import Settings
from tests.support.chat import (
    ChatServer,
    chat_server,
    chat_settings,
    new_client,
    new_subscription,
    next_item,
    nothing_more,
    take,
)

pytestmark = pytest.mark.redis


@asynccontextmanager
async def two_servers(
    settings: Settings, redis_url: str, prefix: str, **chat: object
) -> AsyncIterator[tuple[ChatServer, ChatServer]]:
    config = chat_settings(broker="redis", redis_url=redis_url, redis_prefix=prefix, **chat)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(chat_server(settings, config))
        second = await stack.enter_async_context(chat_server(settings, config))
        try:
            yield first, second
        finally:
            client = aioredis.from_url(redis_url)
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def test_messages_cross_between_processes(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    async with two_servers(settings, redis_url, redis_prefix) as (one, two):
        alice_id, alice_token = await one.token(username="alice")
        bob_id, bob_token = await two.token(username="bob")
        alice, _ = new_client(one.ws_url, alice_token)
        bob, _ = new_client(two.ws_url, bob_token)
        await alice.connect()
        await bob.connect()
        alice_sub, alice_events = new_subscription(alice, "public:x", join_leave=True)
        bob_sub, bob_events = new_subscription(bob, "public:x")
        await alice_sub.subscribe()
        await next_item(alice_events.subscribed)
        await bob_sub.subscribe()
        await next_item(bob_events.subscribed)
        joins = {(await next_item(alice_events.joins)).info.user for _ in range(2)}
        assert joins == {alice_id, bob_id}

        await alice_sub.publish("from one")
        await bob_sub.publish("from two")
        for events in (alice_events, bob_events):
            assert await take(events.publications, 2) == ["from one", "from two"]
        presence = await bob_sub.presence()
        assert {info.user for info in presence.clients.values()} == {alice_id, bob_id}
        await bob.disconnect()
        assert (await next_item(alice_events.leaves)).info.user == bob_id
        await alice.disconnect()


async def test_recovery_works_from_either_process(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    async with two_servers(settings, redis_url, redis_prefix) as (one, two):
        _, token = await one.token()
        reader, _ = new_client(one.ws_url, token)
        await reader.connect()
        sub, events = new_subscription(reader, "public:log")
        await sub.subscribe()
        await next_item(events.subscribed)
        await one.runtime.hub.publish("public:log", 1)
        assert await take(events.publications, 1) == [1]
        top = await sub.history(limit=0)
        await reader.disconnect()

        for number in (2, 3, 4):
            await two.runtime.hub.publish("public:log", number)

        async def saved_position(channel: str) -> StreamPosition:
            return StreamPosition(offset=top.offset, epoch=top.epoch)

        # The same user comes back through the other process with its saved position.
        again, _ = new_client(two.ws_url, token)
        await again.connect()
        resumed, resumed_events = new_subscription(again, "public:log", get_state=saved_position)
        await resumed.subscribe()
        subscribed = await next_item(resumed_events.subscribed)
        assert subscribed.was_recovering
        assert subscribed.recovered
        assert await take(resumed_events.publications, 3) == [2, 3, 4]
        await one.runtime.hub.publish("public:log", 5)
        assert await take(resumed_events.publications, 1) == [5]
        await nothing_more(resumed_events.publications)
        await again.disconnect()


async def test_disconnect_reaches_the_users_connections_everywhere(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    async with two_servers(settings, redis_url, redis_prefix) as (one, two):
        user_id, token = await one.token()
        client, events = new_client(one.ws_url, token)
        await client.connect()
        await next_item(events.connected)
        from engineroom.chat.realtime.protocol import Disconnect

        await two.runtime.hub.disconnect_user(user_id, Disconnect(4500, "bye"))
        disconnected = await next_item(events.disconnected)
        assert (disconnected.code, disconnected.reason) == (4500, "bye")


async def test_lost_pubsub_connection_is_recovered_by_resubscribing(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    async with two_servers(settings, redis_url, redis_prefix) as (one, two):
        _, token = await one.token()
        client, _ = new_client(one.ws_url, token)
        await client.connect()
        sub, events = new_subscription(client, "public:fragile")
        await sub.subscribe()
        await next_item(events.subscribed)
        await two.runtime.hub.publish("public:fragile", "before")
        assert await take(events.publications, 1) == ["before"]

        admin = aioredis.from_url(redis_url)
        listing = await admin.client_list()
        ours = [c["id"] for c in listing if c.get("name") == f"{redis_prefix}pubsub"]
        assert len(ours) == 2
        # Kill process one's subscriber connection and publish while it is down.
        await admin.client_kill_filter(_id=ours[0])
        await admin.client_kill_filter(_id=ours[1])
        await two.runtime.hub.publish("public:fragile", "during")
        await admin.aclose()

        # The hub asks its subscribers to resubscribe; they recover what they missed.
        unsubscribed_or_resubscribed = await next_item(events.subscribed)
        assert unsubscribed_or_resubscribed.recovered
        await asyncio.sleep(0.2)
        await two.runtime.hub.publish("public:fragile", "after")
        assert await take(events.publications, 2) == ["during", "after"]
        await client.disconnect()


async def test_history_is_bounded_by_size_and_ttl(redis_url: str, redis_prefix: str) -> None:
    broker = RedisBroker(redis_url, prefix=redis_prefix)
    options = NamespaceOptions(history_size=3, history_ttl=1.0)
    try:
        empty = await broker.history("public:h", options, limit=-1)
        assert empty.position.offset == 0
        assert empty.position.epoch
        for number in range(1, 6):
            await broker.publish("public:h", b'"data":%d' % number, options)
        page = await broker.history("public:h", options, limit=-1)
        assert [p.offset for p in page.publications] == [3, 4, 5]
        assert (page.position.offset, page.position.epoch) == (5, empty.position.epoch)
        recovered = await broker.history("public:h", options, since=page.position, limit=-1)
        assert recovered.publications == []
        with pytest.raises(UnrecoverablePositionError):
            await broker.history(
                "public:h", options, since=type(page.position)(1, page.position.epoch), limit=-1
            )
        await asyncio.sleep(1.2)
        expired = await broker.history("public:h", options, limit=-1)
        assert expired.publications == []
        assert expired.position == page.position
        with pytest.raises(UnrecoverablePositionError):
            await broker.history(
                "public:h", options, since=type(page.position)(4, page.position.epoch), limit=-1
            )
    finally:
        client = aioredis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await broker.close()


async def test_presence_of_a_vanished_process_expires(redis_url: str, redis_prefix: str) -> None:
    broker = RedisBroker(redis_url, prefix=redis_prefix)
    try:
        await broker.add_presence("public:p", "c1", b'{"user":"u1","client":"c1"}', ttl=1)
        await broker.add_presence("public:p", "c2", b'{"user":"u2","client":"c2"}', ttl=30)
        assert set(await broker.presence("public:p")) == {"c1", "c2"}
        await asyncio.sleep(2.1)
        assert set(await broker.presence("public:p")) == {"c2"}
        await broker.remove_presence("public:p", "c2")
        assert await broker.presence("public:p") == {}
    finally:
        await broker.close()
