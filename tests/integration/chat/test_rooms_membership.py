"""Joining, leaving, ownership handover, invites and direct rooms."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select, text

from engineroom.chat import rooms
from engineroom.chat.models import Room
from engineroom.core.auth import Principal
from tests.support.chat_domain import API, rooms_database_fixture, rooms_fixture  # noqa: F401
from tests.support.chat_domain import RoomsApp as ChatApp


async def _member_count(chat: ChatApp, room_id: str) -> int:
    async with chat.platform.database.read_only() as session:
        room = await session.get(Room, uuid.UUID(room_id))
        assert room is not None
        return room.member_count


# ---- join and leave ----------------------------------------------------------------------


async def test_join_public_room_and_leave(chat: ChatApp) -> None:
    alice, bob = await chat.user(), await chat.user()
    room = await chat.room(alice)
    joined = await chat.join(bob, room["id"])
    assert joined.status_code == 201
    assert joined.json()["membership"]["role"] == "member"
    assert joined.json()["member_count"] == 2
    again = await chat.join(bob, room["id"])
    assert again.status_code == 200
    assert again.json()["member_count"] == 2
    assert await _member_count(chat, room["id"]) == 2

    mine = await chat.client.get(f"{API}/rooms", headers=bob.auth)
    assert [r["id"] for r in mine.json()["rooms"]] == [room["id"]]

    left = await chat.client.post(f"{API}/rooms/{room['id']}/leave", headers=bob.auth)
    assert left.status_code == 204
    assert await _member_count(chat, room["id"]) == 1
    not_member = await chat.client.post(f"{API}/rooms/{room['id']}/leave", headers=bob.auth)
    assert not_member.status_code == 403
    assert not_member.json()["code"] == "chat_not_a_member"
    assert (await chat.client.get(f"{API}/rooms", headers=bob.auth)).json()["rooms"] == []
    # Public rooms stay readable for non-members.
    members = await chat.client.get(f"{API}/rooms/{room['id']}/members", headers=bob.auth)
    assert members.status_code == 200
    unknown = await chat.join(bob, str(uuid.uuid4()))
    assert unknown.status_code == 404


async def test_joining_invite_only_and_private_rooms_needs_an_invite(chat: ChatApp) -> None:
    alice, bob = await chat.user(), await chat.user()
    invite_only = await chat.room(alice, "invite_only")
    private = await chat.room(alice, "private")

    refused = await chat.join(bob, invite_only["id"])
    assert refused.status_code == 403
    assert refused.json()["code"] == "chat_invite_required"
    hidden = await chat.join(bob, private["id"])
    assert hidden.status_code == 404  # a private room does not exist for outsiders

    for room in (invite_only, private):
        assert (await chat.invite(alice, room["id"], bob)).status_code == 201
        # An invited user sees the room before joining.
        seen = await chat.client.get(f"{API}/rooms/{room['id']}", headers=bob.auth)
        assert seen.status_code == 200
        assert seen.json()["membership"] is None
        joined = await chat.join(bob, room["id"])
        assert joined.status_code == 201, joined.text
        assert joined.json()["membership"]["role"] == "member"
    # Joining consumed the invites.
    assert (await chat.client.get(f"{API}/invites", headers=bob.auth)).json()["invites"] == []


async def test_owner_leaving_hands_over_to_the_first_moderator(chat: ChatApp) -> None:
    owner, early, mod_late, mod_early = [await chat.user() for _ in range(4)]
    room = await chat.room(owner)
    for user in (early, mod_early, mod_late):
        await chat.member(user, room["id"])
    for mod in (mod_late, mod_early):
        promoted = await chat.client.put(
            f"{API}/rooms/{room['id']}/members/{mod.id}/role",
            json={"role": "moderator"},
            headers=owner.auth,
        )
        assert promoted.status_code == 200

    assert (
        await chat.client.post(f"{API}/rooms/{room['id']}/leave", headers=owner.auth)
    ).status_code == 204
    roles = await chat.members(early, room["id"])
    assert roles == {early.id: "member", mod_early.id: "owner", mod_late.id: "moderator"}


async def test_owner_leaving_hands_over_to_the_first_member_then_room_empties(
    chat: ChatApp,
) -> None:
    owner, first, second = await chat.user(), await chat.user(), await chat.user()
    room = await chat.room(owner, "private")
    for user in (first, second):
        await chat.invite(owner, room["id"], user)
        assert (await chat.join(user, room["id"])).status_code == 201

    await chat.client.post(f"{API}/rooms/{room['id']}/leave", headers=owner.auth)
    assert await chat.members(first, room["id"]) == {first.id: "owner", second.id: "member"}
    await chat.client.post(f"{API}/rooms/{room['id']}/leave", headers=first.auth)
    assert await chat.members(second, room["id"]) == {second.id: "owner"}
    await chat.client.post(f"{API}/rooms/{room['id']}/leave", headers=second.auth)

    # The last member leaving leaves an empty room: kept, invisible to all but moderators.
    assert await _member_count(chat, room["id"]) == 0
    moderator = await chat.moderator()
    seen = await chat.client.get(f"{API}/rooms/{room['id']}", headers=moderator.auth)
    assert seen.status_code == 200
    assert seen.json()["member_count"] == 0
    gone = await chat.client.get(f"{API}/rooms/{room['id']}", headers=second.auth)
    assert gone.status_code == 404


async def test_concurrent_joins_keep_member_count_exact(chat: ChatApp) -> None:
    owner = await chat.user()
    users = [await chat.user() for _ in range(6)]
    room = await chat.room(owner)
    responses = await asyncio.gather(*(chat.join(user, room["id"]) for user in users))
    assert [r.status_code for r in responses] == [201] * 6
    assert await _member_count(chat, room["id"]) == 7
    leaves = await asyncio.gather(
        *(
            chat.client.post(f"{API}/rooms/{room['id']}/leave", headers=user.auth)
            for user in users[:3]
        )
    )
    assert [r.status_code for r in leaves] == [204] * 3
    assert await _member_count(chat, room["id"]) == 4


async def test_members_list_pages_in_join_order(chat: ChatApp) -> None:
    owner = await chat.user("owner")
    others = [await chat.user(f"member{n}") for n in range(4)]
    room = await chat.room(owner)
    for user in others:
        await chat.member(user, room["id"])
    url = f"{API}/rooms/{room['id']}/members"
    first = (await chat.client.get(url, params={"limit": 3}, headers=owner.auth)).json()
    assert [m["username"] for m in first["members"]] == ["owner", "member0", "member1"]
    assert first["members"][0]["role"] == "owner"
    assert first["members"][1]["muted_until"] is None
    assert first["members"][1]["joined_at"].endswith("Z")
    rest = (
        await chat.client.get(
            url, params={"limit": 3, "cursor": first["next_cursor"]}, headers=owner.auth
        )
    ).json()
    assert [m["username"] for m in rest["members"]] == ["member2", "member3"]
    assert rest["next_cursor"] is None
    offset = (await chat.client.get(url, params={"offset": 4}, headers=owner.auth)).json()
    assert [m["username"] for m in offset["members"]] == ["member3"]


# ---- invites -----------------------------------------------------------------------------


async def test_invite_accept_and_my_invites(chat: ChatApp) -> None:
    alice, bob = await chat.user("alice"), await chat.user("bob")
    room = await chat.room(alice, "private", name="secret", topic="shh")
    created = await chat.client.post(
        f"{API}/rooms/{room['id']}/invites", json={"username": "BOB"}, headers=alice.auth
    )
    assert created.status_code == 201, created.text
    invite = created.json()
    assert invite["user_id"] == bob.id
    assert invite["username"] == "bob"
    assert invite["invited_by"] == alice.id
    assert invite["room"] == {
        "id": room["id"],
        "kind": "private",
        "name": "secret",
        "topic": "shh",
        "member_count": 1,
    }

    mine = await chat.client.get(f"{API}/invites", headers=bob.auth)
    assert mine.status_code == 200
    assert [i["room"]["id"] for i in mine.json()["invites"]] == [room["id"]]
    pending = await chat.client.get(f"{API}/rooms/{room['id']}/invites", headers=alice.auth)
    assert [i["username"] for i in pending.json()["invites"]] == ["bob"]

    accepted = await chat.client.post(f"{API}/invites/{room['id']}/accept", headers=bob.auth)
    assert accepted.status_code == 200
    assert accepted.json()["membership"]["role"] == "member"
    assert accepted.json()["member_count"] == 2
    again = await chat.client.post(f"{API}/invites/{room['id']}/accept", headers=bob.auth)
    assert again.status_code == 404
    assert again.json()["code"] == "chat_invite_not_found"
    assert (await chat.client.get(f"{API}/invites", headers=bob.auth)).json()["invites"] == []


async def test_invite_errors(chat: ChatApp) -> None:
    alice, bob, carol, dave = [await chat.user() for _ in range(4)]
    invite_only = await chat.room(alice, "invite_only")
    private = await chat.room(alice, "private")
    await chat.invite(alice, invite_only["id"], bob)
    await chat.join(bob, invite_only["id"])

    # Plain members of invite-only rooms do not invite.
    by_member = await chat.invite(bob, invite_only["id"], carol)
    assert by_member.status_code == 403
    assert by_member.json()["code"] == "chat_not_room_moderator"
    # Outsiders cannot see a private room, let alone invite to it.
    outsider = await chat.invite(carol, private["id"], dave)
    assert outsider.status_code == 404
    # Members of private rooms invite.
    await chat.invite(alice, private["id"], bob)
    await chat.join(bob, private["id"])
    assert (await chat.invite(bob, private["id"], carol)).status_code == 201

    url = f"{API}/rooms/{private['id']}/invites"
    duplicate = await chat.invite(alice, private["id"], carol)
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "chat_already_invited"
    member = await chat.invite(alice, private["id"], bob)
    assert member.status_code == 409
    assert member.json()["code"] == "chat_already_member"
    unknown = await chat.client.post(url, json={"user_id": str(uuid.uuid4())}, headers=alice.auth)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "chat_user_not_found"
    nobody = await chat.client.post(url, json={"username": "nobody"}, headers=alice.auth)
    assert nobody.status_code == 404
    for body in ({}, {"user_id": bob.id, "username": "x"}, {"user_id": "nope"}):
        bad = await chat.client.post(url, json=body, headers=alice.auth)
        assert bad.status_code == 422, body

    banned = await chat.client.put(
        f"{API}/rooms/{private['id']}/bans/{dave.id}", json={}, headers=alice.auth
    )
    assert banned.status_code == 200
    refused = await chat.invite(alice, private["id"], dave)
    assert refused.status_code == 403
    assert refused.json()["code"] == "chat_banned"


async def test_decline_and_revoke(chat: ChatApp) -> None:
    alice, bob, carol, dave = [await chat.user() for _ in range(4)]
    room = await chat.room(alice, "private")
    await chat.invite(alice, room["id"], carol)
    await chat.join(carol, room["id"])
    for user in (bob, dave):
        assert (await chat.invite(carol, room["id"], user)).status_code == 201

    declined = await chat.client.post(f"{API}/invites/{room['id']}/decline", headers=bob.auth)
    assert declined.status_code == 204
    twice = await chat.client.post(f"{API}/invites/{room['id']}/decline", headers=bob.auth)
    assert twice.status_code == 404
    # Declined: the private room is gone from bob's view again.
    assert (await chat.client.get(f"{API}/rooms/{room['id']}", headers=bob.auth)).status_code == 404

    revoke_url = f"{API}/rooms/{room['id']}/invites/{dave.id}"
    await chat.invite(alice, room["id"], bob)
    await chat.join(bob, room["id"])
    by_other_member = await chat.client.delete(revoke_url, headers=bob.auth)
    assert by_other_member.status_code == 403
    by_sender = await chat.client.delete(revoke_url, headers=carol.auth)
    assert by_sender.status_code == 204
    missing = await chat.client.delete(revoke_url, headers=alice.auth)
    assert missing.status_code == 404
    assert (await chat.join(dave, room["id"])).status_code == 404

    # The owner (a moderator) revokes invites others sent.
    await chat.invite(carol, room["id"], dave)
    assert (await chat.client.delete(revoke_url, headers=alice.auth)).status_code == 204


async def test_invited_user_hears_of_it_on_the_personal_channel(chat: ChatApp) -> None:
    alice, bob = await chat.user(), await chat.user("bob")
    room = await chat.room(alice, "private", name="plans")
    await chat.deliver_events()
    before = await chat.personal(bob)
    await chat.invite(alice, room["id"], bob)
    await chat.deliver_events()
    after = await chat.personal(bob)
    assert len(after) == len(before) + 1
    data = after[-1]
    assert data["type"] == "invite.created"
    assert data["room_id"] == room["id"]
    assert data["invite"]["room"]["name"] == "plans"
    assert data["invite"]["invited_by"] == alice.id
    assert data["event_id"]


# ---- direct rooms ------------------------------------------------------------------------


async def test_direct_room_get_or_create(chat: ChatApp) -> None:
    alice, bob = await chat.user("alice"), await chat.user("bob")
    created = await chat.client.post(f"{API}/direct", json={"username": "bob"}, headers=alice.auth)
    assert created.status_code == 201, created.text
    room = created.json()
    assert room["kind"] == "direct"
    assert room["name"] is None
    assert room["member_count"] == 2
    assert room["peer_id"] == bob.id
    assert room["membership"]["role"] == "member"
    assert await chat.members(alice, room["id"]) == {alice.id: "member", bob.id: "member"}

    existing = await chat.client.post(f"{API}/direct", json={"user_id": alice.id}, headers=bob.auth)
    assert existing.status_code == 200
    assert existing.json()["id"] == room["id"]
    assert existing.json()["peer_id"] == alice.id
    mine = await chat.client.get(f"{API}/rooms", headers=bob.auth)
    assert [r["id"] for r in mine.json()["rooms"]] == [room["id"]]


async def test_direct_room_errors_and_restrictions(chat: ChatApp) -> None:
    alice, bob, carol = await chat.user("alice"), await chat.user(), await chat.user()
    url = f"{API}/direct"
    self_dm = await chat.client.post(url, json={"user_id": alice.id}, headers=alice.auth)
    assert self_dm.status_code == 422
    assert self_dm.json()["code"] == "chat_direct_self"
    by_name = await chat.client.post(url, json={"username": "ALICE"}, headers=alice.auth)
    assert by_name.status_code == 422
    unknown = await chat.client.post(url, json={"user_id": str(uuid.uuid4())}, headers=alice.auth)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "chat_user_not_found"
    for body in ({}, {"user_id": bob.id, "username": "bob"}, {"user_id": bob.id, "x": 1}):
        assert (await chat.client.post(url, json=body, headers=alice.auth)).status_code == 422

    room = (await chat.client.post(url, json={"user_id": bob.id}, headers=alice.auth)).json()
    base = f"{API}/rooms/{room['id']}"
    # Outsiders do not see it.
    assert (await chat.client.get(base, headers=carol.auth)).status_code == 404
    attempts = [
        await chat.invite(alice, room["id"], carol),
        await chat.client.post(f"{base}/leave", headers=alice.auth),
        await chat.client.delete(f"{base}/members/{bob.id}", headers=alice.auth),
        await chat.client.put(f"{base}/bans/{bob.id}", json={}, headers=alice.auth),
        await chat.client.put(
            f"{base}/members/{bob.id}/mute", json={"minutes": 5}, headers=alice.auth
        ),
        await chat.client.put(
            f"{base}/members/{bob.id}/role", json={"role": "moderator"}, headers=alice.auth
        ),
        await chat.client.patch(base, json={"name": "ours"}, headers=alice.auth),
    ]
    for response in attempts:
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "chat_direct_room"
    assert await chat.members(bob, room["id"]) == {alice.id: "member", bob.id: "member"}


async def test_concurrent_direct_creates_end_with_one_room(chat: ChatApp) -> None:
    alice, bob = await chat.user(), await chat.user()
    calls = [
        chat.client.post(f"{API}/direct", json={"user_id": peer.id}, headers=caller.auth)
        for caller, peer in [(alice, bob), (bob, alice)] * 4
    ]
    responses = await asyncio.gather(*calls)
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    async with chat.platform.database.read_only() as session:
        count = await session.scalar(
            select(func.count()).select_from(Room).where(Room.kind == "direct")
        )
    assert count == 1
    assert await _member_count(chat, responses[0].json()["id"]) == 2


async def _waiting_on_a_lock(chat: ChatApp) -> int:
    async with chat.platform.database.read_only() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return int(count or 0)


async def test_direct_create_racing_an_uncommitted_create(chat: ChatApp) -> None:
    """The loser of the race on ``direct_key`` returns the winner's room (no error)."""
    alice, bob = await chat.user(), await chat.user()
    alice_principal = Principal(subject=alice.id)
    bob_principal = Principal(subject=bob.id)
    database = chat.platform.database

    async def bob_asks() -> tuple[rooms.RoomView, bool]:
        return await database.transaction(
            lambda session: rooms.direct_room(session, bob_principal, user_id=uuid.UUID(alice.id))
        )

    async with database.unit_of_work() as session:
        first, created = await rooms.direct_room(
            session, alice_principal, user_id=uuid.UUID(bob.id)
        )
        assert created
        second = asyncio.get_running_loop().create_task(bob_asks())
        if chat.backend == "postgresql":
            # Bob's insert waits on the unique index entry of the uncommitted room; once
            # this commits it fails and the room is read back.
            await eventually_async(lambda: _waiting_on_a_lock(chat))
    other, created_again = await second
    assert not created_again
    assert other.room.id == first.room.id
    assert other.member is not None
    assert other.peer_id == uuid.UUID(alice.id)


async def eventually_async(count: Callable[[], Awaitable[int]]) -> None:
    for _ in range(500):
        if await count():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("nothing ever waited on a lock")
