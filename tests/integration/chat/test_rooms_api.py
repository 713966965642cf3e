"""Rooms over REST: create, read, change, delete, my rooms and the directory."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from engineroom.chat.models import Member, Message, Room
from engineroom.core.clock import utcnow
from tests.support.chat_domain import API, rooms_database_fixture, rooms_fixture  # noqa: F401
from tests.support.chat_domain import RoomsApp as ChatApp


async def test_create_room_makes_the_creator_owner(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    response = await chat.client.post(
        f"{API}/rooms",
        json={"name": "  general ", "kind": "invite_only", "topic": "Anything"},
        headers=alice.auth,
    )
    assert response.status_code == 201, response.text
    room = response.json()
    assert room["name"] == "general"
    assert room["kind"] == "invite_only"
    assert room["topic"] == "Anything"
    assert room["created_by"] == alice.id
    assert room["member_count"] == 1
    assert room["last_seq"] == 0
    assert room["peer_id"] is None
    assert room["membership"]["role"] == "owner"
    assert room["created_at"].endswith("Z")

    fetched = await chat.client.get(f"{API}/rooms/{room['id']}", headers=alice.auth)
    assert fetched.status_code == 200
    assert fetched.json() == room
    assert await chat.members(alice, room["id"]) == {alice.id: "owner"}


async def test_create_room_refuses_bad_input(chat: ChatApp) -> None:
    alice = await chat.user()
    bad_bodies = [
        {"name": "", "kind": "public"},
        {"name": "   ", "kind": "public"},
        {"name": "x" * 101, "kind": "public"},
        {"name": "ok", "kind": "direct"},
        {"name": "ok", "kind": "secret"},
        {"name": "ok", "topic": "t" * 501},
        {"name": "ok", "owner": alice.id},
        {"kind": "public"},
    ]
    for body in bad_bodies:
        response = await chat.client.post(f"{API}/rooms", json=body, headers=alice.auth)
        assert response.status_code == 422, body
        assert response.json()["code"] == "validation_failed"
    longest = await chat.client.post(f"{API}/rooms", json={"name": "x" * 100}, headers=alice.auth)
    assert longest.status_code == 201
    assert longest.json()["kind"] == "public"


async def test_rooms_need_a_signed_in_user(chat: ChatApp) -> None:
    assert (await chat.client.post(f"{API}/rooms", json={"name": "x"})).status_code == 401
    assert (await chat.client.get(f"{API}/rooms")).status_code == 401
    assert (await chat.client.get(f"{API}/rooms/{uuid.uuid4()}")).status_code == 401


async def test_unknown_and_private_rooms_are_not_found(chat: ChatApp) -> None:
    alice, bob = await chat.user(), await chat.user()
    private = await chat.room(alice, "private")
    invite_only = await chat.room(alice, "invite_only")
    unknown = await chat.client.get(f"{API}/rooms/{uuid.uuid4()}", headers=bob.auth)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "chat_room_not_found"
    hidden = await chat.client.get(f"{API}/rooms/{private['id']}", headers=bob.auth)
    assert hidden.status_code == 404
    assert hidden.json()["code"] == "chat_room_not_found"
    # Invite-only rooms are listed: visible, but not readable.
    seen = await chat.client.get(f"{API}/rooms/{invite_only['id']}", headers=bob.auth)
    assert seen.status_code == 200
    assert seen.json()["membership"] is None
    members = await chat.client.get(f"{API}/rooms/{invite_only['id']}/members", headers=bob.auth)
    assert members.status_code == 403
    assert members.json()["code"] == "chat_not_a_member"
    malformed = await chat.client.get(f"{API}/rooms/not-a-uuid", headers=bob.auth)
    assert malformed.status_code == 422


async def test_update_room_by_owner_and_moderators_only(chat: ChatApp) -> None:
    alice, bob, carol = await chat.user(), await chat.user(), await chat.user()
    room = await chat.room(alice, topic="old")
    await chat.member(bob, room["id"])
    url = f"{API}/rooms/{room['id']}"

    refused = await chat.client.patch(url, json={"name": "mine"}, headers=bob.auth)
    assert refused.status_code == 403
    assert refused.json()["code"] == "chat_not_room_moderator"
    stranger = await chat.client.patch(url, json={"name": "mine"}, headers=carol.auth)
    assert stranger.status_code == 403

    renamed = await chat.client.patch(url, json={"name": "renamed"}, headers=alice.auth)
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "renamed"
    assert renamed.json()["topic"] == "old"  # not sent, not changed
    assert renamed.json()["updated_at"] > room["updated_at"]

    promoted = await chat.client.put(
        f"{url}/members/{bob.id}/role", json={"role": "moderator"}, headers=alice.auth
    )
    assert promoted.status_code == 200
    cleared = await chat.client.patch(url, json={"topic": None}, headers=bob.auth)
    assert cleared.status_code == 200
    assert cleared.json()["topic"] is None
    assert cleared.json()["name"] == "renamed"

    for body in ({"name": None}, {"name": ""}, {"kind": "private"}, {"name": "y" * 101}):
        bad = await chat.client.patch(url, json=body, headers=alice.auth)
        assert bad.status_code == 422, body


async def test_delete_room_by_owner(chat: ChatApp) -> None:
    alice, bob = await chat.user(), await chat.user()
    room = await chat.room(alice)
    await chat.member(bob, room["id"])
    url = f"{API}/rooms/{room['id']}"

    by_member = await chat.client.delete(url, headers=bob.auth)
    assert by_member.status_code == 403
    assert by_member.json()["code"] == "chat_not_room_owner"
    await chat.client.put(
        f"{url}/members/{bob.id}/role", json={"role": "moderator"}, headers=alice.auth
    )
    by_moderator = await chat.client.delete(url, headers=bob.auth)
    assert by_moderator.status_code == 403

    deleted = await chat.client.delete(url, headers=alice.auth)
    assert deleted.status_code == 204
    assert (await chat.client.get(url, headers=alice.auth)).status_code == 404
    assert (await chat.client.delete(url, headers=alice.auth)).status_code == 404
    async with chat.platform.database.read_only() as session:
        left = await session.scalar(
            select(func.count()).select_from(Member).where(Member.room_id == uuid.UUID(room["id"]))
        )
    assert left == 0


async def test_my_rooms_most_recent_activity_first(chat: ChatApp) -> None:
    alice, bob = await chat.user(), await chat.user()
    first = await chat.room(alice, name="first")
    second = await chat.room(alice, "private", name="second")
    third = await chat.room(bob, name="third")
    await chat.member(alice, third["id"])
    await chat.room(bob, name="not mine")

    listed = await chat.client.get(f"{API}/rooms", headers=alice.auth)
    assert listed.status_code == 200
    body = listed.json()
    assert [room["name"] for room in body["rooms"]] == ["third", "second", "first"]
    assert body["next_cursor"] is None
    assert [room["membership"]["role"] for room in body["rooms"]] == ["member", "owner", "owner"]

    # A message in the first room makes it the most recent.
    async with chat.platform.database.unit_of_work() as session:
        room = await session.get(Room, uuid.UUID(first["id"]))
        assert room is not None
        room.last_seq = 1
        session.add(
            Message(
                room_id=room.id,
                seq=1,
                author_id=uuid.UUID(alice.id),
                body="hi",
                created_at=utcnow(),
            )
        )
    relisted = await chat.client.get(f"{API}/rooms", headers=alice.auth)
    assert [room["name"] for room in relisted.json()["rooms"]] == ["first", "third", "second"]
    assert second["id"] in {room["id"] for room in relisted.json()["rooms"]}


async def test_my_rooms_pages_by_cursor_and_offset(chat: ChatApp) -> None:
    alice = await chat.user()
    names = [f"room {n}" for n in range(5)]
    for name in names:
        await chat.room(alice, name=name)
    newest_first = names[::-1]

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await chat.client.get(f"{API}/rooms", params=params, headers=alice.auth)).json()
        seen += [room["name"] for room in page["rooms"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first

    by_offset = await chat.client.get(
        f"{API}/rooms", params={"limit": 2, "offset": 3}, headers=alice.auth
    )
    assert [room["name"] for room in by_offset.json()["rooms"]] == newest_first[3:]

    for params in ({"cursor": "nonsense!"}, {"cursor": "AAAA", "offset": 1}):
        bad = await chat.client.get(f"{API}/rooms", params=params, headers=alice.auth)
        assert bad.status_code == 400, params
        assert bad.json()["code"] == "chat_invalid_cursor"
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}):
        bad = await chat.client.get(f"{API}/rooms", params=params, headers=alice.auth)
        assert bad.status_code == 422, params


async def test_directory_lists_public_and_invite_only_rooms(chat: ChatApp) -> None:
    alice, bob = await chat.user(), await chat.user()
    await chat.room(alice, "public", name="Python lovers")
    await chat.room(alice, "invite_only", name="python core")
    await chat.room(alice, "private", name="python secrets")
    joined = await chat.room(bob, "public", name="Rust 100%_fans")
    await chat.client.post(f"{API}/direct", json={"user_id": bob.id}, headers=alice.auth)

    everything = await chat.client.get(f"{API}/directory", headers=bob.auth)
    assert everything.status_code == 200
    names = [room["name"] for room in everything.json()["rooms"]]
    assert names == ["Rust 100%_fans", "python core", "Python lovers"]
    memberships = {r["name"]: r["membership"] for r in everything.json()["rooms"]}
    assert memberships["Rust 100%_fans"]["role"] == "owner"
    assert memberships["Python lovers"] is None

    python = await chat.client.get(f"{API}/directory", params={"q": "PYTHON"}, headers=bob.auth)
    assert [room["name"] for room in python.json()["rooms"]] == ["python core", "Python lovers"]
    # LIKE wildcards in the query are plain characters.
    percent = await chat.client.get(f"{API}/directory", params={"q": "0%_f"}, headers=bob.auth)
    assert [room["id"] for room in percent.json()["rooms"]] == [joined["id"]]
    wildcard = await chat.client.get(f"{API}/directory", params={"q": "%"}, headers=bob.auth)
    assert [room["id"] for room in wildcard.json()["rooms"]] == [joined["id"]]

    first = await chat.client.get(f"{API}/directory", params={"limit": 2}, headers=bob.auth)
    assert len(first.json()["rooms"]) == 2
    rest = await chat.client.get(
        f"{API}/directory",
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=bob.auth,
    )
    assert [room["name"] for room in rest.json()["rooms"]] == ["Python lovers"]
    assert rest.json()["next_cursor"] is None


async def test_creating_rooms_is_rate_limited_per_user(chat: ChatApp) -> None:
    alice, bob = await chat.user(), await chat.user()
    for number in range(60):
        response = await chat.client.post(
            f"{API}/rooms", json={"name": f"r{number}"}, headers=alice.auth
        )
        assert response.status_code == 201, number
    assert response.headers["RateLimit-Remaining"] == "0"
    over = await chat.client.post(f"{API}/rooms", json={"name": "one more"}, headers=alice.auth)
    assert over.status_code == 429
    assert over.json()["code"] == "rate_limited"
    assert int(over.headers["Retry-After"]) >= 1
    # Direct rooms and invites count against the same limit; other users have their own.
    direct = await chat.client.post(f"{API}/direct", json={"user_id": bob.id}, headers=alice.auth)
    assert direct.status_code == 429
    assert (
        await chat.client.post(f"{API}/rooms", json={"name": "b"}, headers=bob.auth)
    ).status_code == 201
