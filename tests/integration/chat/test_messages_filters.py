"""The message filter hook: blocked words (masked or refused), the repeated-text filter,
and filters other code registers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engineroom.chat.filters import BlockedWords, Verdict, filters_for
from engineroom.chat.messages import mentioned_names
from engineroom.chat.models import Room
from engineroom.core.auth import Principal
from tests.support.chat_domain import (
    API,
    ChatApp,
    chat_app,
    messages_settings,
    settings_for,
)


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'filters.db'}"


@pytest.fixture
async def masking(tmp_path: Path) -> AsyncIterator[ChatApp]:
    chat = messages_settings(
        blocked_words=["darn", "heck it", "c++"], message_repeat_limit="2/minute"
    )
    async with chat_app(settings_for(_sqlite(tmp_path), tmp_path), chat) as app:
        yield app


async def test_blocked_words_are_masked_as_whole_words_in_any_case(masking: ChatApp) -> None:
    alice = await masking.user("alice")
    room = await masking.room(alice)

    sent = await masking.send(alice, room, "Darn! Heck it, I write C++ and darnit is fine. DARN")

    assert sent["body"] == "***! ***, I write *** and darnit is fine. ***"
    edited = await masking.client.patch(
        f"{API}/messages/{sent['id']}", json={"body": "well darn"}, headers=alice.auth
    )
    assert edited.json()["body"] == "well ***"


async def test_repeated_text_is_refused_per_user_and_room(masking: ChatApp) -> None:
    alice = await masking.user("alice")
    bob = await masking.user("bob")
    room = await masking.room(alice, members=[bob])
    other = await masking.room(alice)
    url = f"{API}/rooms/{room}/messages"

    await masking.send(alice, room, "Buy now!")
    await masking.send(alice, room, "buy   NOW!")  # case and spacing do not make it new
    refused = await masking.client.post(url, json={"body": "buy now!"}, headers=alice.auth)

    assert refused.status_code == 422
    problem = refused.json()
    assert problem["code"] == "chat_message_rejected"
    assert "several times" in problem["detail"]
    assert (await masking.send(bob, room, "buy now!"))["seq"] == 3  # another user
    assert (await masking.send(alice, other, "buy now!"))["seq"] == 1  # another room
    assert (await masking.send(alice, room, "something else"))["seq"] == 4


async def test_blocked_words_can_refuse_the_message(tmp_path: Path) -> None:
    chat = messages_settings(blocked_words=["forbidden"], blocked_words_action="reject")
    async with chat_app(settings_for(_sqlite(tmp_path), tmp_path), chat) as app:
        alice = await app.user("alice")
        room = await app.room(alice)
        response = await app.client.post(
            f"{API}/rooms/{room}/messages",
            json={"body": "a Forbidden word"},
            headers=alice.auth,
        )
        assert response.status_code == 422
        assert response.json()["code"] == "chat_message_rejected"
        assert response.json()["detail"] == "The message contains a word that is not allowed here."
        assert (await app.history(alice, room))["messages"] == []
        assert await app.events_of("chat.message.sent") == []


class NoShouting:
    """A filter other code could register: lowers shouted text, refuses sirens."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []

    async def check(self, body: str, author: Principal, room: Room, *, editing: bool) -> Verdict:
        self.seen.append((body, author.subject, editing))
        if "🚨" in body:
            return Verdict.reject("No sirens in this room.")
        if body.isupper():
            return Verdict.replace(body.lower())
        return Verdict.ALLOW


async def test_registered_filters_run_in_order_after_the_defaults(masking: ChatApp) -> None:
    alice = await masking.user("alice")
    room = await masking.room(alice)
    custom = NoShouting()
    registry = filters_for(masking.platform)
    registry.register("no_shouting", custom)
    assert registry.names == ["blocked_words", "repeat", "no_shouting"]

    sent = await masking.send(alice, room, "DARN THIS")

    # The blocked-words filter ran first; the custom one saw its result.
    assert custom.seen == [("*** THIS", str(alice.id), False)]
    assert sent["body"] == "*** this"
    refused = await masking.client.post(
        f"{API}/rooms/{room}/messages", json={"body": "alarm 🚨"}, headers=alice.auth
    )
    assert (refused.status_code, refused.json()["detail"]) == (422, "No sirens in this room.")
    registry.unregister("no_shouting")
    assert (await masking.send(alice, room, "alarm 🚨"))["body"] == "alarm 🚨"


async def test_blocked_words_filter_on_its_own() -> None:
    words = BlockedWords(["darn", "darn it"], action="mask")
    author = Principal(subject="someone")
    room = Room(kind="public", name="r")
    verdict = await words.check("darn it all, darn.", author, room, editing=False)
    assert verdict == Verdict.replace("*** all, ***.")
    assert await words.check("darning", author, room, editing=False) == Verdict.ALLOW
    empty = BlockedWords([], action="reject")
    assert await empty.check("darn", author, room, editing=False) == Verdict.ALLOW


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("hi @bob", ["bob"]),
        ("@bob, @Bob and @BOB", ["bob"]),
        ("thanks @carol.smith.", ["carol.smith"]),
        ("mail a@example.com or @@bob", []),
        ("@ab is too short, @abc is not", ["abc"]),
        ("(@dave) [@erin] @frank's", ["dave", "erin", "frank"]),
    ],
)
def test_mention_tokens(body: str, names: list[str]) -> None:
    assert mentioned_names(body, 20) == names


def test_mentions_stop_at_the_limit() -> None:
    assert mentioned_names("@aaa @bbb @ccc @ddd", 2) == ["aaa", "bbb"]
