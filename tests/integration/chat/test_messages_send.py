"""Sending messages over REST: the stored shape, the rules on bodies and attachments,
access, mentions, thread replies, events and the per-user rate limit."""

from __future__ import annotations

import json
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
    messages_settings,
    settings_for,
)


@pytest.fixture(params=[SQLITE, POSTGRES])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url_for(request, tmp_path)


@pytest.fixture
async def chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatApp]:
    async with chat_app(settings_for(database_url, tmp_path)) as app:
        yield app


def _url(room_id: uuid.UUID | str) -> str:
    return f"{API}/rooms/{room_id}/messages"


async def test_send_answers_the_stored_message(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)

    first = await chat.send(alice, room, "Hello, room!")
    second = await chat.send(
        alice,
        room,
        "The plan",
        attachments=[
            {
                "url": "https://files.example.com/plan.pdf",
                "name": "plan.pdf",
                "content_type": "application/pdf",
                "size": 1234,
            },
            {"url": "http://example.com/x"},
        ],
    )

    assert first["seq"] == 1
    assert second["seq"] == 2
    assert first["room_id"] == str(room)
    assert first["author"] == {"id": str(alice.id), "username": "alice"}
    assert first["body"] == "Hello, room!"
    assert first["thread_root_id"] is None
    assert first["reply_count"] == 0
    assert first["reactions"] == []
    assert first["mentions"] == []
    assert first["attachments"] == []
    assert first["deleted"] is False
    assert first["edited_at"] is None
    assert first["created_at"].endswith("Z")
    assert second["attachments"] == [
        {
            "url": "https://files.example.com/plan.pdf",
            "name": "plan.pdf",
            "content_type": "application/pdf",
            "size": 1234,
        },
        {"url": "http://example.com/x", "name": None, "content_type": None, "size": None},
    ]
    stored = await chat.client.get(f"{API}/messages/{second['id']}", headers=alice.auth)
    assert stored.status_code == 200
    assert stored.json() == second


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("x" * 4001, 413, "chat_message_too_long"),
        ("", 422, "chat_invalid_message"),
        ("   \n\t  ", 422, "chat_invalid_message"),
        ("null \x00 byte", 422, "chat_invalid_message"),
        ("bell \x07", 422, "chat_invalid_message"),
        ("lone \ud800 surrogate", 422, "chat_invalid_message"),
    ],
)
async def test_bodies_the_rules_refuse(chat: ChatApp, body: str, status: int, code: str) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    # ASCII-escaped JSON, so that a lone surrogate travels as the escape "\\ud800".
    response = await chat.client.post(
        _url(room),
        content=json.dumps({"body": body}),
        headers={**alice.auth, "Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["code"] == code
    assert problem["detail"]
    assert (await chat.history(alice, room))["messages"] == []


async def test_the_longest_allowed_body_and_line_breaks_pass(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    assert (await chat.send(alice, room, "y" * 4000))["body"] == "y" * 4000
    assert (await chat.send(alice, room, "two\nlines\twith a tab"))["seq"] == 2


async def test_the_length_limit_is_a_setting(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'short.db'}", tmp_path)
    async with chat_app(settings, messages_settings(message_max_length=10)) as chat:
        alice = await chat.user("alice")
        room = await chat.room(alice)
        response = await chat.client.post(
            _url(room), json={"body": "eleven char"}, headers=alice.auth
        )
        assert response.status_code == 413
        assert "at most 10 characters" in response.json()["detail"]
        assert (await chat.send(alice, room, "ten chars!"))["seq"] == 1


@pytest.mark.parametrize(
    ("attachment", "field", "message"),
    [
        ({"url": "javascript:alert(1)"}, "attachments.0.url", "http or https"),
        ({"url": "data:text/html,<b>x</b>"}, "attachments.0.url", "http or https"),
        ({"url": "ftp://example.com/file"}, "attachments.0.url", "http or https"),
        ({"url": "https://"}, "attachments.0.url", "host"),
        ({"url": "https://user:secret@example.com/"}, "attachments.0.url", "credentials"),
        ({"url": "https://example.com/a b"}, "attachments.0.url", "spaces"),
        ({"url": "http://[::1"}, "attachments.0.url", "not a valid URL"),
        ({"url": "https://example.com/", "size": 2**31 + 1}, "attachments.0.size", "at most"),
        ({"url": "https://example.com/", "name": "a\x01b"}, "attachments.0.name", "control"),
    ],
)
async def test_attachments_the_rules_refuse(
    chat: ChatApp, attachment: dict[str, object], field: str, message: str
) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    response = await chat.client.post(
        _url(room), json={"body": "see this", "attachments": [attachment]}, headers=alice.auth
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "chat_invalid_message"
    assert any(e["field"] == field and message in e["message"] for e in problem["errors"]), problem


async def test_malformed_attachments_and_unknown_fields_are_422(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    eleven = [{"url": f"https://example.com/{n}"} for n in range(11)]
    cases: list[dict[str, object]] = [
        {"body": "x", "attachments": eleven},
        {"body": "x", "attachments": [{"url": "https://example.com/", "size": -1}]},
        {"body": "x", "attachments": [{"url": "https://example.com/", "content_type": "nope"}]},
        {"body": "x", "attachments": [{"url": "https://example.com/", "extra": 1}]},
        {"body": "x", "room": "unexpected"},
        {"text": "no body"},
    ]
    for payload in cases:
        response = await chat.client.post(_url(room), json=payload, headers=alice.auth)
        assert response.status_code == 422, (payload, response.text)
    ten = await chat.send(alice, room, "ten links", attachments=eleven[:10])
    assert len(ten["attachments"]) == 10


async def test_who_may_send(chat: ChatApp) -> None:
    owner = await chat.user("owner")
    member = await chat.user("member")
    outsider = await chat.user("outsider")
    public = await chat.room(owner, members=[member])
    private = await chat.room(owner, kind="private", members=[member])

    async def status(user_headers: dict[str, str], room: uuid.UUID | str) -> tuple[int, str]:
        response = await chat.client.post(_url(room), json={"body": "hi"}, headers=user_headers)
        body = response.json()
        return response.status_code, body.get("code", "")

    assert await status(member.auth, public) == (201, "")
    assert await status({}, public) == (401, "unauthorized")
    assert await status(outsider.auth, public) == (403, "chat_not_a_member")
    assert await status(outsider.auth, private) == (404, "chat_room_not_found")
    assert await status(member.auth, uuid.uuid4()) == (404, "chat_room_not_found")
    response = await chat.client.post(
        f"{API}/rooms/not-a-uuid/messages", json={"body": "x"}, headers=member.auth
    )
    assert response.status_code == 422

    await chat.mute(public, member)
    assert await status(member.auth, public) == (403, "chat_muted")
    await chat.ban(private, member, owner)
    assert await status(member.auth, private) == (403, "chat_banned")


async def test_mentions_resolve_existing_users_and_notify_mentioned_members(
    chat: ChatApp,
) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    carol = await chat.user("carol.smith")
    dave = await chat.user("dave")  # exists, not a member
    room = await chat.room(alice, members=[bob, carol])

    message = await chat.send(
        alice,
        room,
        "@Bob and @carol.smith, thanks. Also @dave, @nobody_here, mail me at x@alice.com; "
        "@bob again, and me: @alice",
    )

    assert message["mentions"] == [
        {"id": str(bob.id), "username": "bob"},
        {"id": str(carol.id), "username": "carol.smith"},
        {"id": str(dave.id), "username": "dave"},
        {"id": str(alice.id), "username": "alice"},
    ]
    [sent] = await chat.events_of("chat.message.sent")
    # The personal channels: mentioned members, not the author nor non-members.
    assert sent["users"] == sorted([str(bob.id), str(carol.id)])
    assert sent["room_id"] == str(room)
    assert sent["live"]["type"] == "message.sent"
    assert sent["live"]["message"]["id"] == message["id"]
    assert sent["live"]["message"]["mentions"] == message["mentions"]


async def test_a_trailing_full_stop_is_not_part_of_a_mention(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    room = await chat.room(alice, members=[bob])
    message = await chat.send(alice, room, "Thanks @bob.")
    assert message["mentions"] == [{"id": str(bob.id), "username": "bob"}]


async def test_replies_attach_to_the_root_of_a_thread(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    room = await chat.room(alice, members=[bob])
    root = await chat.send(alice, room, "A question")
    reply = await chat.send(bob, room, "An answer", thread_root_id=root["id"])
    nested = await chat.send(alice, room, "A reply to the reply", thread_root_id=reply["id"])

    assert reply["thread_root_id"] == root["id"]
    assert nested["thread_root_id"] == root["id"]
    assert [root["seq"], reply["seq"], nested["seq"]] == [1, 2, 3]
    stored_root = (await chat.client.get(f"{API}/messages/{root['id']}", headers=bob.auth)).json()
    assert stored_root["reply_count"] == 2
    assert stored_root["last_reply_at"] == nested["created_at"]

    # The room's history shows the root (with its count), not the replies.
    page = await chat.history(bob, room)
    assert [m["id"] for m in page["messages"]] == [root["id"]]
    assert page["messages"][0]["reply_count"] == 2

    sent = await chat.events_of("chat.message.sent")
    assert sent[2]["live"]["root"] == {
        "id": root["id"],
        "reply_count": 2,
        "last_reply_at": nested["created_at"],
    }
    assert "root" not in sent[0]["live"]


async def test_replies_need_a_message_of_the_same_room(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    other = await chat.room(alice)
    elsewhere = await chat.send(alice, other, "In another room")
    for root_id in (elsewhere["id"], str(uuid.uuid4())):
        response = await chat.client.post(
            _url(room), json={"body": "reply", "thread_root_id": root_id}, headers=alice.auth
        )
        assert response.status_code == 422
        problem = response.json()
        assert problem["code"] == "chat_invalid_message"
        assert problem["errors"][0]["field"] == "thread_root_id"
    # Nothing was taken from the room's sequence by the refused replies.
    assert (await chat.send(alice, room, "first"))["seq"] == 1


async def test_sequences_are_per_room(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    one = await chat.room(alice)
    two = await chat.room(alice)
    seqs = [
        (await chat.send(alice, room, f"message {n}"))["seq"]
        for n, room in enumerate([one, two, one, one, two])
    ]
    assert seqs == [1, 1, 2, 3, 2]


async def test_the_per_user_rate_limit(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'limited.db'}", tmp_path)
    async with chat_app(settings, messages_settings(message_rate_limit="3/minute")) as chat:
        alice = await chat.user("alice")
        bob = await chat.user("bob")
        room = await chat.room(alice, members=[bob])
        other = await chat.room(alice)
        first = await chat.client.post(_url(room), json={"body": "1"}, headers=alice.auth)
        assert first.headers["RateLimit-Limit"] == "3"
        assert first.headers["RateLimit-Remaining"] == "2"
        await chat.send(alice, room, "2")
        await chat.send(alice, other, "3")  # the limit counts every room together

        refused = await chat.client.post(_url(room), json={"body": "4"}, headers=alice.auth)

        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert (await chat.send(bob, room, "bob is not limited by alice"))["seq"] == 3
