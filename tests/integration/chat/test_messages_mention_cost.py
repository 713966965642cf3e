"""What mentions cost: sending or editing a message runs the same SQL statements for one
mentioned name as for ten (one batch of users, one membership check for the room), and
the batch resolves them as before: unknown and disabled names are dropped, non-members
are kept as mentions but not told on their personal channel."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from engineroom.core.clock import utcnow
from engineroom.identity.models import User
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


async def _statements(chat: ChatApp, call: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
    with StatementCounter(chat.platform) as counter:
        counter.counting = True
        result = await call()
        counter.counting = False
    return len(counter.statements), result


async def _disable(chat: ChatApp, user: ChatUser) -> None:
    async with chat.platform.database.unit_of_work() as session:
        await session.execute(update(User).where(User.id == user.id).values(disabled_at=utcnow()))


class Cast:
    """An author, five other members, a user outside the room and a disabled member."""

    def __init__(self, author: ChatUser, members: list[ChatUser], outsider: ChatUser) -> None:
        self.author = author
        self.members = members
        self.outsider = outsider

    @property
    def ten_names(self) -> str:
        # Ten distinct names: five members (one in another case), the author, a
        # non-member, a disabled member and two names of nobody.
        names = [m.username for m in self.members[:5]] + [self.author.username]
        names[1] = names[1].upper()
        names += [self.outsider.username, self.members[5].username, "nobody1", "nobody2"]
        return " ".join(f"@{name}" for name in names)

    def expected_mentions(self) -> list[dict[str, str]]:
        users = [*self.members[:5], self.author, self.outsider]
        return [{"id": str(u.id), "username": u.username} for u in users]

    def expected_channels(self) -> list[str]:
        return sorted(str(m.id) for m in self.members[:5])


async def _cast(chat: ChatApp) -> tuple[Cast, uuid.UUID]:
    author = await chat.user("alice")
    members = [await chat.user(name) for name in ("bob", "carol", "erin", "frank", "grace")]
    members.append(await chat.user("mallory"))
    outsider = await chat.user("dave")
    room = await chat.room(author, members=members)
    await _disable(chat, members[5])
    return Cast(author, members, outsider), room


async def test_sending_costs_the_same_for_one_mention_and_for_ten(chat: ChatApp) -> None:
    cast, room = await _cast(chat)
    bob = cast.members[0]
    await chat.send(cast.author, room, "warm up")

    one, single = await _statements(chat, lambda: chat.send(cast.author, room, "hi @bob"))
    ten, many = await _statements(chat, lambda: chat.send(cast.author, room, cast.ten_names))

    assert one == ten, (one, ten)
    assert single["mentions"] == [{"id": str(bob.id), "username": "bob"}]
    assert many["mentions"] == cast.expected_mentions()
    sent = await chat.events_of("chat.message.sent")
    assert [event["users"] for event in sent[1:]] == [[str(bob.id)], cast.expected_channels()]
    stored = (await chat.history(bob, room))["messages"][0]
    assert stored["id"] == many["id"]
    assert stored["mentions"] == cast.expected_mentions()


async def test_editing_costs_the_same_for_one_mention_and_for_ten(chat: ChatApp) -> None:
    cast, room = await _cast(chat)
    bob = cast.members[0]
    first = await chat.send(cast.author, room, "first")
    second = await chat.send(cast.author, room, "second")

    async def edit(message: dict[str, Any], body: str) -> dict[str, Any]:
        response = await chat.client.patch(
            f"{API}/messages/{message['id']}", json={"body": body}, headers=cast.author.auth
        )
        assert response.status_code == 200, response.text
        edited: dict[str, Any] = response.json()
        return edited

    one, single = await _statements(chat, lambda: edit(first, "hi @bob"))
    ten, many = await _statements(chat, lambda: edit(second, cast.ten_names))

    assert one == ten, (one, ten)
    assert single["mentions"] == [{"id": str(bob.id), "username": "bob"}]
    assert many["mentions"] == cast.expected_mentions()
    edited = await chat.events_of("chat.message.edited")
    assert [event["users"] for event in edited] == [[str(bob.id)], cast.expected_channels()]
