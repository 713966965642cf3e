"""Read receipts and unread counts over REST, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from tests.integration.chat.test_activity_factories import (  # noqa: F401  (fixtures)
    API,
    Person,
    StatementCounter,
    World,
    activity_settings,
    backend_fixture,
    database_url_fixture,
    settings_for,
    world_fixture,
    world_on,
)


async def test_read_position_only_moves_forward(world: World) -> None:
    alice, bob = await world.person("alice"), await world.person("bob")
    room = await world.room(bob, members=[alice])
    posted = [await world.post(room, bob) for _ in range(5)]

    moved = await world.mark(alice, room, seq=3)
    assert moved.status_code == 200, moved.text
    assert moved.json() == {
        "room_id": str(room),
        "last_read_seq": 3,
        "last_seq": 5,
        "unread": 2,
        "mentions": 0,
    }
    # A device that was offline marks an older message: nothing moves back.
    stale = await world.mark(alice, room, message_id=str(posted[1].id))
    assert stale.status_code == 200
    assert stale.json()["last_read_seq"] == 3
    assert stale.json()["unread"] == 2
    same = await world.mark(alice, room, seq=3)
    assert same.json()["last_read_seq"] == 3
    assert await world.read_seq(room, alice) == 3

    newest = await world.mark(alice, room, message_id=str(posted[4].id))
    assert newest.json()["last_read_seq"] == 5
    assert newest.json()["unread"] == 0

    # Only the two moves were recorded, for alice's own channel and not the room's.
    recorded = await world.events_of("chat.read.updated")
    assert [event["last_read_seq"] for event in recorded] == [3, 5]
    for event in recorded:
        assert event["room_id"] == str(room)
        assert event["user_id"] == str(alice.id)
        assert event["to_room"] is False
        assert event["users"] == [str(alice.id)]
    assert recorded[1]["live"] == {
        "type": "read.updated",
        "room_id": str(room),
        "user_id": str(alice.id),
        "last_read_seq": 5,
        "last_seq": 5,
        "unread": 0,
        "mentions": 0,
    }


async def test_concurrent_devices_end_at_the_furthest_position(world: World) -> None:
    alice, bob = await world.person(), await world.person()
    room = await world.room(bob, members=[alice])
    for _ in range(6):
        await world.post(room, bob)

    answers = await asyncio.gather(*(world.mark(alice, room, seq=seq) for seq in (4, 6, 2, 5)))

    assert {answer.status_code for answer in answers} == {200}
    assert await world.read_seq(room, alice) == 6
    assert (await world.unread_in(alice, room)) == (0, 0)
    moves = [event["last_read_seq"] for event in await world.events_of("chat.read.updated")]
    assert moves == sorted(moves)  # each recorded move went forward
    assert moves[-1] == 6


async def test_unread_skips_deleted_and_own_messages(world: World) -> None:
    alice, bob = await world.person(), await world.person()
    room = await world.room(bob, members=[alice])
    await world.post(room, bob)
    await world.post(room, alice)
    await world.post(room, bob, deleted=True)
    later_deleted = await world.post(room, bob)
    await world.post(room, bob)

    assert await world.unread_in(alice, room) == (3, 0)
    assert await world.unread_in(bob, room) == (1, 0)

    await world.delete(later_deleted)
    assert await world.unread_in(alice, room) == (2, 0)
    # Deleting does not move anyone's position.
    assert await world.read_seq(room, alice) == 0


async def test_thread_replies_count_in_threads_i_take_part_in(world: World) -> None:
    alice, bob, carol = await world.person(), await world.person(), await world.person()
    room = await world.room(bob, members=[alice, carol])
    bobs_root = await world.post(room, bob)
    await world.post(room, carol, thread=bobs_root)  # alice is not in this thread yet
    assert await world.unread_in(alice, room) == (1, 0)

    await world.post(room, alice, thread=bobs_root)  # now she is (her own reply: not unread)
    await world.post(room, carol, thread=bobs_root)
    assert await world.unread_in(alice, room) == (3, 0)

    alices_root = await world.post(room, alice)
    await world.post(room, bob, thread=alices_root)
    assert await world.unread_in(alice, room) == (4, 0)

    # A mention pulls her into a thread she is not part of.
    carols_root = await world.post(room, carol)
    await world.post(room, bob, thread=carols_root)
    await world.post(room, bob, thread=carols_root, mentions=[alice])
    assert await world.unread_in(alice, room) == (6, 1)
    # For carol: bob's root, alice's reply in bob's thread (carol replied there too),
    # alice's root and both replies in carol's own thread; not bob's reply to alice.
    assert await world.unread_in(carol, room) == (5, 0)

    await world.mark(alice, room, seq=5)
    assert await world.unread_in(alice, room) == (3, 1)


async def test_mentions_count_unread_messages_mentioning_me(world: World) -> None:
    alice, bob, carol = await world.person(), await world.person(), await world.person()
    room = await world.room(bob, members=[alice, carol])
    await world.post(room, bob, mentions=[alice])
    await world.post(room, bob, mentions=[carol])
    await world.post(room, bob, mentions=[carol, alice])
    await world.post(room, bob, mentions=[alice], deleted=True)
    await world.post(room, alice, mentions=[alice])  # her own: never unread

    assert await world.unread_in(alice, room) == (3, 2)
    assert await world.unread_in(carol, room) == (4, 2)

    await world.mark(alice, room, seq=1)
    assert await world.unread_in(alice, room) == (2, 1)
    summary = await world.unread(alice)
    assert (summary["unread"], summary["mentions"]) == (2, 1)


async def test_unread_lists_every_room_with_totals(world: World) -> None:
    alice, bob = await world.person(), await world.person()
    quiet = await world.room(alice)
    busy = await world.room(bob, members=[alice])
    direct = await world.room(bob, kind="direct", members=[alice])
    elsewhere = await world.room(bob)  # alice is no member: not listed
    for _ in range(3):
        await world.post(busy, bob)
    await world.post(direct, bob, mentions=[alice])
    await world.post(elsewhere, bob)

    summary = await world.unread(alice)

    rooms = {room["room_id"]: room for room in summary["rooms"]}
    assert set(rooms) == {str(quiet), str(busy), str(direct)}
    assert rooms[str(quiet)] == {
        "room_id": str(quiet),
        "unread": 0,
        "mentions": 0,
        "last_read_seq": 0,
        "last_seq": 0,
    }
    assert (rooms[str(busy)]["unread"], rooms[str(busy)]["last_seq"]) == (3, 3)
    assert (rooms[str(direct)]["unread"], rooms[str(direct)]["mentions"]) == (1, 1)
    assert (summary["unread"], summary["mentions"]) == (4, 1)


async def test_unread_takes_one_query_whatever_the_number_of_rooms(world: World) -> None:
    few, many, bob = await world.person(), await world.person(), await world.person()
    room = await world.room(bob, members=[few, many])
    await world.post(room, bob)
    for _ in range(8):
        other = await world.room(bob, members=[many])
        await world.post(other, bob, mentions=[many])
        await world.post(other, bob)

    counts = []
    for person in (few, many):
        with StatementCounter(world.platform) as counter:
            summary = await world.unread(person)
        counts.append(len(counter.statements))
        assert len(summary["rooms"]) in (1, 9)
    assert counts == [1, 1]
    assert (await world.unread(many))["unread"] == 17


async def test_read_all_marks_every_room(world: World) -> None:
    alice, bob = await world.person(), await world.person()
    rooms = [await world.room(bob, members=[alice]) for _ in range(3)]
    await world.post(rooms[0], bob)
    await world.post(rooms[1], bob, mentions=[alice])
    await world.post(rooms[1], bob)
    # rooms[2] has no message: nothing to mark there.

    response = await world.http.post(f"{API}/read-all", headers=alice.auth)

    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["unread"], summary["mentions"]) == (0, 0)
    positions = {room["room_id"]: room["last_read_seq"] for room in summary["rooms"]}
    assert positions == {str(rooms[0]): 1, str(rooms[1]): 2, str(rooms[2]): 0}
    recorded = await world.events_of("chat.read.updated")
    assert sorted(event["room_id"] for event in recorded) == sorted(map(str, rooms[:2]))
    assert all(event["live"]["unread"] == 0 for event in recorded)

    again = await world.http.post(f"{API}/read-all", headers=alice.auth)
    assert again.status_code == 200
    assert len(await world.events_of("chat.read.updated")) == 2  # nothing moved


async def test_marking_read_refuses_bad_positions_and_outsiders(world: World) -> None:
    alice, bob, carol = await world.person(), await world.person(), await world.person()
    room = await world.room(bob, members=[alice])
    private = await world.room(bob, kind="private")
    other = await world.room(bob)
    await world.post(room, bob)
    foreign = await world.post(other, bob)

    cases: list[tuple[Person, uuid.UUID, dict[str, Any], int, str]] = [
        (alice, uuid.uuid4(), {"seq": 1}, 404, "chat_room_not_found"),
        (carol, private, {"seq": 1}, 404, "chat_room_not_found"),
        (carol, room, {"seq": 1}, 403, "chat_not_a_member"),
        (alice, room, {"message_id": str(foreign.id)}, 404, "chat_message_not_found"),
        (alice, room, {"message_id": str(uuid.uuid4())}, 404, "chat_message_not_found"),
        (alice, room, {"seq": 2}, 400, "chat_read_position_out_of_range"),
        (alice, room, {}, 422, "validation_failed"),
        (alice, room, {"seq": 1, "message_id": str(foreign.id)}, 422, "validation_failed"),
        (alice, room, {"seq": 0}, 422, "validation_failed"),
        (alice, room, {"seq": 1, "extra": True}, 422, "validation_failed"),
    ]
    for person, room_id, body, status, code in cases:
        response = await world.mark(person, room_id, **body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["code"] == code, body
    problem = (await world.mark(alice, room, seq=2)).json()
    assert "newest message is number 1" in problem["detail"]

    unsigned = await world.http.post(f"{API}/rooms/{room}/read", json={"seq": 1})
    assert unsigned.status_code == 401
    assert (await world.http.get(f"{API}/unread")).status_code == 401
    assert (await world.http.post(f"{API}/read-all")).status_code == 401
    assert await world.read_seq(room, alice) == 0
    assert await world.events_of("chat.read.updated") == []


async def test_room_receipts_show_who_read_up_to_where(world: World) -> None:
    alice, bob, carol = await world.person(), await world.person(), await world.person()
    room = await world.room(bob, members=[alice, carol])
    for _ in range(4):
        await world.post(room, bob)
    await world.mark(alice, room, seq=2)
    await world.mark(bob, room, seq=4)
    url = f"{API}/rooms/{room}/receipts"

    response = await world.http.get(url, headers=carol.auth)

    assert response.status_code == 200, response.text
    page = response.json()
    positions = {item["user_id"]: item["last_read_seq"] for item in page["receipts"]}
    assert positions == {str(alice.id): 2, str(bob.id): 4, str(carol.id): 0}
    assert page["next_cursor"] is None
    read_at = {item["user_id"]: item["last_read_at"] for item in page["receipts"]}
    assert read_at[str(carol.id)] is None
    assert read_at[str(alice.id)].endswith("Z")

    # A page at a time, in user id order.
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        step = (await world.http.get(url, params=params, headers=alice.auth)).json()
        seen += [item["user_id"] for item in step["receipts"]]
        cursor = step["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(positions, key=uuid.UUID)

    # Public rooms are readable by anyone signed in; private ones only by members.
    outsider = await world.person()
    assert (await world.http.get(url, headers=outsider.auth)).status_code == 200
    private = await world.room(bob, kind="private")
    hidden = await world.http.get(f"{API}/rooms/{private}/receipts", headers=outsider.auth)
    assert hidden.status_code == 404
    await world.ban(room, outsider, bob)
    banned = await world.http.get(url, headers=outsider.auth)
    assert banned.status_code == 403
    assert banned.json()["code"] == "chat_banned"
    too_many = await world.http.get(url, params={"limit": 501}, headers=alice.auth)
    assert too_many.status_code == 422


async def test_read_updates_are_rate_limited_per_user(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", tmp_path)
    async with world_on(settings, activity_settings(read_rate_limit="3/minute")) as world:
        alice, bob = await world.person(), await world.person()
        room = await world.room(bob, members=[alice])
        await world.post(room, bob)

        answers = [await world.mark(alice, room, seq=1) for _ in range(3)]
        answers.append(await world.http.post(f"{API}/read-all", headers=alice.auth))

        assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
        assert answers[-1].json()["code"] == "rate_limited"
        assert "Retry-After" in answers[-1].headers
        # Limits count per user: bob still has his own.
        assert (await world.mark(bob, room, seq=1)).status_code == 200
