"""Editing (the author only, mentions found again) and deleting (tombstones) messages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.chat_domain import (
    API,
    POSTGRES,
    SQLITE,
    ChatApp,
    chat_app,
    database_url_for,
    settings_for,
)


@pytest.fixture(params=[SQLITE, POSTGRES])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url_for(request, tmp_path)


@pytest.fixture
async def chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatApp]:
    async with chat_app(settings_for(database_url, tmp_path)) as app:
        yield app


def _message_url(message_id: str | uuid.UUID) -> str:
    return f"{API}/messages/{message_id}"


async def test_the_author_edits_and_mentions_are_found_again(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    carol = await chat.user("carol")
    room = await chat.room(alice, members=[bob, carol])
    message = await chat.send(alice, room, "hello @bob")

    response = await chat.client.patch(
        _message_url(message["id"]), json={"body": "hello @carol, not bob"}, headers=alice.auth
    )

    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["body"] == "hello @carol, not bob"
    assert edited["mentions"] == [{"id": str(carol.id), "username": "carol"}]
    assert edited["edited_at"] is not None
    assert edited["seq"] == message["seq"]
    assert edited["created_at"] == message["created_at"]
    assert (await chat.history(bob, room))["messages"][0] == edited
    [event] = await chat.events_of("chat.message.edited")
    assert event["live"]["type"] == "message.edited"
    assert event["live"]["message"]["body"] == "hello @carol, not bob"
    assert event["users"] == [str(carol.id)]  # newly mentioned members only

    again = await chat.client.patch(
        _message_url(message["id"]), json={"body": "hello @carol!"}, headers=alice.auth
    )
    assert again.status_code == 200
    assert (await chat.events_of("chat.message.edited"))[1]["users"] == []


async def test_edits_refused(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    outsider = await chat.user("outsider")
    private = await chat.room(alice, kind="private", members=[bob])
    message = await chat.send(alice, private, "original")
    url = _message_url(message["id"])

    async def patch(headers: dict[str, str], body: object, target: str = url) -> tuple[int, str]:
        response = await chat.client.patch(target, json=body, headers=headers)
        return response.status_code, response.json().get("code", "")

    assert await patch(bob.auth, {"body": "bob's words"}) == (403, "chat_not_message_author")
    assert await patch(outsider.auth, {"body": "x"}) == (404, "chat_message_not_found")
    assert await patch(alice.auth, {"body": " "}) == (422, "chat_invalid_message")
    assert await patch(alice.auth, {"body": "x" * 4001}) == (413, "chat_message_too_long")
    assert await patch(alice.auth, {"body": "x", "extra": 1}) == (422, "validation_failed")
    assert await patch(alice.auth, {"body": "x"}, _message_url(uuid.uuid4())) == (
        404,
        "chat_message_not_found",
    )
    assert await patch({}, {"body": "x"}) == (401, "unauthorized")
    await chat.mute(private, alice)
    assert await patch(alice.auth, {"body": "muted"}) == (403, "chat_muted")
    stored = await chat.client.get(url, headers=alice.auth)
    assert stored.json()["body"] == "original"
    assert stored.json()["edited_at"] is None


async def test_deleting_leaves_a_tombstone(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    room = await chat.room(alice, members=[bob])
    root = await chat.send(
        alice,
        room,
        "secret plans for @bob",
        attachments=[{"url": "https://example.com/plans.pdf"}],
    )
    reply = await chat.send(bob, room, "a reply", thread_root_id=root["id"])
    await chat.client.put(f"{_message_url(root['id'])}/reactions/👍", headers=bob.auth)

    response = await chat.client.delete(_message_url(root["id"]), headers=alice.auth)

    assert response.status_code == 204
    assert response.content == b""
    [shown] = (await chat.history(bob, room))["messages"]
    assert shown["id"] == root["id"]
    assert shown["seq"] == 1
    assert shown["deleted"] is True
    assert shown["body"] == ""
    assert shown["attachments"] == []
    assert shown["mentions"] == []
    assert shown["reactions"] == []
    assert shown["reply_count"] == 1  # the thread keeps its shape
    thread = (await chat.client.get(f"{_message_url(root['id'])}/thread", headers=bob.auth)).json()
    assert thread["root"]["deleted"] is True
    assert [m["id"] for m in thread["messages"]] == [reply["id"]]
    [event] = await chat.events_of("chat.message.deleted")
    assert event["live"] == {
        "type": "message.deleted",
        "room_id": str(room),
        "message_id": root["id"],
        "seq": 1,
        "thread_root_id": None,
        "deleted_by": str(alice.id),
    }

    # Deleting again changes nothing and announces nothing; editing is refused.
    again = await chat.client.delete(_message_url(root["id"]), headers=alice.auth)
    assert again.status_code == 204
    assert len(await chat.events_of("chat.message.deleted")) == 1
    edit = await chat.client.patch(
        _message_url(root["id"]), json={"body": "back"}, headers=alice.auth
    )
    assert (edit.status_code, edit.json()["code"]) == (409, "chat_message_deleted")


async def test_who_may_delete(chat: ChatApp) -> None:
    owner = await chat.user("owner")
    moderator = await chat.user("roommod")
    author = await chat.user("author")
    other = await chat.user("other")
    platform_mod = await chat.user("platformmod", moderator=True)
    room = await chat.room(owner, members=[author, other], moderators=[moderator])
    messages = [await chat.send(author, room, f"message {n}") for n in range(4)]

    refused = await chat.client.delete(_message_url(messages[0]["id"]), headers=other.auth)
    assert (refused.status_code, refused.json()["code"]) == (403, "chat_not_message_author")
    for deleter, message in zip((author, owner, moderator, platform_mod), messages, strict=True):
        response = await chat.client.delete(_message_url(message["id"]), headers=deleter.auth)
        assert response.status_code == 204, (deleter.username, response.text)
    deleted_by = [e["live"]["deleted_by"] for e in await chat.events_of("chat.message.deleted")]
    assert deleted_by == [str(u.id) for u in (author, owner, moderator, platform_mod)]
    assert all(m["deleted"] for m in (await chat.history(other, room))["messages"])

    missing = await chat.client.delete(_message_url(uuid.uuid4()), headers=owner.auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "chat_message_not_found")
