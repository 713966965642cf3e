"""Messages over the WebSocket with the real centrifuge-python client: the RPC methods,
their errors (the connection stays open), and the live publications members receive on
``room:<id>`` and on their personal channel."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from centrifuge import Client, ReplyError

from engineroom.chat.realtime.channels import DenyAll
from engineroom.chat.realtime.protocol import ErrorCode
from engineroom.settings import Settings
from tests.support.chat import (
    ChatServer,
    SubEvents,
    chat_server,
    new_client,
    new_subscription,
    next_item,
    nothing_more,
)
from tests.support.chat_domain import create_room, messages_settings
from tests.support.identity import PASSWORD


async def _deliver(server: ChatServer) -> None:
    """Run the outbox relay (it does not run by itself in these servers)."""
    while await server.platform.relay.run_once():
        pass


async def _registered(server: ChatServer, username: str) -> tuple[uuid.UUID, str]:
    """A user of the identity module (so that mentions find them) and a token."""
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post(
            "/api/v1/identity/users",
            json={"email": f"{username}@example.com", "username": username, "password": PASSWORD},
        )
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]
    _, token = await server.token(user_id, username=username)
    return uuid.UUID(user_id), token


async def _connected(server: ChatServer, token: str) -> Client:
    client, _ = new_client(server.ws_url, token)
    await client.connect()
    return client


async def _subscribed(client: Client, channel: str) -> SubEvents:
    subscription, events = new_subscription(client, channel)
    await subscription.subscribe()
    await next_item(events.subscribed)
    return events


async def _live(server: ChatServer, events: SubEvents) -> dict[str, Any]:
    await _deliver(server)
    data: dict[str, Any] = (await next_item(events.publications)).pub.data
    return data


async def test_rpc_methods_and_their_live_publications(settings: Settings) -> None:
    async with chat_server(settings, messages_settings()) as server:
        # The rooms part installs the room authorizer; members may subscribe.
        assert not isinstance(server.runtime.registry.namespace("room").authorizer, DenyAll)
        alice_id, alice_token = await _registered(server, "alice")
        bob_id, bob_token = await _registered(server, "bob")
        room = await create_room(server.platform, alice_id, members=[bob_id])
        alice = await _connected(server, alice_token)
        bob = await _connected(server, bob_token)
        room_events = await _subscribed(bob, f"room:{room}")
        personal = await _subscribed(bob, f"#{bob_id}")

        sent = (await alice.rpc("chat.send", {"room_id": str(room), "body": "hello @bob"})).data
        assert sent["seq"] == 1
        assert sent["author"] == {"id": str(alice_id), "username": "alice"}
        assert sent["mentions"] == [{"id": str(bob_id), "username": "bob"}]

        live = await _live(server, room_events)
        assert live["type"] == "message.sent"
        assert live["room_id"] == str(room)
        assert live["message"]["id"] == sent["id"]
        assert live["message"]["body"] == "hello @bob"
        assert "event_id" in live
        mention = (await next_item(personal.publications)).pub.data
        assert mention == live  # the mentioned member hears of it personally too

        edited = (
            await alice.rpc("chat.edit", {"message_id": sent["id"], "body": "hello again"})
        ).data
        assert edited["body"] == "hello again"
        assert (await _live(server, room_events))["type"] == "message.edited"

        reacted = (await bob.rpc("chat.react", {"message_id": sent["id"], "emoji": "👍"})).data
        assert reacted["reactions"] == [{"emoji": "👍", "count": 1, "me": True}]
        added = await _live(server, room_events)
        assert (added["type"], added["emoji"], added["count"]) == ("reaction.added", "👍", 1)

        unreacted = (await bob.rpc("chat.unreact", {"message_id": sent["id"], "emoji": "👍"})).data
        assert unreacted["reactions"] == []
        assert (await _live(server, room_events))["type"] == "reaction.removed"

        reply = (
            await bob.rpc(
                "chat.send",
                {"room_id": str(room), "body": "in the thread", "thread_root_id": sent["id"]},
            )
        ).data
        live_reply = await _live(server, room_events)
        assert live_reply["message"]["thread_root_id"] == sent["id"]
        assert live_reply["root"]["reply_count"] == 1
        assert reply["seq"] == 2

        assert (await alice.rpc("chat.delete", {"message_id": sent["id"]})).data == {}
        deleted = await _live(server, room_events)
        assert deleted["type"] == "message.deleted"
        assert deleted["message_id"] == sent["id"]
        await nothing_more(personal.publications)
        await alice.disconnect()
        await bob.disconnect()


async def test_rpc_errors_leave_the_connection_open(settings: Settings) -> None:
    chat = messages_settings(message_rate_limit="2/minute")
    async with chat_server(settings, chat) as server:
        alice_id, alice_token = await server.token(username="alice")
        _, outsider_token = await server.token(username="outsider")
        room = await create_room(server.platform, uuid.UUID(alice_id))
        private = await create_room(server.platform, uuid.UUID(alice_id), kind="private")
        alice = await _connected(server, alice_token)
        outsider = await _connected(server, outsider_token)

        async def refused(client: Client, method: str, data: Any) -> ReplyError:
            with pytest.raises(ReplyError) as caught:
                await client.rpc(method, data)
            return caught.value

        error = await refused(outsider, "chat.send", {"room_id": str(room), "body": "hi"})
        assert error.code == 403
        assert error.message.startswith("chat_not_a_member: ")
        error = await refused(outsider, "chat.send", {"room_id": str(private), "body": "hi"})
        assert (error.code, error.message.split(":")[0]) == (404, "chat_room_not_found")
        error = await refused(alice, "chat.send", {"room_id": str(room)})
        assert error.code == ErrorCode.BAD_REQUEST
        assert "body" in error.message
        error = await refused(alice, "chat.send", ["not", "an", "object"])
        assert error.code == ErrorCode.BAD_REQUEST
        error = await refused(alice, "chat.react", {"message_id": str(uuid.uuid4()), "emoji": "x"})
        assert (error.code, error.message.split(":")[0]) == (404, "chat_message_not_found")
        error = await refused(alice, "chat.send", {"room_id": str(room), "body": "x" * 4001})
        assert (error.code, error.message.split(":")[0]) == (413, "chat_message_too_long")

        # Of alice's sends above, the long one counted against her 2 a minute (every
        # well-formed attempt does); the malformed ones were refused before counting.
        sent = (await alice.rpc("chat.send", {"room_id": str(room), "body": "third"})).data
        assert sent["seq"] == 1
        error = await refused(alice, "chat.send", {"room_id": str(room), "body": "fourth"})
        assert error.code == ErrorCode.TOO_MANY_REQUESTS
        assert error.temporary is True
        assert error.message.startswith("rate_limited: ")

        # Still connected: other methods keep working on the same connection.
        edited = await alice.rpc("chat.edit", {"message_id": sent["id"], "body": "edited"})
        assert edited.data["body"] == "edited"
        await alice.disconnect()
        await outsider.disconnect()
