"""The transport with the real centrifuge-python SDK, in process (embedded broker)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from centrifuge import ClientState, ConnectingContext, ReplyError, StreamPosition

from engineroom.settings import Settings
from tests.support.chat import (
    Events,
    chat_server,
    chat_settings,
    new_client,
    new_subscription,
    next_item,
    nothing_more,
    take,
)


async def test_publish_reaches_every_subscriber_with_publisher_info(settings: Settings) -> None:
    async with chat_server(settings) as server:
        alice_id, alice_token = await server.token(username="alice")
        _, bob_token = await server.token(username="bob")
        alice, _ = new_client(server.ws_url, alice_token)
        bob, _ = new_client(server.ws_url, bob_token)
        await alice.connect()
        await bob.connect()
        alice_sub, alice_events = new_subscription(alice, "public:lobby")
        bob_sub, bob_events = new_subscription(bob, "public:lobby")
        await alice_sub.subscribe()
        await bob_sub.subscribe()
        subscribed = await next_item(bob_events.subscribed)
        assert subscribed.recoverable
        assert subscribed.stream_position is not None

        await alice_sub.publish({"text": "hello"})

        for events in (alice_events, bob_events):
            received = await next_item(events.publications)
            assert received.pub.data == {"text": "hello"}
            assert received.pub.offset == subscribed.stream_position.offset + 1
            assert received.pub.info is not None
            assert received.pub.info.user == alice_id
            assert received.pub.info.conn_info == {"username": "alice"}
        await alice.disconnect()
        await bob.disconnect()


async def test_presence_stats_and_join_leave(settings: Settings) -> None:
    async with chat_server(settings) as server:
        alice_id, alice_token = await server.token(username="alice")
        bob_id, bob_token = await server.token(username="bob")
        alice, _ = new_client(server.ws_url, alice_token)
        bob, _ = new_client(server.ws_url, bob_token)
        second_bob, _ = new_client(server.ws_url, bob_token)
        for client in (alice, bob, second_bob):
            await client.connect()
        watcher, watched = new_subscription(alice, "public:room-1", join_leave=True)
        await watcher.subscribe()
        await next_item(watched.subscribed)
        bob_sub, _ = new_subscription(bob, "public:room-1")
        await bob_sub.subscribe()
        other_sub, _ = new_subscription(second_bob, "public:room-1")
        await other_sub.subscribe()

        own = await next_item(watched.joins)
        assert own.info.user == alice_id
        join = await next_item(watched.joins)
        assert join.info.user == bob_id
        presence = await watcher.presence()
        assert {info.user for info in presence.clients.values()} == {alice_id, bob_id}
        assert len(presence.clients) == 3
        stats = await watcher.presence_stats()
        assert (stats.num_clients, stats.num_users) == (3, 2)

        await bob.disconnect()
        leave = await next_item(watched.leaves)
        assert leave.info.user == bob_id
        stats = await watcher.presence_stats()
        assert (stats.num_clients, stats.num_users) == (2, 2)
        for client in (alice, second_bob):
            await client.disconnect()


async def test_history_limit_reverse_and_since(settings: Settings) -> None:
    async with chat_server(settings) as server:
        _, token = await server.token()
        client, _ = new_client(server.ws_url, token)
        await client.connect()
        sub, events = new_subscription(client, "public:news")
        await sub.subscribe()
        for number in range(1, 6):
            await sub.publish({"n": number})
        await take(events.publications, 5)

        everything = await sub.history(limit=-1)
        assert [p.data["n"] for p in everything.publications] == [1, 2, 3, 4, 5]
        newest = await sub.history(limit=2, reverse=True)
        assert [p.data["n"] for p in newest.publications] == [5, 4]
        after = everything.publications[1]
        since = await sub.history(limit=10, since=StreamPosition(after.offset, everything.epoch))
        assert [p.data["n"] for p in since.publications] == [3, 4, 5]
        position_only = await sub.history(limit=0)
        assert position_only.publications == []
        assert (position_only.offset, position_only.epoch) == (
            everything.offset,
            everything.epoch,
        )
        with pytest.raises(ReplyError) as refused:
            await sub.history(limit=10, since=StreamPosition(1, "other"))
        assert refused.value.code == 112
        await client.disconnect()


async def test_reconnect_recovers_exactly_the_missed_publications(settings: Settings) -> None:
    async with chat_server(settings) as server:
        _, reader_token = await server.token(username="reader")
        _, writer_token = await server.token(username="writer")
        reader, _ = new_client(server.ws_url, reader_token)
        writer, _ = new_client(server.ws_url, writer_token)
        await reader.connect()
        await writer.connect()
        reader_sub, events = new_subscription(reader, "public:feed")
        writer_sub, _ = new_subscription(writer, "public:feed")
        await reader_sub.subscribe()
        await writer_sub.subscribe()
        await writer_sub.publish({"n": 1})
        assert await take(events.publications, 1) == [{"n": 1}]
        await next_item(events.subscribed)

        await reader.disconnect()
        for number in (2, 3, 4):
            await writer_sub.publish({"n": number})
        await reader.connect()

        resubscribed = await next_item(events.subscribed)
        assert resubscribed.was_recovering
        assert resubscribed.recovered
        assert await take(events.publications, 3) == [{"n": 2}, {"n": 3}, {"n": 4}]
        await writer_sub.publish({"n": 5})
        assert await take(events.publications, 1) == [{"n": 5}]
        await nothing_more(events.publications)
        await reader.disconnect()
        await writer.disconnect()


async def test_a_gap_larger_than_the_history_is_not_replayed_at_all(settings: Settings) -> None:
    chat = chat_settings(public_history_size=3)
    async with chat_server(settings, chat) as server:
        _, token = await server.token()
        reader, _ = new_client(server.ws_url, token)
        await reader.connect()
        sub, events = new_subscription(reader, "public:busy")
        await sub.subscribe()
        await next_item(events.subscribed)
        await reader.disconnect()
        for number in range(1, 6):
            await server.runtime.hub.publish("public:busy", {"n": number})
        await reader.connect()

        resubscribed = await next_item(events.subscribed)
        assert resubscribed.was_recovering
        assert not resubscribed.recovered
        assert resubscribed.stream_position is not None
        assert resubscribed.stream_position.offset == 5
        await nothing_more(events.publications)
        await server.runtime.hub.publish("public:busy", {"n": 6})
        assert await take(events.publications, 1) == [{"n": 6}]
        await reader.disconnect()


async def test_expired_token_is_refused_with_token_expired(settings: Settings) -> None:
    async with chat_server(settings) as server:
        _, token = await server.token(ttl=timedelta(minutes=-5))
        client, events = new_client(server.ws_url, token)
        await client.connect()
        error = await next_item(events.errors)
        assert isinstance(error.error, ReplyError)
        assert error.error.code == 109
        await next_item(events.disconnected)
        assert client.state == ClientState.DISCONNECTED


async def test_invalid_token_closes_with_invalid_token(settings: Settings) -> None:
    async with chat_server(settings) as server:
        client, events = new_client(server.ws_url, "not-a-token")
        await client.connect()
        disconnected = await next_item(events.disconnected)
        assert disconnected.code == 3500
        assert client.state == ClientState.DISCONNECTED


@pytest.mark.parametrize(
    ("channel", "code"),
    [("#someone-else", 103), ("room:42", 103), ("nowhere:x", 102), ("plain", 103)],
)
async def test_channels_the_user_may_not_join_are_refused(
    settings: Settings, channel: str, code: int
) -> None:
    async with chat_server(settings) as server:
        _, token = await server.token()
        client, _ = new_client(server.ws_url, token)
        await client.connect()
        sub, events = new_subscription(client, channel)
        await sub.subscribe()
        unsubscribed = await next_item(events.unsubscribed)
        assert unsubscribed.code == code
        assert client.state == ClientState.CONNECTED
        await client.disconnect()


async def test_personal_channel_gets_server_publications(settings: Settings) -> None:
    async with chat_server(settings) as server:
        user_id, token = await server.token()
        client, _ = new_client(server.ws_url, token)
        await client.connect()
        sub, events = new_subscription(client, f"#{user_id}")
        await sub.subscribe()
        await next_item(events.subscribed)
        with pytest.raises(ReplyError) as refused:
            await sub.publish({"from": "client"})
        assert refused.value.code == 103
        await server.runtime.hub.publish(f"#{user_id}", {"note": "for you"})
        assert await take(events.publications, 1) == [{"note": "for you"}]
        await client.disconnect()


async def test_token_refresh_keeps_the_connection(settings: Settings) -> None:
    chat = chat_settings(ping_interval=1, expiry_grace=0)
    async with chat_server(settings, chat) as server:
        user_id, token = await server.token(ttl=timedelta(seconds=2))
        fresh: list[str] = []

        async def get_token() -> str:
            _, new = await server.token(user_id, ttl=timedelta(minutes=5))
            fresh.append(new)
            return new

        client, events = new_client(server.ws_url, token, get_token=get_token)
        await client.connect()
        await next_item(events.connected)
        await asyncio.sleep(4)
        assert fresh
        assert client.state == ClientState.CONNECTED
        assert events.disconnected.empty()
        await client.disconnect()


async def test_connection_not_refreshed_expires(settings: Settings) -> None:
    chat = chat_settings(ping_interval=1, expiry_grace=0)
    async with chat_server(settings, chat) as server:
        _, token = await server.token(ttl=timedelta(seconds=1))
        client, events = new_client(server.ws_url, token, max_reconnect_delay=60)
        connecting = _record_connecting(events)
        await client.connect()
        await next_item(events.connected)
        # No get_token: the client keeps its token, the server ends the connection.
        assert await next_item(connecting, wait=5) == 3005
        await client.disconnect()


def _record_connecting(events: Events) -> asyncio.Queue[int]:
    """Codes of the client's moves to "connecting" (after connect() has been called)."""
    codes = asyncio.Queue[int]()

    async def on_connecting(ctx: ConnectingContext) -> None:
        if ctx.code != 0:  # 0: connect() itself
            await codes.put(ctx.code)

    events.on_connecting = on_connecting  # type: ignore[method-assign]
    return codes


async def test_shutdown_tells_clients_to_reconnect(settings: Settings) -> None:
    async with chat_server(settings) as server:
        _, token = await server.token()
        client, events = new_client(
            server.ws_url, token, min_reconnect_delay=5, max_reconnect_delay=60
        )
        await client.connect()
        await next_item(events.connected)
        connecting = _record_connecting(events)
        server.server.should_exit = True
        assert await next_item(connecting) == 3001
        await client.disconnect()
