"""Rooms and membership over GraphQL: the same services as REST, their errors in
``extensions.code``, one transaction per operation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engineroom.chat.rooms_router import WRITE_LIMIT
from tests.support.chat_domain import (
    API,
    POSTGRES,
    SQLITE,
    ChatApp,
    ChatUser,
    chat_app,
    database_url_for,
    settings_for,
)

ROOM_FIELDS = (
    "id kind name topic memberCount lastSeq myRole unreadCount createdAt peer { id username }"
)


@pytest.fixture(params=[SQLITE, POSTGRES])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url_for(request, tmp_path)


@pytest.fixture
async def chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatApp]:
    async with chat_app(settings_for(database_url, tmp_path)) as app:
        yield app


async def gql(chat: ChatApp, user: ChatUser | None, query: str, **variables: Any) -> dict[str, Any]:
    response = await chat.client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers=user.auth if user else {},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


CREATE = f"""
mutation($input: ChatRoomCreateInput!) {{ chatCreateRoom(input: $input) {{ {ROOM_FIELDS} }} }}
"""
UPDATE = """
mutation($id: ID!, $input: ChatRoomUpdateInput!) {
  chatUpdateRoom(id: $id, input: $input) { id name topic }
}
"""
ROOM = f"query($id: ID!) {{ chatRoom(id: $id) {{ {ROOM_FIELDS} }} }}"
JOIN = "mutation($id: ID!) { chatJoinRoom(id: $id) { id myRole memberCount unreadCount } }"
LEAVE = "mutation($id: ID!) { chatLeaveRoom(id: $id) }"
MEMBERS = """
query($roomId: ID!, $first: Int, $after: String) {
  chatMembers(roomId: $roomId, first: $first, after: $after) {
    nodes { user { id username } role joinedAt mutedUntil } nextCursor
  }
}
"""
INVITE = """
mutation($roomId: ID!, $userId: ID, $username: String) {
  chatInvite(roomId: $roomId, userId: $userId, username: $username) {
    roomId user { id username } invitedBy { id username } createdAt
  }
}
"""
ACCEPT = "mutation($roomId: ID!) { chatAcceptInvite(roomId: $roomId) { id myRole memberCount } }"
DIRECTORY = """
query($q: String, $first: Int, $after: String) {
  chatDirectory(q: $q, first: $first, after: $after) {
    nodes { name kind myRole unreadCount } nextCursor
  }
}
"""
MY_ROOMS = """
query($first: Int, $after: String) {
  chatRooms(first: $first, after: $after) { nodes { name myRole unreadCount } nextCursor }
}
"""
DIRECT = f"""
mutation($userId: ID, $username: String) {{
  chatOpenDirect(userId: $userId, username: $username) {{ {ROOM_FIELDS} }}
}}
"""


async def _create(chat: ChatApp, user: ChatUser, **fields: Any) -> dict[str, Any]:
    body = await gql(chat, user, CREATE, input={"name": "room", **fields})
    assert "errors" not in body, body
    room: dict[str, Any] = body["data"]["chatCreateRoom"]
    return room


async def test_create_read_and_update_a_room(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    room = await _create(chat, alice, name="  general ", kind="INVITE_ONLY", topic="Anything")
    assert room["name"] == "general"
    assert room["kind"] == "INVITE_ONLY"
    assert room["topic"] == "Anything"
    assert room["memberCount"] == 1
    assert room["lastSeq"] == 0
    assert room["myRole"] == "OWNER"
    assert room["unreadCount"] == 0
    assert room["peer"] is None
    assert room["createdAt"].endswith("Z")

    fetched = await gql(chat, alice, ROOM, id=room["id"])
    assert fetched["data"]["chatRoom"] == room
    rest = await chat.client.get(f"{API}/rooms/{room['id']}", headers=alice.auth)
    assert rest.json()["name"] == "general"

    renamed = await gql(chat, alice, UPDATE, id=room["id"], input={"name": "lounge"})
    assert renamed["data"]["chatUpdateRoom"] == {
        "id": room["id"],
        "name": "lounge",
        "topic": "Anything",
    }
    cleared = await gql(chat, alice, UPDATE, id=room["id"], input={"topic": None})
    assert cleared["data"]["chatUpdateRoom"]["topic"] is None
    assert cleared["data"]["chatUpdateRoom"]["name"] == "lounge"
    created = await chat.events_of("chat.room.created")
    updated = await chat.events_of("chat.room.updated")
    assert [event["room_id"] for event in created] == [room["id"]]
    assert len(updated) == 2


async def test_room_input_and_permission_errors(chat: ChatApp) -> None:
    alice, bob = await chat.user("alice"), await chat.user("bob")
    blank = await gql(chat, alice, CREATE, input={"name": "   "})
    assert codes(blank) == ["validation_failed"]
    assert "name" in blank["errors"][0]["extensions"]["fieldErrors"]
    direct = await gql(chat, alice, CREATE, input={"name": "x", "kind": "DIRECT"})
    assert codes(direct) == ["validation_failed"]
    assert "kind" in direct["errors"][0]["extensions"]["fieldErrors"]
    anonymous = await gql(chat, None, CREATE, input={"name": "x"})
    assert codes(anonymous) == ["unauthorized"]

    room = await _create(chat, alice)
    joined = await gql(chat, bob, JOIN, id=room["id"])
    assert joined["data"]["chatJoinRoom"]["myRole"] == "MEMBER"
    not_moderator = await gql(chat, bob, UPDATE, id=room["id"], input={"name": "mine"})
    assert codes(not_moderator) == ["chat_not_room_moderator"]
    null_name = await gql(chat, alice, UPDATE, id=room["id"], input={"name": None})
    assert codes(null_name) == ["validation_failed"]
    unknown = await gql(chat, alice, UPDATE, id=str(uuid.uuid4()), input={"name": "x"})
    assert codes(unknown) == ["chat_room_not_found"]
    malformed = await gql(chat, alice, UPDATE, id="not-an-id", input={"name": "x"})
    assert codes(malformed) == ["validation_failed"]
    assert malformed["errors"][0]["extensions"]["fieldErrors"] == {"id": ["is not a valid id"]}


async def test_a_hidden_or_unknown_room_reads_as_null(chat: ChatApp) -> None:
    alice, bob = await chat.user("alice"), await chat.user("bob")
    private = await _create(chat, alice, kind="PRIVATE")
    hidden = await gql(chat, bob, ROOM, id=private["id"])
    assert hidden == {"data": {"chatRoom": None}}
    unknown = await gql(chat, bob, ROOM, id=str(uuid.uuid4()))
    assert unknown == {"data": {"chatRoom": None}}
    public = await _create(chat, alice, name="open")
    seen = await gql(chat, bob, ROOM, id=public["id"])
    assert seen["data"]["chatRoom"]["myRole"] is None
    assert seen["data"]["chatRoom"]["unreadCount"] is None


async def test_join_leave_and_members(chat: ChatApp) -> None:
    alice, bob, carol = await chat.user("alice"), await chat.user("bob"), await chat.user("carol")
    room = await _create(chat, alice)
    joined = await gql(chat, bob, JOIN, id=room["id"])
    assert joined["data"]["chatJoinRoom"] == {
        "id": room["id"],
        "myRole": "MEMBER",
        "memberCount": 2,
        "unreadCount": 0,
    }
    again = await gql(chat, bob, JOIN, id=room["id"])
    assert again["data"]["chatJoinRoom"]["memberCount"] == 2

    # Readers of a public room need not be members.
    first = await gql(chat, carol, MEMBERS, roomId=room["id"], first=1)
    page = first["data"]["chatMembers"]
    assert [(m["user"]["username"], m["role"]) for m in page["nodes"]] == [("alice", "OWNER")]
    rest = await gql(chat, carol, MEMBERS, roomId=room["id"], first=1, after=page["nextCursor"])
    assert [m["user"]["id"] for m in rest["data"]["chatMembers"]["nodes"]] == [str(bob.id)]
    assert rest["data"]["chatMembers"]["nextCursor"] is None
    too_many = await gql(chat, carol, MEMBERS, roomId=room["id"], first=101)
    assert codes(too_many) == ["validation_failed"]
    bad_cursor = await gql(chat, carol, MEMBERS, roomId=room["id"], after="garbage")
    assert codes(bad_cursor) == ["chat_invalid_cursor"]

    left = await gql(chat, bob, LEAVE, id=room["id"])
    assert left == {"data": {"chatLeaveRoom": True}}
    assert await chat.events_of("chat.member.left")
    not_member = await gql(chat, bob, LEAVE, id=room["id"])
    assert codes(not_member) == ["chat_not_a_member"]

    private = await _create(chat, alice, kind="PRIVATE")
    hidden = await gql(chat, carol, MEMBERS, roomId=private["id"])
    assert codes(hidden) == ["chat_room_not_found"]
    invite_only = await _create(chat, alice, kind="INVITE_ONLY")
    refused = await gql(chat, carol, JOIN, id=invite_only["id"])
    assert codes(refused) == ["chat_invite_required"]
    outsider = await gql(chat, carol, MEMBERS, roomId=invite_only["id"])
    assert codes(outsider) == ["chat_not_a_member"]

    await chat.ban(uuid.UUID(room["id"]), carol, alice)
    banned = await gql(chat, carol, JOIN, id=room["id"])
    assert codes(banned) == ["chat_banned"]


async def test_invites(chat: ChatApp) -> None:
    alice, bob, carol = await chat.user("alice"), await chat.user("bob"), await chat.user("carol")
    room = await _create(chat, alice, kind="INVITE_ONLY")
    invited = await gql(chat, alice, INVITE, roomId=room["id"], username="bob")
    assert "errors" not in invited, invited
    invite = invited["data"]["chatInvite"]
    assert invite["roomId"] == room["id"]
    assert invite["user"] == {"id": str(bob.id), "username": "bob"}
    assert invite["invitedBy"] == {"id": str(alice.id), "username": "alice"}
    assert [e["room_id"] for e in await chat.events_of("chat.invite.created")] == [room["id"]]

    twice = await gql(chat, alice, INVITE, roomId=room["id"], userId=str(bob.id))
    assert codes(twice) == ["chat_already_invited"]
    both = await gql(chat, alice, INVITE, roomId=room["id"], userId=str(bob.id), username="bob")
    assert codes(both) == ["validation_failed"]
    neither = await gql(chat, alice, INVITE, roomId=room["id"])
    assert codes(neither) == ["validation_failed"]
    nobody = await gql(chat, alice, INVITE, roomId=room["id"], username="ghost")
    assert codes(nobody) == ["chat_user_not_found"]
    not_moderator = await gql(chat, carol, INVITE, roomId=room["id"], username="carol")
    assert codes(not_moderator) == ["chat_not_room_moderator"]

    accepted = await gql(chat, bob, ACCEPT, roomId=room["id"])
    assert accepted["data"]["chatAcceptInvite"] == {
        "id": room["id"],
        "myRole": "MEMBER",
        "memberCount": 2,
    }
    plain_member = await gql(chat, bob, INVITE, roomId=room["id"], username="carol")
    assert codes(plain_member) == ["chat_not_room_moderator"]
    member = await gql(chat, alice, INVITE, roomId=room["id"], username="bob")
    assert codes(member) == ["chat_already_member"]
    none_left = await gql(chat, bob, ACCEPT, roomId=room["id"])
    assert codes(none_left) == ["chat_invite_not_found"]


async def test_directory_and_my_rooms(chat: ChatApp) -> None:
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await _create(chat, alice, name="Alpha")
    await _create(chat, alice, name="Beta", kind="INVITE_ONLY")
    await _create(chat, alice, name="Gamma", kind="PRIVATE")

    listed = await gql(chat, bob, DIRECTORY)
    assert listed["data"]["chatDirectory"] == {
        "nodes": [
            {"name": "Beta", "kind": "INVITE_ONLY", "myRole": None, "unreadCount": None},
            {"name": "Alpha", "kind": "PUBLIC", "myRole": None, "unreadCount": None},
        ],
        "nextCursor": None,
    }
    found = await gql(chat, bob, DIRECTORY, q="ALP")
    assert [r["name"] for r in found["data"]["chatDirectory"]["nodes"]] == ["Alpha"]
    first = await gql(chat, bob, DIRECTORY, first=1)
    cursor = first["data"]["chatDirectory"]["nextCursor"]
    second = await gql(chat, bob, DIRECTORY, first=1, after=cursor)
    assert [r["name"] for r in second["data"]["chatDirectory"]["nodes"]] == ["Alpha"]
    too_long = await gql(chat, bob, DIRECTORY, q="x" * 101)
    assert codes(too_long) == ["validation_failed"]

    mine = await gql(chat, alice, MY_ROOMS)
    nodes = mine["data"]["chatRooms"]["nodes"]
    assert {r["name"] for r in nodes} == {"Alpha", "Beta", "Gamma"}
    assert {(r["myRole"], r["unreadCount"]) for r in nodes} == {("OWNER", 0)}
    assert (await gql(chat, bob, MY_ROOMS))["data"]["chatRooms"] == {
        "nodes": [],
        "nextCursor": None,
    }
    bad = await gql(chat, alice, MY_ROOMS, after="!!")
    assert codes(bad) == ["chat_invalid_cursor"]
    zero = await gql(chat, alice, MY_ROOMS, first=0)
    assert codes(zero) == ["validation_failed"]


async def test_open_a_direct_room(chat: ChatApp) -> None:
    alice, bob = await chat.user("alice"), await chat.user("bob")
    opened = await gql(chat, alice, DIRECT, username="bob")
    assert "errors" not in opened, opened
    room = opened["data"]["chatOpenDirect"]
    assert room["kind"] == "DIRECT"
    assert room["name"] is None
    assert room["memberCount"] == 2
    assert room["peer"] == {"id": str(bob.id), "username": "bob"}
    back = await gql(chat, bob, DIRECT, userId=str(alice.id))
    assert back["data"]["chatOpenDirect"]["id"] == room["id"]
    assert back["data"]["chatOpenDirect"]["peer"]["username"] == "alice"

    myself = await gql(chat, alice, DIRECT, username="alice")
    assert codes(myself) == ["chat_direct_self"]
    nobody = await gql(chat, alice, DIRECT, userId=str(uuid.uuid4()))
    assert codes(nobody) == ["chat_user_not_found"]
    neither = await gql(chat, alice, DIRECT)
    assert codes(neither) == ["validation_failed"]
    no_leaving = await gql(chat, alice, LEAVE, id=room["id"])
    assert codes(no_leaving) == ["chat_direct_room"]


async def test_a_failed_operation_rolls_back_its_earlier_writes(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    body = await gql(
        chat,
        alice,
        """mutation($missing: ID!) {
             made: chatCreateRoom(input: {name: "kept?"}) { id }
             failed: chatJoinRoom(id: $missing) { id }
           }""",
        missing=str(uuid.uuid4()),
    )
    # The room was created, then the second field failed: the whole operation is undone.
    assert codes(body) == ["chat_room_not_found"]
    assert body["data"] is None
    mine = await gql(chat, alice, MY_ROOMS)
    assert mine["data"]["chatRooms"]["nodes"] == []
    assert await chat.events_of("chat.room.created") == []


async def test_room_writes_share_the_rest_rate_limit(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    limit = int(WRITE_LIMIT.split("/")[0])
    for _ in range(limit):
        result = await chat.platform.rate_limiter.hit(
            WRITE_LIMIT, "chat.rooms.write", f"user:{alice.id}"
        )
        assert result.allowed
    refused = await gql(chat, alice, CREATE, input={"name": "one too many"})
    assert codes(refused) == ["rate_limited"]
    rest = await chat.client.post(f"{API}/rooms", json={"name": "rest"}, headers=alice.auth)
    assert rest.status_code == 429
    direct = await gql(chat, alice, DIRECT, username="alice")
    assert codes(direct) == ["rate_limited"]
