"""Messages, reactions, threads, search and unread counts over GraphQL: the same services
and cursors as REST, their errors in ``extensions.code``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chat_domain import (
    API,
    POSTGRES,
    SQLITE,
    ChatApp,
    ChatUser,
    chat_app,
    database_url_for,
    messages_settings,
    settings_for,
)

MESSAGE = """
id roomId seq body threadRootId replyCount lastReplyAt createdAt editedAt deleted
author { id username } mentions { id username }
attachments { url name contentType size } reactions { emoji count me }
"""
SEND = f"""
mutation($roomId: ID!, $input: ChatMessageInput!) {{
  chatSendMessage(roomId: $roomId, input: $input) {{ {MESSAGE} }}
}}
"""
EDIT = f"""
mutation($id: ID!, $body: String!) {{ chatEditMessage(id: $id, body: $body) {{ {MESSAGE} }} }}
"""
DELETE = "mutation($id: ID!) { chatDeleteMessage(id: $id) }"
REACT = """
mutation($id: ID!, $emoji: String!) {
  chatReact(messageId: $id, emoji: $emoji) { id reactions { emoji count me } }
}
"""
UNREACT = """
mutation($id: ID!, $emoji: String!) {
  chatUnreact(messageId: $id, emoji: $emoji) { id reactions { emoji count me } }
}
"""
HISTORY = """
query($roomId: ID!, $before: ID, $after: ID, $first: Int) {
  chatMessages(roomId: $roomId, before: $before, after: $after, first: $first) {
    edges { cursor node { id seq body deleted author { username } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
THREAD = """
query($id: ID!, $after: ID, $first: Int) {
  chatThread(messageId: $id, after: $after, first: $first) {
    root { id body replyCount }
    replies { edges { node { body threadRootId } } pageInfo { hasNextPage endCursor } }
  }
}
"""
SEARCH = """
query($q: String!, $roomId: ID) { chatSearch(q: $q, roomId: $roomId) { body roomId } }
"""
UNREAD = """
query {
  chatUnread { rooms { roomId lastReadSeq lastSeq unread mentions } unread mentions }
  chatRooms { nodes { id unreadCount mentionCount lastReadSeq } }
}
"""
MARK = """
mutation($roomId: ID!, $messageId: ID, $seq: Int) {
  chatMarkRead(roomId: $roomId, messageId: $messageId, seq: $seq) {
    roomId lastReadSeq lastSeq unread mentions
  }
}
"""


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


async def send(chat: ChatApp, user: ChatUser, room: uuid.UUID, **fields: Any) -> dict[str, Any]:
    body = await gql(chat, user, SEND, roomId=str(room), input=fields)
    assert "errors" not in body, body
    message: dict[str, Any] = body["data"]["chatSendMessage"]
    return message


async def test_send_edit_and_delete(chat: ChatApp) -> None:
    alice, bob = await chat.user("alice"), await chat.user("bob")
    room = await chat.room(alice, members=[bob])
    # The largest size allowed by default is past GraphQL's Int (2^31 - 1).
    attachment = {"url": "https://example.com/big.iso", "name": "big.iso", "size": 2**31}
    message = await send(chat, alice, room, body="hi @bob", attachments=[attachment])
    assert message["seq"] == 1
    assert message["roomId"] == str(room)
    assert message["author"] == {"id": str(alice.id), "username": "alice"}
    assert message["mentions"] == [{"id": str(bob.id), "username": "bob"}]
    assert message["attachments"] == [{**attachment, "contentType": None}]
    assert message["reactions"] == []
    assert message["deleted"] is False
    assert message["createdAt"].endswith("Z")
    sent = await chat.events_of("chat.message.sent")
    assert [event["message_id"] for event in sent] == [message["id"]]
    assert (await chat.history(bob, room))["messages"][0]["body"] == "hi @bob"

    reply = await send(chat, bob, room, body="a reply", threadRootId=message["id"])
    assert reply["threadRootId"] == message["id"]
    assert reply["seq"] == 2

    edited = await gql(chat, alice, EDIT, id=message["id"], body="hello @bob")
    assert edited["data"]["chatEditMessage"]["body"] == "hello @bob"
    assert edited["data"]["chatEditMessage"]["editedAt"] is not None
    not_author = await gql(chat, bob, EDIT, id=message["id"], body="mine now")
    assert codes(not_author) == ["chat_not_message_author"]
    not_deleter = await gql(chat, bob, DELETE, id=message["id"])
    assert codes(not_deleter) == ["chat_not_message_author"]

    deleted = await gql(chat, alice, DELETE, id=message["id"])
    assert deleted == {"data": {"chatDeleteMessage": True}}
    assert len(await chat.events_of("chat.message.deleted")) == 1
    page = await gql(chat, bob, HISTORY, roomId=str(room))
    node = page["data"]["chatMessages"]["edges"][0]["node"]
    assert (node["id"], node["deleted"], node["body"]) == (message["id"], True, "")
    tombstone = await gql(chat, alice, EDIT, id=message["id"], body="back")
    assert codes(tombstone) == ["chat_message_deleted"]
    unknown = await gql(chat, alice, DELETE, id=str(uuid.uuid4()))
    assert codes(unknown) == ["chat_message_not_found"]


async def test_sending_refused(chat: ChatApp) -> None:
    alice, bob, carol = await chat.user("alice"), await chat.user("bob"), await chat.user("carol")
    room = await chat.room(alice, members=[bob])
    other = await chat.room(alice)
    private = await chat.room(alice, kind="private")

    async def refused(user: ChatUser, room_id: Any, **fields: Any) -> dict[str, Any]:
        body = await gql(chat, user, SEND, roomId=str(room_id), input={"body": "x", **fields})
        assert body["data"] is None, body
        return body

    assert codes(await refused(carol, room)) == ["chat_not_a_member"]
    assert codes(await refused(carol, private)) == ["chat_room_not_found"]
    assert codes(await refused(alice, uuid.uuid4())) == ["chat_room_not_found"]
    assert codes(await refused(alice, "nope")) == ["validation_failed"]
    assert codes(await refused(alice, room, body="   ")) == ["chat_invalid_message"]
    assert codes(await refused(alice, room, body="x" * 4001)) == ["chat_message_too_long"]
    bad_url = await refused(alice, room, attachments=[{"url": "javascript:alert(1)"}])
    assert codes(bad_url) == ["chat_invalid_message"]
    assert "attachments.0.url" in bad_url["errors"][0]["extensions"]["fieldErrors"]
    bad_type = await refused(alice, room, attachments=[{"url": "https://x.io", "contentType": "?"}])
    assert codes(bad_type) == ["validation_failed"]
    assert "attachments.0.contentType" in bad_type["errors"][0]["extensions"]["fieldErrors"]
    elsewhere = await send(chat, alice, other, body="elsewhere")
    wrong_thread = await refused(alice, room, threadRootId=elsewhere["id"])
    assert codes(wrong_thread) == ["chat_invalid_message"]
    assert codes(await refused(None, room)) == ["unauthorized"]

    await chat.mute(room, bob)
    assert codes(await refused(bob, room)) == ["chat_muted"]
    await chat.ban(room, bob, alice)
    assert codes(await refused(bob, room)) == ["chat_banned"]


async def test_history_is_a_connection_on_the_rest_cursors(chat: ChatApp) -> None:
    alice, carol = await chat.user("alice"), await chat.user("carol")
    room = await chat.room(alice)
    sent = [await send(chat, alice, room, body=f"message {n}") for n in range(1, 8)]

    def seqs(body: dict[str, Any]) -> list[int]:
        return [edge["node"]["seq"] for edge in body["data"]["chatMessages"]["edges"]]

    first = await gql(chat, alice, HISTORY, roomId=str(room), first=3)
    assert seqs(first) == [7, 6, 5]
    info = first["data"]["chatMessages"]["pageInfo"]
    assert info == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": sent[6]["id"],
        "endCursor": sent[4]["id"],
    }
    edges = first["data"]["chatMessages"]["edges"]
    assert [edge["cursor"] for edge in edges] == [edge["node"]["id"] for edge in edges]
    second = await gql(chat, alice, HISTORY, roomId=str(room), first=3, before=info["endCursor"])
    assert seqs(second) == [4, 3, 2]
    rest = await chat.history(alice, room, before=info["endCursor"], limit=3)
    assert [m["seq"] for m in rest["messages"]] == [4, 3, 2]
    end = second["data"]["chatMessages"]["pageInfo"]["endCursor"]
    last = await gql(chat, alice, HISTORY, roomId=str(room), first=3, before=end)
    assert seqs(last) == [1]
    assert last["data"]["chatMessages"]["pageInfo"]["hasNextPage"] is False
    assert last["data"]["chatMessages"]["pageInfo"]["hasPreviousPage"] is True
    forwards = await gql(chat, alice, HISTORY, roomId=str(room), first=3, after=sent[0]["id"])
    assert seqs(forwards) == [2, 3, 4]
    # Anyone signed in reads a public room.
    assert seqs(await gql(chat, carol, HISTORY, roomId=str(room), first=1)) == [7]

    both = await gql(chat, alice, HISTORY, roomId=str(room), before=end, after=end)
    assert codes(both) == ["chat_invalid_cursor"]
    other = await chat.room(alice)
    foreign = await send(chat, alice, other, body="other room")
    wrong = await gql(chat, alice, HISTORY, roomId=str(room), before=foreign["id"])
    assert codes(wrong) == ["chat_invalid_cursor"]
    assert codes(await gql(chat, alice, HISTORY, roomId=str(room), first=101)) == [
        "validation_failed"
    ]
    invite_only = await chat.room(alice, kind="invite_only")
    assert codes(await gql(chat, carol, HISTORY, roomId=str(invite_only))) == ["chat_not_a_member"]
    private = await chat.room(alice, kind="private")
    assert codes(await gql(chat, carol, HISTORY, roomId=str(private))) == ["chat_room_not_found"]


async def test_threads(chat: ChatApp) -> None:
    alice, bob = await chat.user("alice"), await chat.user("bob")
    room = await chat.room(alice, members=[bob])
    root = await send(chat, alice, room, body="root")
    replies = [
        await send(chat, bob, room, body=f"reply {n}", threadRootId=root["id"]) for n in (1, 2, 3)
    ]
    # Asked from a reply, the thread is its root's; replies come oldest first after a cursor.
    body = await gql(chat, alice, THREAD, id=replies[1]["id"], after=root["id"], first=2)
    thread = body["data"]["chatThread"]
    assert thread["root"] == {"id": root["id"], "body": "root", "replyCount": 3}
    assert [e["node"]["body"] for e in thread["replies"]["edges"]] == ["reply 1", "reply 2"]
    assert {e["node"]["threadRootId"] for e in thread["replies"]["edges"]} == {root["id"]}
    assert thread["replies"]["pageInfo"]["hasNextPage"] is True
    history = await gql(chat, alice, HISTORY, roomId=str(room))
    assert [e["node"]["body"] for e in history["data"]["chatMessages"]["edges"]] == ["root"]
    missing = await gql(chat, alice, THREAD, id=str(uuid.uuid4()))
    assert codes(missing) == ["chat_message_not_found"]
    outsider = await chat.user("carol")
    private = await chat.room(alice, kind="private")
    hidden = await send(chat, alice, private, body="secret")
    assert codes(await gql(chat, outsider, THREAD, id=hidden["id"])) == ["chat_message_not_found"]


async def test_reactions(chat: ChatApp) -> None:
    alice, bob, carol = await chat.user("alice"), await chat.user("bob"), await chat.user("carol")
    room = await chat.room(alice, members=[bob])
    message = await send(chat, alice, room, body="react to me")

    first = await gql(chat, bob, REACT, id=message["id"], emoji="👍")
    assert first["data"]["chatReact"]["reactions"] == [{"emoji": "👍", "count": 1, "me": True}]
    again = await gql(chat, bob, REACT, id=message["id"], emoji="👍")
    assert again["data"]["chatReact"]["reactions"] == [{"emoji": "👍", "count": 1, "me": True}]
    seen = await gql(chat, alice, REACT, id=message["id"], emoji="🎉")
    assert seen["data"]["chatReact"]["reactions"] == [
        {"emoji": "👍", "count": 1, "me": False},
        {"emoji": "🎉", "count": 1, "me": True},
    ]
    assert len(await chat.events_of("chat.reaction.added")) == 2
    taken = await gql(chat, bob, UNREACT, id=message["id"], emoji="👍")
    assert taken["data"]["chatUnreact"]["reactions"] == [{"emoji": "🎉", "count": 1, "me": False}]
    assert len(await chat.events_of("chat.reaction.removed")) == 1

    spaced = await gql(chat, bob, REACT, id=message["id"], emoji="a b")
    assert codes(spaced) == ["chat_invalid_reaction"]
    outsider = await gql(chat, carol, REACT, id=message["id"], emoji="👍")
    assert codes(outsider) == ["chat_not_a_member"]
    unknown = await gql(chat, bob, REACT, id=str(uuid.uuid4()), emoji="👍")
    assert codes(unknown) == ["chat_message_not_found"]
    await gql(chat, alice, DELETE, id=message["id"])
    on_tombstone = await gql(chat, bob, REACT, id=message["id"], emoji="👍")
    assert codes(on_tombstone) == ["chat_message_deleted"]


async def test_search(chat: ChatApp) -> None:
    alice, bob = await chat.user("alice"), await chat.user("bob")
    room = await chat.room(alice, members=[bob])
    other = await chat.room(alice, members=[bob])
    await send(chat, alice, room, body="the rocket launched")
    await send(chat, alice, other, body="a rocket landed")
    await send(chat, alice, room, body="bananas")

    found = await gql(chat, bob, SEARCH, q="rock")
    assert sorted(m["body"] for m in found["data"]["chatSearch"]) == [
        "a rocket landed",
        "the rocket launched",
    ]
    one_room = await gql(chat, bob, SEARCH, q="rocket", roomId=str(other))
    assert one_room["data"]["chatSearch"] == [{"body": "a rocket landed", "roomId": str(other)}]
    assert codes(await gql(chat, bob, SEARCH, q="")) == ["validation_failed"]
    assert codes(await gql(chat, bob, SEARCH, q="x" * 501)) == ["validation_failed"]
    carol = await chat.user("carol")
    assert (await gql(chat, carol, SEARCH, q="rocket"))["data"]["chatSearch"] == []
    private = await chat.room(alice, kind="private")
    hidden = await gql(chat, carol, SEARCH, q="rocket", roomId=str(private))
    assert codes(hidden) == ["chat_room_not_found"]


async def test_unread_counts_and_marking_read(chat: ChatApp) -> None:
    alice, bob, carol = await chat.user("alice"), await chat.user("bob"), await chat.user("carol")
    room = await chat.room(alice, members=[bob])
    quiet = await chat.room(alice)
    sent = [
        await send(chat, bob, room, body="one"),
        await send(chat, bob, room, body="two @alice"),
        await send(chat, bob, room, body="three"),
    ]
    body = await gql(chat, alice, UNREAD)
    unread = body["data"]["chatUnread"]
    assert (unread["unread"], unread["mentions"]) == (3, 1)
    by_room = {state["roomId"]: state for state in unread["rooms"]}
    assert by_room[str(room)] == {
        "roomId": str(room),
        "lastReadSeq": 0,
        "lastSeq": 3,
        "unread": 3,
        "mentions": 1,
    }
    assert by_room[str(quiet)]["unread"] == 0
    rooms = {r["id"]: r for r in body["data"]["chatRooms"]["nodes"]}
    assert rooms[str(room)] == {
        "id": str(room),
        "unreadCount": 3,
        "mentionCount": 1,
        "lastReadSeq": 0,
    }

    marked = await gql(chat, alice, MARK, roomId=str(room), messageId=sent[1]["id"])
    assert marked["data"]["chatMarkRead"] == {
        "roomId": str(room),
        "lastReadSeq": 2,
        "lastSeq": 3,
        "unread": 1,
        "mentions": 0,
    }
    assert [e["last_read_seq"] for e in await chat.events_of("chat.read.updated")] == [2]
    backwards = await gql(chat, alice, MARK, roomId=str(room), seq=1)
    assert backwards["data"]["chatMarkRead"]["lastReadSeq"] == 2
    rest = await chat.client.get(f"{API}/unread", headers=alice.auth)
    assert rest.json()["unread"] == 1

    past = await gql(chat, alice, MARK, roomId=str(room), seq=99)
    assert codes(past) == ["chat_read_position_out_of_range"]
    both = await gql(chat, alice, MARK, roomId=str(room), seq=1, messageId=sent[0]["id"])
    assert codes(both) == ["validation_failed"]
    neither = await gql(chat, alice, MARK, roomId=str(room))
    assert codes(neither) == ["validation_failed"]
    elsewhere = await gql(chat, alice, MARK, roomId=str(quiet), messageId=sent[0]["id"])
    assert codes(elsewhere) == ["chat_message_not_found"]
    outsider = await gql(chat, carol, MARK, roomId=str(room), seq=1)
    assert codes(outsider) == ["chat_not_a_member"]
    assert codes(await gql(chat, None, UNREAD)) == ["unauthorized"]


async def test_sibling_fields_share_the_operation_safely(chat: ChatApp) -> None:
    """Root fields resolve concurrently; they take turns on the operation's session."""
    alice, bob = await chat.user("alice"), await chat.user("bob")
    room = await chat.room(alice, members=[bob])
    await send(chat, bob, room, body="hello @alice")
    direct = await gql(chat, alice, 'mutation { chatOpenDirect(username: "bob") { id } }')
    assert "errors" not in direct, direct
    body = await gql(
        chat,
        alice,
        """query($room: ID!) {
             chatRooms { nodes { unreadCount peer { username } } }
             chatUnread { unread }
             chatMessages(roomId: $room) { edges { node { author { username } } } }
             chatMembers(roomId: $room) { nodes { user { username } } }
             chatSearch(q: "hello") { author { username } }
             chatDirectory { nodes { name } }
           }""",
        room=str(room),
    )
    assert "errors" not in body, body
    assert body["data"]["chatUnread"] == {"unread": 1}
    peers = [r["peer"] for r in body["data"]["chatRooms"]["nodes"]]
    assert {"username": "bob"} in peers


@pytest.fixture
async def strict_chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatApp]:
    chat = messages_settings(message_rate_limit="2/minute")
    async with chat_app(settings_for(database_url, tmp_path), chat) as app:
        yield app


async def test_sending_shares_the_rest_rate_limit(strict_chat: ChatApp) -> None:
    alice = await strict_chat.user("alice")
    room = await strict_chat.room(alice)
    await strict_chat.send(alice, room, "over REST")
    await send(strict_chat, alice, room, body="over GraphQL")
    refused = await gql(strict_chat, alice, SEND, roomId=str(room), input={"body": "third"})
    assert codes(refused) == ["rate_limited"]
    response = await strict_chat.client.post(
        f"{API}/rooms/{room}/messages", json={"body": "fourth"}, headers=alice.auth
    )
    assert response.status_code == 429
