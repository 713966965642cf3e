"""The NATS broker (JetStream for history and presence): two hubs sharing the real NATS
server under a random prefix."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import nats
import pytest
from centrifuge import StreamPosition

from engineroom.chat.realtime.broker import StreamPosition as Position
from engineroom.chat.realtime.broker import UnrecoverablePositionError
from engineroom.chat.realtime.broker_nats import NatsBroker
from engineroom.chat.realtime.channels import NamespaceOptions
from engineroom.chat.realtime.protocol import Disconnect
from engineroom.settings import Settings
from tests.support import services
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

pytestmark = pytest.mark.nats


@pytest.fixture
async def nats_prefix() -> AsyncIterator[str]:
    """A random prefix on the real NATS server; its streams are deleted afterwards."""
    if not services.port_open("127.0.0.1", 4222):
        services.unavailable("NATS", services.NATS_URL)
    prefix = f"engineroom-test-{secrets.token_hex(4)}:chat:"
    yield prefix
    client = await nats.connect(services.NATS_URL)
    stream_prefix = prefix.strip(":").replace(":", "_")
    jsm = client.jsm()
    for name in await jsm.streams_info():
        if name.config.name and name.config.name.startswith(stream_prefix):
            await jsm.delete_stream(name.config.name)
    await client.close()


@asynccontextmanager
async def two_servers(
    settings: Settings, prefix: str
) -> AsyncIterator[tuple[ChatServer, ChatServer]]:
    config = chat_settings(broker="nats", nats_url=services.NATS_URL, redis_prefix=prefix)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(chat_server(settings, config))
        second = await stack.enter_async_context(chat_server(settings, config))
        yield first, second


async def test_messages_presence_and_recovery_across_processes(
    settings: Settings, nats_prefix: str
) -> None:
    async with two_servers(settings, nats_prefix) as (one, two):
        alice_id, alice_token = await one.token(username="alice")
        bob_id, bob_token = await two.token(username="bob")
        alice, _ = new_client(one.ws_url, alice_token)
        bob, _ = new_client(two.ws_url, bob_token)
        await alice.connect()
        await bob.connect()
        alice_sub, alice_events = new_subscription(alice, "public:n")
        bob_sub, bob_events = new_subscription(bob, "public:n")
        await alice_sub.subscribe()
        await next_item(alice_events.subscribed)
        await bob_sub.subscribe()
        await next_item(bob_events.subscribed)
        await alice_sub.publish("from one")
        await bob_sub.publish("from two")
        for events in (alice_events, bob_events):
            assert await take(events.publications, 2) == ["from one", "from two"]
        presence = await alice_sub.presence()
        assert {info.user for info in presence.clients.values()} == {alice_id, bob_id}

        top = await bob_sub.history(limit=0)
        await bob.disconnect()
        for number in (1, 2, 3):
            await one.runtime.hub.publish("public:n", number)

        async def saved(channel: str) -> StreamPosition:
            return StreamPosition(offset=top.offset, epoch=top.epoch)

        returning, returning_events = new_client(one.ws_url, bob_token)
        await returning.connect()
        resumed, resumed_events = new_subscription(returning, "public:n", get_state=saved)
        await resumed.subscribe()
        assert (await next_item(resumed_events.subscribed)).recovered
        assert await take(resumed_events.publications, 3) == [1, 2, 3]
        await nothing_more(resumed_events.publications)

        # Bob's connection on process one is closed by a command sent from process two.
        await two.runtime.hub.disconnect_user(bob_id, Disconnect(4500, "bye"))
        assert (await next_item(returning_events.disconnected)).code == 4500
        await alice.disconnect()
        for _ in range(100):
            if not await two.runtime.hub.presence("public:n"):
                break
            await asyncio.sleep(0.05)
        assert await two.runtime.hub.presence("public:n") == {}


async def test_history_offsets_are_unique_under_concurrent_publishers(nats_prefix: str) -> None:
    first = NatsBroker(services.NATS_URL, prefix=nats_prefix)
    second = NatsBroker(services.NATS_URL, prefix=nats_prefix)
    options = NamespaceOptions(history_size=50, history_ttl=60)

    class Ignore:
        def handle_publication(self, *args: object) -> None: ...
        def handle_join_leave(self, *args: object) -> None: ...
        def handle_control(self, *args: object) -> None: ...
        def handle_reset(self) -> None: ...

    await first.start(Ignore())
    await second.start(Ignore())
    try:
        positions = await asyncio.gather(
            *(
                broker.publish("room:x", b'"data":%d' % number, options)
                for number in range(20)
                for broker in (first, second)
            )
        )
        assert sorted(p.offset for p in positions) == list(range(1, 41))
        assert len({p.epoch for p in positions}) == 1
        page = await first.history("room:x", options, limit=-1)
        assert [p.offset for p in page.publications] == list(range(1, 41))
        assert page.position == Position(40, positions[0].epoch)
        gap = await second.history("room:x", options, since=Position(37, page.position.epoch))
        assert [p.offset for p in gap.publications] == []  # limit 0: the position only
        gap = await second.history(
            "room:x", options, since=Position(37, page.position.epoch), limit=-1
        )
        assert [p.offset for p in gap.publications] == [38, 39, 40]
        with pytest.raises(UnrecoverablePositionError):
            await second.history("room:x", options, since=Position(3, "other"), limit=-1)
    finally:
        await first.close()
        await second.close()
