"""Full-text search of messages on each database's own engine: ranking, scoping to the
caller's rooms, deleted messages never found, edits indexed again, and queries full of
search-engine syntax that must simply find what their words find."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text

from engineroom.chat import events
from engineroom.chat.models import Room
from tests.support.chat_domain import (
    API,
    MARIADB,
    POSTGRES,
    SQLITE,
    ChatApp,
    ChatUser,
    chat_app,
    database_url_for,
    settings_for,
)


@pytest.fixture(params=[SQLITE, POSTGRES, MARIADB])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url_for(request, tmp_path)


@pytest.fixture
async def chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatApp]:
    async with chat_app(settings_for(database_url, tmp_path)) as app:
        yield app


async def _search(chat: ChatApp, user: ChatUser, q: str, **params: Any) -> list[str]:
    response = await chat.client.get(f"{API}/search", params={"q": q, **params}, headers=user.auth)
    assert response.status_code == 200, response.text
    return [message["body"] for message in response.json()["messages"]]


FILLER = [
    "nothing about space travel",
    "unrelated chatter here",
    "another filler line",
    "weather report sunny",
]


async def _seed(chat: ChatApp) -> dict[str, Any]:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    room_a = await chat.room(alice, members=[bob])
    room_b = await chat.room(bob, members=[alice])
    hidden = await chat.room(bob, kind="private")
    public_elsewhere = await chat.room(bob)
    sent = {
        "launch": await chat.send(alice, room_a, "the rocket launched today"),
        "triple": await chat.send(bob, room_a, "rocket rocket rocket everywhere"),
        "room_b": await chat.send(bob, room_b, "a rocket in another room"),
        "hidden": await chat.send(bob, hidden, "rocket secrets"),
        "public": await chat.send(bob, public_elsewhere, "public rocket gossip"),
    }
    for line in FILLER:
        await chat.send(alice, room_a, line)
        await chat.send(bob, hidden, line)
    return {
        "alice": alice,
        "bob": bob,
        "room_a": room_a,
        "room_b": room_b,
        "hidden": hidden,
        "public": public_elsewhere,
        "sent": sent,
    }


async def test_ranked_results_from_the_callers_rooms_only(chat: ChatApp) -> None:
    seed = await _seed(chat)
    alice = seed["alice"]

    found = await _search(chat, alice, "rocket")

    assert found[0] == "rocket rocket rocket everywhere"
    assert sorted(found) == sorted(
        ["rocket rocket rocket everywhere", "the rocket launched today", "a rocket in another room"]
    )
    assert await _search(chat, alice, "rocket", room_id=str(seed["room_b"])) == [
        "a rocket in another room"
    ]
    # A public room the caller has not joined can be searched by naming it.
    assert await _search(chat, alice, "rocket", room_id=str(seed["public"])) == [
        "public rocket gossip"
    ]
    assert await _search(chat, alice, "rocket", limit=1) == ["rocket rocket rocket everywhere"]
    # Every word is required; the last one may be the beginning of a word.
    assert await _search(chat, alice, "rocket launched") == ["the rocket launched today"]
    assert sorted(await _search(chat, alice, "rock")) == sorted(found)
    assert await _search(chat, seed["bob"], "secrets") == ["rocket secrets"]


async def test_search_refusals(chat: ChatApp) -> None:
    seed = await _seed(chat)
    alice = seed["alice"]

    async def status(**params: Any) -> tuple[int, str]:
        response = await chat.client.get(f"{API}/search", params=params, headers=alice.auth)
        return response.status_code, response.json().get("code", "")

    assert await status(q="rocket", room_id=str(seed["hidden"])) == (404, "chat_room_not_found")
    assert await status(q="rocket", room_id=str(uuid.uuid4())) == (404, "chat_room_not_found")
    assert (await status(q=""))[0] == 422
    assert (await status(q="rocket", limit=0))[0] == 422
    assert (await status(q="rocket", limit=51))[0] == 422
    anonymous = await chat.client.get(f"{API}/search", params={"q": "rocket"})
    assert anonymous.status_code == 401


async def test_banned_members_do_not_search_the_room(chat: ChatApp) -> None:
    seed = await _seed(chat)
    await chat.ban(seed["room_b"], seed["alice"], seed["bob"])
    assert "a rocket in another room" not in await _search(chat, seed["alice"], "rocket")


async def test_deleted_messages_are_never_found_and_edits_are_indexed(chat: ChatApp) -> None:
    seed = await _seed(chat)
    alice, sent = seed["alice"], seed["sent"]

    deleted = await chat.client.delete(f"{API}/messages/{sent['triple']['id']}", headers=alice.auth)
    assert deleted.status_code == 204
    edited = await chat.client.patch(
        f"{API}/messages/{sent['launch']['id']}",
        json={"body": "the spaceship launched today"},
        headers=alice.auth,
    )
    assert edited.status_code == 200

    assert await _search(chat, alice, "rocket") == ["a rocket in another room"]
    assert await _search(chat, alice, "everywhere") == []
    assert await _search(chat, alice, "spaceship") == ["the spaceship launched today"]


async def test_a_deleted_rooms_messages_leave_the_index(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    doomed = await chat.room(alice)
    kept = await chat.room(alice)
    for n in range(3):
        await chat.send(alice, doomed, f"doomed message {n}")
    await chat.send(alice, kept, "kept message")

    # What deleting a room does: its event, then the row (messages cascade with it).
    async with chat.platform.database.unit_of_work() as session:
        events.record(session, events.ROOM_DELETED, room_id=doomed, live={"by": str(alice.id)})
        await session.execute(delete(Room).where(Room.id == doomed))
    await chat.deliver_events()

    async with chat.platform.database.unit_of_work() as session:
        indexed = await session.scalar(text("SELECT count(*) FROM chat_message_fts"))
    assert indexed == 1
    assert await _search(chat, alice, "message") == ["kept message"]


async def test_thread_replies_are_found(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    root = await chat.send(alice, room, "question about deployment")
    await chat.send(alice, room, "answer mentions kubernetes", thread_root_id=root["id"])
    for line in FILLER:
        await chat.send(alice, room, line)
    assert await _search(chat, alice, "kubernetes") == ["answer mentions kubernetes"]


@pytest.mark.parametrize(
    "query",
    [
        '"rocket',
        "'rocket'",
        "rocket*",
        "(rocket",
        "rocket)",
        "-rocket",
        "+rocket",
        "rocket:*",
        "rocket^",
        "rocket~",
        "{rocket}",
        "[rocket]",
        "\\rocket%_",
        "@@ rocket",
        "#rocket...",
    ],
)
async def test_search_syntax_around_a_word_is_ignored(chat: ChatApp, query: str) -> None:
    seed = await _seed(chat)
    found = await _search(chat, seed["alice"], query)
    assert found[0] == "rocket rocket rocket everywhere", found
    assert len(found) == 3, found


@pytest.mark.parametrize(
    "query",
    [
        "rocket AND",
        "NOT rocket",
        "rocket OR spaceship",
        "rocket | launched",
        "rocket & !launched",
        "rocket <-> launched",
        "NEAR(rocket launched)",
        "body:rocket",
        "ro'cket",
        "rocket;DROP TABLE chat_message",
    ],
)
async def test_operators_are_plain_words(chat: ChatApp, query: str) -> None:
    seed = await _seed(chat)
    found = await _search(chat, seed["alice"], query)
    # Every word is required (the engines may ignore their stop words such as "not").
    assert all("rocket" in body for body in found), found
    if query in ("rocket | launched", "rocket & !launched", "rocket <-> launched"):
        assert found == ["the rocket launched today"]


@pytest.mark.parametrize("query", ["*", '"', "()", "!!", "--", "'", "___", "&|<->"])
async def test_queries_without_words_find_nothing(chat: ChatApp, query: str) -> None:
    seed = await _seed(chat)
    assert await _search(chat, seed["alice"], query) == []
