"""Read receipts across devices: ``chat.read`` over the WebSocket and ``read.updated`` on
the user's personal channel, with the centrifuge-python SDK, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from centrifuge import Client, ReplyError

from tests.integration.chat.test_activity_factories import (  # noqa: F401  (fixtures)
    Person,
    World,
    backend_fixture,
    database_url_fixture,
    world_fixture,
)
from tests.support.chat import SubEvents, new_client, new_subscription, next_item, nothing_more


async def _device(world: World, person: Person) -> tuple[Client, SubEvents]:
    """A connected client of ``person`` subscribed to their personal channel."""
    client, _ = new_client(world.server.ws_url, person.token)
    await client.connect()
    personal, events = new_subscription(client, f"#{person.id}")
    await personal.subscribe()
    await next_item(events.subscribed)
    return client, events


async def _read_update(events: SubEvents) -> dict[str, Any]:
    data: dict[str, Any] = (await next_item(events.publications)).pub.data
    assert data["type"] == "read.updated"
    return data


async def test_marking_read_on_one_device_updates_the_others(world: World) -> None:
    alice, bob = await world.person("alice"), await world.person("bob")
    room = await world.room(bob, members=[alice])
    for _ in range(3):
        await world.post(room, bob)
    phone, phone_events = await _device(world, alice)
    laptop, laptop_events = await _device(world, alice)
    watcher, _ = new_client(world.server.ws_url, bob.token)
    await watcher.connect()
    room_sub, room_events = new_subscription(watcher, f"room:{room}")
    await room_sub.subscribe()
    await next_item(room_events.subscribed)

    reply = await phone.rpc("chat.read", {"room_id": str(room), "seq": 3})

    assert reply.data == {
        "room_id": str(room),
        "last_read_seq": 3,
        "last_seq": 3,
        "unread": 0,
        "mentions": 0,
    }
    await world.deliver_events()
    on_laptop = await _read_update(laptop_events)
    assert on_laptop["room_id"] == str(room)
    assert on_laptop["user_id"] == str(alice.id)
    assert (on_laptop["last_read_seq"], on_laptop["unread"]) == (3, 0)
    assert uuid.UUID(on_laptop["event_id"])
    assert (await _read_update(phone_events))["unread"] == 0
    # The room does not learn about alice's position through its channel.
    await nothing_more(room_events.publications)

    # New messages; the laptop reads one of them over REST and the phone follows.
    await world.post(room, bob, mentions=[alice])
    await world.post(room, bob)
    marked = await world.mark(alice, room, seq=4)
    assert marked.status_code == 200
    await world.deliver_events()
    on_phone = await _read_update(phone_events)
    assert (on_phone["last_read_seq"], on_phone["unread"], on_phone["mentions"]) == (4, 1, 0)
    assert (await _read_update(laptop_events))["unread"] == 1

    # The phone was behind: its older position changes nothing and tells nobody.
    stale = await phone.rpc("chat.read", {"room_id": str(room), "seq": 2})
    assert (stale.data["last_read_seq"], stale.data["unread"]) == (4, 1)
    await world.deliver_events()
    await nothing_more(laptop_events.publications)
    for client in (phone, laptop, watcher):
        await client.disconnect()


async def test_read_all_reaches_every_device(world: World) -> None:
    alice, bob = await world.person(), await world.person()
    rooms = [await world.room(bob, members=[alice]) for _ in range(2)]
    for room in rooms:
        await world.post(room, bob)
    phone, phone_events = await _device(world, alice)

    response = await world.http.post("/api/v1/chat/read-all", headers=alice.auth)

    assert response.status_code == 200
    await world.deliver_events()
    updates = [await _read_update(phone_events) for _ in rooms]
    assert sorted(update["room_id"] for update in updates) == sorted(map(str, rooms))
    assert {update["unread"] for update in updates} == {0}
    await phone.disconnect()


async def test_chat_read_errors_keep_the_connection(world: World) -> None:
    alice, bob = await world.person(), await world.person()
    room = await world.room(bob, members=[alice])
    private = await world.room(bob, kind="private")
    await world.post(room, bob)
    phone, _ = await _device(world, alice)

    cases: list[tuple[Any, int, str]] = [
        ({"room_id": str(uuid.uuid4()), "seq": 1}, 404, "chat_room_not_found"),
        ({"room_id": str(private), "seq": 1}, 404, "chat_room_not_found"),
        ({"room_id": str(room), "seq": 9}, 400, "chat_read_position_out_of_range"),
        ({"room_id": str(room), "message_id": str(uuid.uuid4())}, 404, "chat_message_not_found"),
        ({"room_id": "nope", "seq": 1}, 107, "room_id"),
        ({"room_id": str(room)}, 107, "message_id or seq"),
        ("just text", 107, "data"),
    ]
    for data, code, text in cases:
        with pytest.raises(ReplyError) as refused:
            await phone.rpc("chat.read", data)
        assert refused.value.code == code, data
        assert text in refused.value.message, (data, refused.value.message)

    still = await phone.rpc("chat.read", {"room_id": str(room), "seq": 1})
    assert still.data["last_read_seq"] == 1
    await phone.disconnect()
