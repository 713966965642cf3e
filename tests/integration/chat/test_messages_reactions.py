"""Reactions: idempotent adding and removing, counts with ``me``, the rules on what a
reaction may be, and their events. MariaDB too: its default collations would merge
different emoji."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.chat_domain import (
    API,
    MARIADB,
    POSTGRES,
    SQLITE,
    ChatApp,
    ChatUser,
    chat_app,
    database_url_for,
    messages_settings,
    settings_for,
)


@pytest.fixture(params=[SQLITE, POSTGRES, MARIADB])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url_for(request, tmp_path)


@pytest.fixture
async def chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatApp]:
    chat = messages_settings(reactions_per_user=4)
    async with chat_app(settings_for(database_url, tmp_path), chat) as app:
        yield app


def _url(message_id: str, emoji: str) -> str:
    return f"{API}/messages/{message_id}/reactions/{urllib.parse.quote(emoji, safe='')}"


async def _put(chat: ChatApp, user: ChatUser, message_id: str, emoji: str) -> httpx.Response:
    return await chat.client.put(_url(message_id, emoji), headers=user.auth)


def _reactions(message: dict[str, Any]) -> list[tuple[str, int, bool]]:
    return [(r["emoji"], r["count"], r["me"]) for r in message["reactions"]]


async def test_reactions_count_per_emoji_and_know_the_viewer(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    room = await chat.room(alice, members=[bob])
    message = await chat.send(alice, room, "react to me")
    mid = message["id"]

    first = await _put(chat, bob, mid, "😀")
    assert first.status_code == 200, first.text
    assert _reactions(first.json()) == [("😀", 1, True)]
    assert (await _put(chat, bob, mid, "😀")).status_code == 200  # idempotent
    await _put(chat, alice, mid, "😃")  # another emoji, not the same one
    await _put(chat, alice, mid, "😀")
    await _put(chat, alice, mid, ":Smile:")
    seen_by_bob = (await _put(chat, bob, mid, ":smile:")).json()

    assert _reactions(seen_by_bob) == [
        ("😀", 2, True),
        ("😃", 1, False),
        (":Smile:", 1, False),
        (":smile:", 1, True),
    ]
    seen_by_alice = (await chat.history(alice, room))["messages"][0]
    assert _reactions(seen_by_alice) == [
        ("😀", 2, True),
        ("😃", 1, True),
        (":Smile:", 1, True),
        (":smile:", 1, False),
    ]
    added = await chat.events_of("chat.reaction.added")
    assert len(added) == 5  # the repeated reaction announced nothing
    assert added[0]["live"] == {
        "type": "reaction.added",
        "room_id": str(room),
        "message_id": mid,
        "emoji": "😀",
        "user_id": str(bob.id),
        "count": 1,
    }
    assert added[2]["live"]["count"] == 2

    removed = await chat.client.delete(_url(mid, "😀"), headers=bob.auth)
    assert removed.status_code == 200
    # Reactions are listed in the order their oldest remaining one was added.
    assert _reactions(removed.json()) == [
        ("😃", 1, False),
        ("😀", 1, False),
        (":Smile:", 1, False),
        (":smile:", 1, True),
    ]
    again = await chat.client.delete(_url(mid, "😀"), headers=bob.auth)
    assert again.status_code == 200
    [event] = await chat.events_of("chat.reaction.removed")
    assert event["live"]["count"] == 1
    assert event["live"]["user_id"] == str(bob.id)


async def test_emoji_sequences_with_joiners_are_one_reaction(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    message = await chat.send(alice, room, "family")
    family = "👨\u200d👩\u200d👧"
    response = await _put(chat, alice, message["id"], family)
    assert response.status_code == 200, response.text
    assert _reactions(response.json()) == [(family, 1, True)]


@pytest.mark.parametrize(
    "emoji",
    ["with space", "tab\there", "new\nline", "nul\x00", "x" * 65, "\u00a0", "\u2028"],
)
async def test_reactions_the_rules_refuse(chat: ChatApp, emoji: str) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    message = await chat.send(alice, room, "hi")
    response = await _put(chat, alice, message["id"], emoji)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "chat_invalid_reaction"
    assert (await chat.history(alice, room))["messages"][0]["reactions"] == []


async def test_reactions_refused(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    outsider = await chat.user("outsider")
    room = await chat.room(alice, members=[bob])
    private = await chat.room(alice, kind="private")
    message = await chat.send(alice, room, "hi")
    hidden = await chat.send(alice, private, "members only")

    async def put(user: ChatUser, message_id: str, emoji: str = "👍") -> tuple[int, str]:
        response = await _put(chat, user, message_id, emoji)
        return response.status_code, response.json().get("code", "")

    assert await put(outsider, message["id"]) == (403, "chat_not_a_member")
    assert await put(outsider, hidden["id"]) == (404, "chat_message_not_found")
    assert await put(bob, str(uuid.uuid4())) == (404, "chat_message_not_found")
    for emoji in ("1", "2", "3", "4"):
        assert await put(bob, message["id"], emoji) == (200, "")
    assert await put(bob, message["id"], "5") == (409, "chat_too_many_reactions")
    assert await put(bob, message["id"], "4") == (200, "")  # already there: fine
    await chat.mute(room, bob)
    assert await put(bob, message["id"], "6") == (403, "chat_muted")

    await chat.client.delete(f"{API}/messages/{message['id']}", headers=alice.auth)
    assert await put(alice, message["id"]) == (409, "chat_message_deleted")
