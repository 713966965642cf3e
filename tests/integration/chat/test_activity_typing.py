"""Typing indicators: ``chat.typing`` over the WebSocket publishes on ``typing:<room>``,
throttled, for members allowed to post, and nothing of it is kept anywhere."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from centrifuge import Client, ReplyError

from engineroom.chat.activity import TypingThrottle
from tests.integration.chat.test_activity_factories import (  # noqa: F401  (fixtures)
    Person,
    World,
    activity_settings,
    backend_fixture,
    database_url_fixture,
    settings_for,
    world_fixture,
    world_on,
)
from tests.support.chat import (
    SubEvents,
    new_client,
    new_subscription,
    next_item,
    nothing_more,
    take,
)


async def _connected(world: World, person: Person) -> Client:
    client, _ = new_client(world.server.ws_url, person.token)
    await client.connect()
    return client


async def _watch(client: Client, room: uuid.UUID) -> SubEvents:
    subscription, events = new_subscription(client, f"typing:{room}")
    await subscription.subscribe()
    await next_item(events.subscribed)
    return events


def _typing(room: uuid.UUID, typing: bool) -> dict[str, Any]:
    return {"room_id": str(room), "typing": typing}


async def test_typing_reaches_whoever_reads_the_room(world: World) -> None:
    alice, bob, carol = await world.person("alice"), await world.person("bob"), await world.person()
    room = await world.room(bob, members=[alice])
    typist, reader, passer_by = [await _connected(world, p) for p in (alice, bob, carol)]
    bob_sees = await _watch(reader, room)
    carol_sees = await _watch(passer_by, room)  # a public room: readable by anyone
    outbox = await world.outbox_size()

    started = await typist.rpc("chat.typing", _typing(room, True))

    assert started.data == {"sent": True}
    expected = {
        "type": "typing",
        "room_id": str(room),
        "user": {"id": str(alice.id), "username": "alice"},
        "typing": True,
    }
    for events in (bob_sees, carol_sees):
        publication = (await next_item(events.publications)).pub
        assert publication.data == expected
        assert publication.offset == 0  # not positioned in any history
    stopped = await typist.rpc("chat.typing", _typing(room, False))
    assert stopped.data == {"sent": True}
    assert (await next_item(bob_sees.publications)).pub.data == {**expected, "typing": False}
    # Nothing written to the database, the outbox included.
    assert await world.outbox_size() == outbox
    for client in (typist, reader, passer_by):
        await client.disconnect()


async def test_typing_keeps_no_history(world: World) -> None:
    alice, bob = await world.person(), await world.person()
    room = await world.room(bob, members=[alice])
    typist, reader = await _connected(world, alice), await _connected(world, bob)
    await typist.rpc("chat.typing", _typing(room, True))

    subscription, events = new_subscription(reader, f"typing:{room}")
    await subscription.subscribe()
    subscribed = await next_item(events.subscribed)
    assert not subscribed.recoverable
    assert not subscribed.positioned
    with pytest.raises(ReplyError) as refused:
        await subscription.history(limit=10)
    assert refused.value.code == 108  # not available
    with pytest.raises(ReplyError) as no_presence:
        await subscription.presence()
    assert no_presence.value.code == 108
    await nothing_more(events.publications)  # the earlier flag is gone for good
    for client in (typist, reader):
        await client.disconnect()


async def test_only_members_who_may_post_can_type(world: World) -> None:
    alice, bob, carol, dave = [await world.person() for _ in range(4)]
    room = await world.room(bob, members=[alice, dave])
    private = await world.room(bob, kind="private")
    await world.mute(room, alice)
    await world.ban(room, dave, bob)
    reader = await _connected(world, bob)
    bob_sees = await _watch(reader, room)

    cases = [
        (carol, room, 403, "chat_not_a_member"),
        (carol, private, 404, "chat_room_not_found"),
        (carol, uuid.uuid4(), 404, "chat_room_not_found"),
        (alice, room, 403, "chat_muted"),
        (dave, room, 403, "chat_banned"),
    ]
    for person, room_id, code, error in cases:
        client = await _connected(world, person)
        with pytest.raises(ReplyError) as refused:
            await client.rpc("chat.typing", _typing(room_id, True))
        assert refused.value.code == code, error
        assert refused.value.message.startswith(error)
        await client.disconnect()
    await nothing_more(bob_sees.publications)
    await reader.disconnect()


async def test_malformed_typing_requests_are_refused(world: World) -> None:
    alice, bob = await world.person(), await world.person()
    room = await world.room(bob, members=[alice])
    client = await _connected(world, alice)
    for data in (
        {"room_id": str(room)},
        {"room_id": str(room), "typing": "yes"},
        {"room_id": "room", "typing": True},
        {"room_id": str(room), "typing": True, "extra": 1},
        None,
    ):
        with pytest.raises(ReplyError) as refused:
            await client.rpc("chat.typing", data)
        assert refused.value.code == 107, data
    assert (await client.rpc("chat.typing", _typing(room, True))).data == {"sent": True}
    await client.disconnect()


async def test_typing_channels_follow_read_access(world: World) -> None:
    bob, carol = await world.person(), await world.person()
    private = await world.room(bob, kind="private")
    client = await _connected(world, carol)
    for channel in (
        f"typing:{private}",
        f"typing:{uuid.uuid4()}",
        "typing:lobby",
        f"typing:{str(private).upper()}",
    ):
        subscription, events = new_subscription(client, channel)
        await subscription.subscribe()
        assert (await next_item(events.unsubscribed)).code == 103, channel
    # Clients never publish typing flags themselves: only the RPC does, after its checks.
    room = await world.room(bob)
    subscription, events = new_subscription(client, f"typing:{room}")
    await subscription.subscribe()
    await next_item(events.subscribed)
    with pytest.raises(ReplyError) as refused:
        await subscription.publish({"type": "typing", "typing": True})
    assert refused.value.code == 103
    await client.disconnect()


async def test_typing_is_throttled_per_user_and_room(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", tmp_path)
    async with world_on(settings, activity_settings(typing_throttle=60)) as world:
        alice, bob = await world.person(), await world.person()
        room = await world.room(bob, members=[alice])
        other = await world.room(bob, members=[alice])
        typist, reader = await _connected(world, alice), await _connected(world, bob)
        bob_sees = await _watch(reader, room)

        sent = [
            (await typist.rpc("chat.typing", _typing(room_id, typing))).data["sent"]
            for room_id, typing in (
                (room, True),
                (room, True),  # within the throttle: dropped
                (other, True),  # another room: its own throttle
                (room, False),  # a stop always follows a start
                (room, False),  # ...but only once
                (room, True),  # typing again after stopping
                (room, True),
            )
        ]

        assert sent == [True, False, True, True, False, True, False]
        flags = [item["typing"] for item in await take(bob_sees.publications, 3)]
        assert flags == [True, False, True]
        await nothing_more(bob_sees.publications)
        for client in (typist, reader):
            await client.disconnect()


def test_throttle_lets_a_renewal_through_after_the_interval() -> None:
    now = [0.0]
    throttle = TypingThrottle(2.0, clock=lambda: now[0])
    room, other = uuid.uuid4(), uuid.uuid4()

    assert throttle.allow("alice", room, True)
    now[0] = 1.9
    assert not throttle.allow("alice", room, True)
    assert throttle.allow("bob", room, True)
    assert throttle.allow("alice", other, True)
    now[0] = 2.1
    assert throttle.allow("alice", room, True)
    assert not throttle.allow("carol", room, False)  # never started: nothing to stop
    assert throttle.allow("alice", room, False)
    assert not throttle.allow("alice", room, False)
