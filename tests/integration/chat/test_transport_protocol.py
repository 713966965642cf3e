"""The transport at the frame level: malformed input, limits, pings, slow consumers, and the
kernel middleware in front of the WebSocket."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from engineroom.settings import Settings
from tests.support.chat import (
    WAIT,
    chat_server,
    chat_settings,
    eventually,
    new_client,
    new_subscription,
    next_item,
    raw_client,
    take,
)


async def test_several_commands_in_one_frame_are_answered_in_order(settings: Settings) -> None:
    async with chat_server(settings) as server:
        _, token = await server.token()
        async with raw_client(server.ws_url) as client:
            await client.send(
                {"id": 1, "connect": {"token": token}},
                {"id": 2, "subscribe": {"channel": "public:a"}},
                {"id": 3, "publish": {"channel": "public:a", "data": {"x": 1}}},
                {"id": 4, "presence_stats": {"channel": "public:a"}},
            )
            received: list[dict[str, object]] = []
            while len([m for m in received if "id" in m]) < 4:
                received.extend(await client.frame())
            ids = [message["id"] for message in received if "id" in message]
            assert ids == [1, 2, 3, 4]
            replies = {message["id"]: message for message in received if "id" in message}
            assert replies[2]["subscribe"]["recoverable"] is True  # type: ignore[index]
            assert replies[3] == {"id": 3, "publish": {}}
            assert replies[4]["presence_stats"] == {"num_clients": 1, "num_users": 1}
            pushes = [message["push"] for message in received if "push" in message]
            assert {"channel": "public:a", "pub": pushes[0]["pub"]} == pushes[0]  # type: ignore[index]


async def test_malformed_frames_close_only_their_connection(settings: Settings) -> None:
    async with chat_server(settings) as server:
        _, token = await server.token()
        listener, events = new_client(server.ws_url, token)
        await listener.connect()
        sub, sub_events = new_subscription(listener, "public:calm")
        await sub.subscribe()
        await next_item(sub_events.subscribed)
        for garbage in ("not json", "[1, 2]", '{"id": -1}', '{"id": 1, "connect": 5}', "\n\n"):
            async with raw_client(server.ws_url) as client:
                await client.connect(token)
                await client.send_text(garbage)
                assert await client.closed() == 3501, garbage
        await server.runtime.hub.publish("public:calm", {"still": "here"})
        assert await take(sub_events.publications, 1) == [{"still": "here"}]
        assert events.disconnected.empty()
        await listener.disconnect()


async def test_bad_commands_get_protocol_errors_and_keep_the_connection(
    settings: Settings,
) -> None:
    async with chat_server(settings) as server:
        _, token = await server.token()
        async with raw_client(server.ws_url) as client:
            await client.connect(token)
            cases = [
                ({"id": 2, "subscribe": {"channel": 5}}, 107),
                ({"id": 3, "subscribe": {"channel": "bad channel"}}, 107),
                ({"id": 4, "frobnicate": {}}, 104),
                ({"id": 5}, 104),
                ({"id": 6, "publish": {"channel": "public:a"}}, 107),
                ({"id": 7, "history": {"channel": "public:not-subscribed"}}, 103),
                ({"id": 8, "rpc": {"method": "nothing", "data": {}}}, 104),
                ({"id": 9, "sub_refresh": {"channel": "public:a", "token": "x"}}, 108),
            ]
            for command, code in cases:
                await client.send(command)
                reply = await client.reply(command["id"])  # type: ignore[arg-type]
                assert reply["error"]["code"] == code, command
            await client.send({"id": 10, "subscribe": {"channel": "public:a"}})
            await client.send({"id": 11, "subscribe": {"channel": "public:a"}})
            assert "subscribe" in await client.reply(10)
            assert (await client.reply(11))["error"]["code"] == 105
            await client.send({"id": 12, "ping": {}})
            assert await client.reply(12) == {"id": 12, "ping": {}}


async def test_commands_before_connect_and_a_second_connect_are_refused(
    settings: Settings,
) -> None:
    async with chat_server(settings) as server:
        _, token = await server.token()
        async with raw_client(server.ws_url) as client:
            await client.send({"id": 1, "subscribe": {"channel": "public:a"}})
            assert await client.closed() == 3501
        async with raw_client(server.ws_url) as client:
            await client.connect(token)
            await client.send({"id": 2, "connect": {"token": token}})
            assert await client.closed() == 3501


async def test_oversized_frame_closes_with_message_too_big(settings: Settings) -> None:
    async with chat_server(settings, chat_settings(max_frame_bytes=1024)) as server:
        _, token = await server.token()
        async with raw_client(server.ws_url) as client:
            await client.connect(token)
            big = "x" * 2000
            await client.send({"id": 2, "publish": {"channel": "public:a", "data": big}})
            assert await client.closed() == 1009


async def test_command_rate_limit_answers_too_many_requests(settings: Settings) -> None:
    chat = chat_settings(command_rate=1, command_burst=5)
    async with chat_server(settings, chat) as server:
        _, token = await server.token()
        async with raw_client(server.ws_url) as client:
            await client.connect(token)
            await client.send(*({"id": n, "ping": {}} for n in range(2, 12)))
            replies = [await client.reply(n) for n in range(2, 12)]
            refused = [reply for reply in replies if "error" in reply]
            assert len(refused) >= 5
            assert {reply["error"]["code"] for reply in refused} == {111}
            assert all(reply["error"].get("temporary") for reply in refused)
            await asyncio.sleep(1.1)
            await client.send({"id": 20, "ping": {}})
            assert await client.reply(20) == {"id": 20, "ping": {}}


async def test_subscription_limit(settings: Settings) -> None:
    async with chat_server(settings, chat_settings(max_subscriptions=2)) as server:
        _, token = await server.token()
        async with raw_client(server.ws_url) as client:
            await client.connect(token)
            for number, channel in enumerate(["public:a", "public:b", "public:c"], start=2):
                await client.send({"id": number, "subscribe": {"channel": channel}})
            assert "subscribe" in await client.reply(2)
            assert "subscribe" in await client.reply(3)
            assert (await client.reply(4))["error"]["code"] == 106


async def test_pings_are_answered_or_the_connection_closes(settings: Settings) -> None:
    async with chat_server(settings, chat_settings(ping_interval=1)) as server:
        _, token = await server.token()
        sdk_client, events = new_client(server.ws_url, token)
        await sdk_client.connect()
        async with raw_client(server.ws_url) as client:
            reply = await client.connect(token)
            assert reply["connect"]["ping"] == 1
            assert reply["connect"]["pong"] is True
            assert await client.frame(wait=3) == [{}]
            await client.send_text("{}")
            assert await client.frame(wait=3) == [{}]
            # Not answering this one: closed at the next ping time.
            assert await client.closed(wait=5) == 3012
        assert events.disconnected.empty()
        await sdk_client.disconnect()


async def test_a_connection_that_never_connects_is_closed_as_stale(settings: Settings) -> None:
    async with (
        chat_server(settings, chat_settings(connect_timeout=0.5)) as server,
        raw_client(server.ws_url) as client,
    ):
        assert await client.closed(wait=5) == 3502


async def test_a_client_that_does_not_read_is_dropped_not_buffered(settings: Settings) -> None:
    chat = chat_settings(max_queue_bytes=65_536)
    async with chat_server(settings, chat) as server:
        _, token = await server.token()
        hub = server.runtime.hub
        reader, _ = new_client(server.ws_url, token)
        await reader.connect()
        sub, events = new_subscription(reader, "public:firehose")
        await sub.subscribe()
        await next_item(events.subscribed)
        # The stuck client reads nothing: its socket buffers fill, then its queue.
        async with raw_client(server.ws_url, max_queue=1) as stuck:
            await stuck.connect(token)
            await stuck.send({"id": 2, "subscribe": {"channel": "public:firehose"}})
            assert "subscribe" in await stuck.reply(2)
            stuck.ws.transport.pause_reading()
            assert hub.subscriber_count("public:firehose") == 2
            payload = "y" * 16_000
            sent = 0
            async with asyncio.timeout(WAIT):
                while not any(connection.closing for connection in hub.connections):
                    await hub.publish("public:firehose", {"n": sent, "pad": payload})
                    sent += 1
                    await asyncio.sleep(0)
            await eventually(lambda: hub.subscriber_count("public:firehose") == 1)
            assert len(hub.connections) == 1
            # The reader that keeps up got everything, in order.
            received = await take(events.publications, sent)
            assert [item["n"] for item in received] == list(range(sent))
            stuck.ws.transport.resume_reading()
            assert await stuck.closed() in (3008, 1006)
        await reader.disconnect()


async def test_websocket_goes_through_the_kernel_middleware(settings: Settings) -> None:
    limited = settings.model_copy(update={"max_body_bytes": 1024})
    async with chat_server(limited) as server:
        _, token = await server.token()
        async with raw_client(server.ws_url, additional_headers={"X-Request-ID": "ws-1"}) as client:
            assert client.ws.response is not None
            assert client.ws.response.headers["X-Request-ID"] == "ws-1"
            await client.connect(token)
            # Frames are not request bodies: the HTTP body limit does not apply to them.
            await client.send({"id": 2, "subscribe": {"channel": "public:big"}})
            await client.reply(2)
            await client.send({"id": 3, "publish": {"channel": "public:big", "data": "z" * 4000}})
            assert await client.reply(3) == {"id": 3, "publish": {}}


async def test_untrusted_host_is_refused_before_the_handshake(settings: Settings) -> None:
    strict = settings.model_copy(update={"allowed_hosts": ["chat.example.com"]})
    async with chat_server(strict) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with raw_client(server.ws_url):
                pass
        assert refused.value.response.status_code == 403
