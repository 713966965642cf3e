"""Kick, ban, mute, roles, ownership, platform moderators and deleted accounts."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from engineroom.chat import access
from engineroom.chat.errors import MutedInRoom
from engineroom.chat.membership import forget_user
from engineroom.chat.models import Ban, Invite
from engineroom.core.auth import Principal
from engineroom.core.clock import utcnow
from tests.support.chat_domain import API, rooms_database_fixture, rooms_fixture  # noqa: F401
from tests.support.chat_domain import RoomsApp as ChatApp
from tests.support.chat_domain import RoomsUser as User
from tests.support.identity import PASSWORD


async def _promote(chat: ChatApp, owner: User, room_id: str, user: User) -> None:
    response = await chat.client.put(
        f"{API}/rooms/{room_id}/members/{user.id}/role",
        json={"role": "moderator"},
        headers=owner.auth,
    )
    assert response.status_code == 200, response.text


async def _staffed_room(chat: ChatApp, kind: str = "public") -> tuple[dict[str, str], list[User]]:
    """A room with its owner, two moderators and two members."""
    owner, mod, mod2, member, member2 = [await chat.user() for _ in range(5)]
    room = await chat.room(owner, kind)
    for user in (mod, mod2, member, member2):
        if kind != "public":
            await chat.invite(owner, room["id"], user)
        assert (await chat.join(user, room["id"])).status_code == 201
    await _promote(chat, owner, room["id"], mod)
    await _promote(chat, owner, room["id"], mod2)
    return room, [owner, mod, mod2, member, member2]


# ---- kick --------------------------------------------------------------------------------


async def test_kick_rules(chat: ChatApp) -> None:
    room, (owner, mod, mod2, member, member2) = await _staffed_room(chat)
    base = f"{API}/rooms/{room['id']}/members"

    by_member = await chat.client.delete(f"{base}/{member2.id}", headers=member.auth)
    assert by_member.status_code == 403
    assert by_member.json()["code"] == "chat_not_room_moderator"
    refusals = [
        (mod, owner, "Nobody may kick the room's owner."),
        (mod, mod2, "Only the room's owner may kick a moderator."),
        (mod, mod, "You cannot kick yourself."),
    ]
    for actor, target, message in refusals:
        refused = await chat.client.delete(f"{base}/{target.id}", headers=actor.auth)
        assert refused.status_code == 403
        assert refused.json()["code"] == "chat_moderation_refused"
        assert refused.json()["detail"] == message
    missing = await chat.client.delete(f"{base}/{uuid.uuid4()}", headers=mod.auth)
    assert missing.status_code == 404
    assert missing.json()["code"] == "chat_member_not_found"

    assert (await chat.client.delete(f"{base}/{member.id}", headers=mod.auth)).status_code == 204
    assert (await chat.client.delete(f"{base}/{mod2.id}", headers=owner.auth)).status_code == 204
    roles = await chat.members(owner, room["id"])
    assert roles == {owner.id: "owner", mod.id: "moderator", member2.id: "member"}
    fetched = await chat.client.get(f"{API}/rooms/{room['id']}", headers=owner.auth)
    assert fetched.json()["member_count"] == 3
    # Kicked from a public room: may come back.
    assert (await chat.join(member, room["id"])).status_code == 201

    await chat.deliver_events()
    kicked = [e for e in await chat.published(f"room:{room['id']}") if e["type"] == "member.kicked"]
    assert [(e["user_id"], e["by"]) for e in kicked] == [(member.id, mod.id), (mod2.id, owner.id)]
    told = [e["type"] for e in await chat.personal(member)]
    assert "member.kicked" in told


async def test_kicked_from_a_private_room_cannot_come_back(chat: ChatApp) -> None:
    room, (owner, _, _, member, _) = await _staffed_room(chat, "private")
    url = f"{API}/rooms/{room['id']}"
    assert (
        await chat.client.delete(f"{url}/members/{member.id}", headers=owner.auth)
    ).status_code == 204
    assert (await chat.client.get(url, headers=member.auth)).status_code == 404
    assert (await chat.join(member, room["id"])).status_code == 404


# ---- ban ---------------------------------------------------------------------------------


async def test_ban_and_unban(chat: ChatApp) -> None:
    room, (owner, mod, mod2, member, member2) = await _staffed_room(chat)
    outsider = await chat.user()
    bans = f"{API}/rooms/{room['id']}/bans"

    banned = await chat.client.put(
        f"{bans}/{member.id}", json={"reason": "spam", "minutes": 60}, headers=mod.auth
    )
    assert banned.status_code == 200, banned.text
    body = banned.json()
    assert (body["user_id"], body["banned_by"], body["reason"]) == (member.id, mod.id, "spam")
    expires = body["expires_at"]
    assert expires is not None
    assert expires > body["created_at"]
    assert member.id not in await chat.members(owner, room["id"])
    rejoin = await chat.join(member, room["id"])
    assert rejoin.status_code == 403
    assert rejoin.json()["code"] == "chat_banned"
    # A ban also ends reading a public room.
    reading = await chat.client.get(f"{API}/rooms/{room['id']}/members", headers=member.auth)
    assert reading.status_code == 403

    forever = await chat.client.put(f"{bans}/{outsider.id}", json={}, headers=mod.auth)
    assert forever.status_code == 200
    assert forever.json()["expires_at"] is None
    assert (await chat.join(outsider, room["id"])).status_code == 403

    listed = await chat.client.get(bans, headers=mod.auth)
    assert listed.status_code == 200
    assert [b["user_id"] for b in listed.json()["bans"]] == [outsider.id, member.id]
    assert (await chat.client.get(bans, headers=member2.auth)).status_code == 403

    for actor, target in ((mod, owner), (mod, mod2), (owner, owner)):
        refused = await chat.client.put(f"{bans}/{target.id}", json={}, headers=actor.auth)
        assert refused.status_code == 403
        assert refused.json()["code"] == "chat_moderation_refused"
    unknown = await chat.client.put(f"{bans}/{uuid.uuid4()}", json={}, headers=mod.auth)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "chat_user_not_found"
    for body in ({"minutes": 0}, {"reason": "x" * 501}, {"until": "never"}):
        bad = await chat.client.put(f"{bans}/{member2.id}", json=body, headers=mod.auth)
        assert bad.status_code == 422, body

    assert (await chat.client.delete(f"{bans}/{member.id}", headers=mod2.auth)).status_code == 204
    again = await chat.client.delete(f"{bans}/{member.id}", headers=mod2.auth)
    assert again.status_code == 404
    assert again.json()["code"] == "chat_ban_not_found"
    assert (await chat.join(member, room["id"])).status_code == 201
    by_member = await chat.client.delete(f"{bans}/{outsider.id}", headers=member2.auth)
    assert by_member.status_code == 403


async def test_ban_withdraws_a_pending_invite(chat: ChatApp) -> None:
    owner, guest = await chat.user(), await chat.user()
    room = await chat.room(owner, "invite_only")
    await chat.invite(owner, room["id"], guest)
    await chat.client.put(f"{API}/rooms/{room['id']}/bans/{guest.id}", json={}, headers=owner.auth)
    assert (await chat.client.get(f"{API}/invites", headers=guest.auth)).json()["invites"] == []
    accepted = await chat.client.post(f"{API}/invites/{room['id']}/accept", headers=guest.auth)
    assert accepted.status_code == 404


async def test_an_expired_ban_no_longer_keeps_anyone_out(chat: ChatApp) -> None:
    owner, member = await chat.user(), await chat.user()
    room = await chat.room(owner)
    await chat.member(member, room["id"])
    bans = f"{API}/rooms/{room['id']}/bans"
    await chat.client.put(f"{bans}/{member.id}", json={"minutes": 5}, headers=owner.auth)
    assert (await chat.join(member, room["id"])).status_code == 403

    async with chat.platform.database.unit_of_work() as session:
        await session.execute(
            update(Ban)
            .where(Ban.user_id == uuid.UUID(member.id))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert (await chat.client.get(bans, headers=owner.auth)).json()["bans"] == []
    assert (await chat.join(member, room["id"])).status_code == 201
    async with chat.platform.database.read_only() as session:
        assert await session.get(Ban, (uuid.UUID(room["id"]), uuid.UUID(member.id))) is None
    # Lifting a ban that expired: there is none.
    expired_unban = await chat.client.delete(f"{bans}/{member.id}", headers=owner.auth)
    assert expired_unban.status_code == 404


# ---- mute --------------------------------------------------------------------------------


async def _writable(chat: ChatApp, user: User, room_id: str) -> None:
    async with chat.platform.database.read_only() as session:
        await access.writable_room(session, uuid.UUID(room_id), Principal(subject=user.id))


async def test_mute_keeps_a_member_from_writing(chat: ChatApp) -> None:
    room, (owner, mod, mod2, member, _) = await _staffed_room(chat)
    base = f"{API}/rooms/{room['id']}/members"
    await _writable(chat, member, room["id"])

    before = utcnow()
    muted = await chat.client.put(
        f"{base}/{member.id}/mute", json={"minutes": 10}, headers=mod.auth
    )
    assert muted.status_code == 200, muted.text
    assert muted.json()["user_id"] == member.id
    until = muted.json()["muted_until"]
    ends = datetime.fromisoformat(until.replace("Z", "+00:00"))
    assert before + timedelta(minutes=10) <= ends <= utcnow() + timedelta(minutes=10)
    with pytest.raises(MutedInRoom):
        await _writable(chat, member, room["id"])
    listed = await chat.client.get(base, headers=member.auth)
    assert {m["user_id"]: m["muted_until"] for m in listed.json()["members"]}[member.id] == until

    unmuted = await chat.client.delete(f"{base}/{member.id}/mute", headers=mod.auth)
    assert unmuted.status_code == 200
    assert unmuted.json()["muted_until"] is None
    await _writable(chat, member, room["id"])

    refused = await chat.client.put(
        f"{base}/{owner.id}/mute", json={"minutes": 1}, headers=mod.auth
    )
    assert refused.status_code == 403
    peer = await chat.client.put(f"{base}/{mod2.id}/mute", json={"minutes": 1}, headers=mod.auth)
    assert peer.status_code == 403
    by_owner = await chat.client.put(
        f"{base}/{mod2.id}/mute", json={"minutes": 1}, headers=owner.auth
    )
    assert by_owner.status_code == 200
    for body in ({"minutes": 0}, {}, {"minutes": 366 * 24 * 60 + 1}):
        bad = await chat.client.put(f"{base}/{member.id}/mute", json=body, headers=mod.auth)
        assert bad.status_code == 422, body
    stranger = await chat.client.put(
        f"{base}/{uuid.uuid4()}/mute", json={"minutes": 1}, headers=mod.auth
    )
    assert stranger.status_code == 404

    await chat.deliver_events()
    types = [e["type"] for e in await chat.published(f"room:{room['id']}")]
    assert types.count("member.muted") == 2
    assert types.count("member.unmuted") == 1


# ---- roles and ownership -----------------------------------------------------------------


async def test_only_the_owner_changes_roles(chat: ChatApp) -> None:
    room, (owner, mod, mod2, member, _) = await _staffed_room(chat)
    base = f"{API}/rooms/{room['id']}/members"
    by_mod = await chat.client.put(
        f"{base}/{member.id}/role", json={"role": "moderator"}, headers=mod.auth
    )
    assert by_mod.status_code == 403
    assert by_mod.json()["code"] == "chat_not_room_owner"
    own = await chat.client.put(
        f"{base}/{owner.id}/role", json={"role": "member"}, headers=owner.auth
    )
    assert own.status_code == 403
    assert own.json()["code"] == "chat_moderation_refused"
    as_owner = await chat.client.put(
        f"{base}/{member.id}/role", json={"role": "owner"}, headers=owner.auth
    )
    assert as_owner.status_code == 422
    missing = await chat.client.put(
        f"{base}/{uuid.uuid4()}/role", json={"role": "member"}, headers=owner.auth
    )
    assert missing.status_code == 404

    demoted = await chat.client.put(
        f"{base}/{mod2.id}/role", json={"role": "member"}, headers=owner.auth
    )
    assert demoted.status_code == 200
    assert demoted.json()["role"] == "member"
    # Now a plain member, the former moderator can be kicked by a moderator.
    assert (await chat.client.delete(f"{base}/{mod2.id}", headers=mod.auth)).status_code == 204


async def test_transfer_ownership(chat: ChatApp) -> None:
    room, (owner, mod, _, member, _) = await _staffed_room(chat)
    url = f"{API}/rooms/{room['id']}/transfer"
    by_mod = await chat.client.post(url, json={"user_id": member.id}, headers=mod.auth)
    assert by_mod.status_code == 403
    to_self = await chat.client.post(url, json={"user_id": owner.id}, headers=owner.auth)
    assert to_self.status_code == 403
    outsider = await chat.client.post(url, json={"user_id": str(uuid.uuid4())}, headers=owner.auth)
    assert outsider.status_code == 404

    moved = await chat.client.post(url, json={"user_id": member.id}, headers=owner.auth)
    assert moved.status_code == 200
    assert moved.json()["membership"]["role"] == "moderator"
    roles = await chat.members(member, room["id"])
    assert (roles[member.id], roles[owner.id]) == ("owner", "moderator")
    # The new owner may now act on the former owner, a moderator.
    kicked = await chat.client.delete(
        f"{API}/rooms/{room['id']}/members/{owner.id}", headers=member.auth
    )
    assert kicked.status_code == 204


# ---- platform moderators -----------------------------------------------------------------


async def test_platform_moderators_moderate_every_room(chat: ChatApp) -> None:
    room, (owner, mod, _, member, _) = await _staffed_room(chat, "private")
    platform_mod = await chat.moderator()
    url = f"{API}/rooms/{room['id']}"

    seen = await chat.client.get(url, headers=platform_mod.auth)
    assert seen.status_code == 200
    assert seen.json()["membership"] is None
    assert (await chat.client.get(f"{url}/members", headers=platform_mod.auth)).status_code == 200
    muted = await chat.client.put(
        f"{url}/members/{member.id}/mute", json={"minutes": 3}, headers=platform_mod.auth
    )
    assert muted.status_code == 200
    # Above room moderators, below the owner.
    assert (
        await chat.client.put(f"{url}/bans/{mod.id}", json={}, headers=platform_mod.auth)
    ).status_code == 200
    owner_kick = await chat.client.delete(f"{url}/members/{owner.id}", headers=platform_mod.auth)
    assert owner_kick.status_code == 403
    roles = await chat.client.put(
        f"{url}/members/{member.id}/role", json={"role": "moderator"}, headers=platform_mod.auth
    )
    assert roles.status_code == 403
    assert (await chat.client.delete(url, headers=platform_mod.auth)).status_code == 204
    assert (await chat.client.get(url, headers=owner.auth)).status_code == 404


# ---- deleted accounts --------------------------------------------------------------------


async def test_deleted_account_leaves_every_room(chat: ChatApp) -> None:
    alice, bob, carol = await chat.user("alice"), await chat.user("bob"), await chat.user("carol")
    owned = await chat.room(alice, name="alice's")
    for user in (bob, carol):
        await chat.member(user, owned["id"])
    await _promote(chat, alice, owned["id"], carol)
    elsewhere = await chat.room(bob, "private")
    await chat.invite(bob, elsewhere["id"], alice)
    banned_from = await chat.room(carol)
    await chat.client.put(
        f"{API}/rooms/{banned_from['id']}/bans/{alice.id}", json={}, headers=carol.auth
    )
    direct = await chat.client.post(f"{API}/direct", json={"user_id": bob.id}, headers=alice.auth)
    await chat.deliver_events()

    deleted = await chat.client.post(
        "/api/v1/identity/me/delete", json={"password": PASSWORD}, headers=alice.auth
    )
    assert deleted.status_code == 204, deleted.text
    await chat.deliver_events()

    assert await chat.members(bob, owned["id"]) == {bob.id: "member", carol.id: "owner"}
    room = await chat.client.get(f"{API}/rooms/{owned['id']}", headers=bob.auth)
    assert room.json()["member_count"] == 2
    assert await chat.members(bob, direct.json()["id"]) == {bob.id: "member"}
    async with chat.platform.database.read_only() as session:
        alice_id = uuid.UUID(alice.id)
        assert await session.get(Invite, (uuid.UUID(elsewhere["id"]), alice_id)) is None
        assert await session.get(Ban, (uuid.UUID(banned_from["id"]), alice_id)) is None
    live = await chat.published(f"room:{owned['id']}")
    left = [e for e in live if e["type"] == "member.left"]
    assert left[-1]["user_id"] == alice.id
    assert left[-1]["reason"] == "account_deleted"
    assert left[-1]["new_owner_id"] == carol.id
    assert any(e["type"] == "member.role_changed" and e["user_id"] == carol.id for e in live)
    # Delivered again (at least once), the handler finds nothing left to do.
    async with chat.platform.database.unit_of_work() as session:
        await forget_user(session, alice_id)
    assert await chat.members(bob, owned["id"]) == {bob.id: "member", carol.id: "owner"}
