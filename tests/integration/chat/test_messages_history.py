"""Reading messages: history pages and their cursors, threads, single messages, who may
read, and a constant number of SQL statements per page."""

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
    StatementCounter,
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


async def _room_with(chat: ChatApp, count: int) -> tuple[ChatUser, uuid.UUID, list[dict[str, Any]]]:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    sent = [await chat.send(alice, room, f"message {n}") for n in range(1, count + 1)]
    return alice, room, sent


def _seqs(page: dict[str, Any]) -> list[int]:
    return [message["seq"] for message in page["messages"]]


async def test_pages_backwards_newest_first(chat: ChatApp) -> None:
    alice, room, sent = await _room_with(chat, 7)

    first = await chat.history(alice, room, limit=3)
    assert _seqs(first) == [7, 6, 5]
    assert first["has_more"] is True
    second = await chat.history(alice, room, limit=3, before=first["messages"][-1]["id"])
    assert _seqs(second) == [4, 3, 2]
    assert second["has_more"] is True
    last = await chat.history(alice, room, limit=3, before=second["messages"][-1]["id"])
    assert _seqs(last) == [1]
    assert last["has_more"] is False
    beyond = await chat.history(alice, room, before=sent[0]["id"])
    assert beyond == {"messages": [], "has_more": False}
    # A page that ends exactly at the first message says there is no more.
    exact = await chat.history(alice, room, limit=4, before=sent[4]["id"])
    assert _seqs(exact) == [4, 3, 2, 1]
    assert exact["has_more"] is False
    everything = await chat.history(alice, room)
    assert _seqs(everything) == [7, 6, 5, 4, 3, 2, 1]
    assert everything["has_more"] is False


async def test_pages_forwards_oldest_first(chat: ChatApp) -> None:
    alice, room, sent = await _room_with(chat, 5)

    page = await chat.history(alice, room, after=sent[0]["id"], limit=2)
    assert _seqs(page) == [2, 3]
    assert page["has_more"] is True
    page = await chat.history(alice, room, after=page["messages"][-1]["id"], limit=2)
    assert _seqs(page) == [4, 5]
    assert page["has_more"] is False
    assert await chat.history(alice, room, after=sent[-1]["id"]) == {
        "messages": [],
        "has_more": False,
    }


async def test_an_empty_room_has_an_empty_history(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    room = await chat.room(alice)
    assert await chat.history(alice, room) == {"messages": [], "has_more": False}


async def test_bad_cursors_and_limits(chat: ChatApp) -> None:
    alice, room, sent = await _room_with(chat, 2)
    other = await chat.room(alice)
    elsewhere = await chat.send(alice, other, "elsewhere")
    url = f"{API}/rooms/{room}/messages"

    async def get(**params: Any) -> tuple[int, dict[str, Any]]:
        response = await chat.client.get(url, params=params, headers=alice.auth)
        return response.status_code, response.json()

    status, problem = await get(before=sent[1]["id"], after=sent[0]["id"])
    assert (status, problem["code"]) == (400, "chat_invalid_cursor")
    assert "not both" in problem["detail"]
    for cursor in (elsewhere["id"], str(uuid.uuid4())):
        status, problem = await get(before=cursor)
        assert (status, problem["code"]) == (400, "chat_invalid_cursor")
        assert "'before'" in problem["detail"]
    for params in ({"limit": 0}, {"limit": 101}, {"before": "nope"}):
        status, problem = await get(**params)
        assert status == 422, params
    status, page = await get(limit=100)
    assert status == 200
    assert len(page["messages"]) == 2


async def test_who_may_read(chat: ChatApp) -> None:
    owner = await chat.user("owner")
    member = await chat.user("member")
    outsider = await chat.user("outsider")
    banned = await chat.user("banned")
    public = await chat.room(owner, members=[member])
    private = await chat.room(owner, kind="private", members=[member])
    invite_only = await chat.room(owner, kind="invite_only")
    secret = await chat.send(owner, private, "for members")
    await chat.send(owner, public, "for everyone")
    await chat.ban(public, banned, owner)

    async def status(user: ChatUser, room: uuid.UUID) -> tuple[int, str]:
        response = await chat.client.get(f"{API}/rooms/{room}/messages", headers=user.auth)
        return response.status_code, response.json().get("code", "")

    assert await status(member, private) == (200, "")
    assert await status(outsider, public) == (200, "")  # public rooms: any signed-in user
    assert await status(outsider, private) == (404, "chat_room_not_found")
    assert await status(outsider, invite_only) == (403, "chat_not_a_member")
    assert await status(banned, public) == (403, "chat_banned")
    assert await status(member, uuid.uuid4()) == (404, "chat_room_not_found")
    anonymous = await chat.client.get(f"{API}/rooms/{public}/messages")
    assert anonymous.status_code == 401

    single = f"{API}/messages/{secret['id']}"
    assert (await chat.client.get(single, headers=member.auth)).status_code == 200
    hidden = await chat.client.get(single, headers=outsider.auth)
    assert (hidden.status_code, hidden.json()["code"]) == (404, "chat_message_not_found")
    unknown = await chat.client.get(f"{API}/messages/{uuid.uuid4()}", headers=member.auth)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "chat_message_not_found")


async def test_threads_page_their_replies(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    room = await chat.room(alice, members=[bob])
    root = await chat.send(alice, room, "root")
    await chat.send(bob, room, "not in the thread")
    replies = [
        await chat.send(bob if n % 2 else alice, room, f"reply {n}", thread_root_id=root["id"])
        for n in range(5)
    ]
    other_root = await chat.send(alice, room, "another root")
    await chat.send(alice, room, "other reply", thread_root_id=other_root["id"])
    url = f"{API}/messages/{root['id']}/thread"

    page = (await chat.client.get(url, params={"limit": 2}, headers=bob.auth)).json()
    assert page["root"]["id"] == root["id"]
    assert page["root"]["reply_count"] == 5
    assert [m["body"] for m in page["messages"]] == ["reply 4", "reply 3"]
    assert page["has_more"] is True
    older = (
        await chat.client.get(
            url, params={"limit": 3, "before": page["messages"][-1]["id"]}, headers=bob.auth
        )
    ).json()
    assert [m["body"] for m in older["messages"]] == ["reply 2", "reply 1", "reply 0"]
    assert older["has_more"] is False
    forwards = (await chat.client.get(url, params={"after": root["id"]}, headers=bob.auth)).json()
    assert [m["id"] for m in forwards["messages"]] == [r["id"] for r in replies]

    # Any message of the thread leads to the whole thread.
    via_reply = await chat.client.get(
        f"{API}/messages/{replies[2]['id']}/thread", headers=alice.auth
    )
    assert via_reply.json()["root"]["id"] == root["id"]
    assert len(via_reply.json()["messages"]) == 5

    # A cursor from another thread is refused.
    wrong = await chat.client.get(url, params={"before": other_root["id"]}, headers=bob.auth)
    assert (wrong.status_code, wrong.json()["code"]) == (400, "chat_invalid_cursor")
    # The room's history: roots and messages outside threads only.
    assert [m["body"] for m in (await chat.history(bob, room))["messages"]] == [
        "another root",
        "not in the thread",
        "root",
    ]


async def test_a_history_page_costs_the_same_statements_whatever_its_size(
    chat: ChatApp,
) -> None:
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    carol = await chat.user("carol")
    room = await chat.room(alice, members=[bob, carol])
    counts: list[int] = []
    for size in (1, 12):
        while len((await chat.history(alice, room, limit=100))["messages"]) < size:
            sender = (alice, bob, carol)[size % 3]
            message = await chat.send(sender, room, f"hi @bob and @carol ({size})")
            for user, emoji in ((bob, "👍"), (carol, "👍"), (carol, "🎉")):
                response = await chat.client.put(
                    f"{API}/messages/{message['id']}/reactions/{emoji}", headers=user.auth
                )
                assert response.status_code == 200
        with StatementCounter(chat.platform) as counter:
            counter.counting = True
            page = await chat.history(alice, room, limit=100)
            counter.counting = False
        assert len(page["messages"]) == size
        assert page["messages"][0]["reactions"] == [
            {"emoji": "👍", "count": 2, "me": False},
            {"emoji": "🎉", "count": 1, "me": False},
        ]
        assert {u["username"] for u in page["messages"][0]["mentions"]} == {"bob", "carol"}
        counts.append(len(counter.statements))
    # Room, membership, page, reactions, users and their roles: the same for 1 or 12.
    assert counts[0] == counts[1], counts
    assert counts[0] <= 7, counts
