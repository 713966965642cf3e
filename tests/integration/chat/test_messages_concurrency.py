"""Concurrent senders in one room, each in its own transaction, on every database: every
message gets its own ``seq``, the numbers have no gap, and thread counters add up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat.messages import messaging_for, send_message
from engineroom.chat.messages_schemas import MessageCreate
from engineroom.chat.models import Message, Room
from engineroom.core.auth import Principal
from tests.support.chat_domain import (
    MARIADB,
    POSTGRES,
    SQLITE,
    ChatApp,
    ChatUser,
    chat_app,
    database_url_for,
    settings_for,
)

SENDERS = 4
MESSAGES_EACH = 6


@pytest.fixture(params=[SQLITE, POSTGRES, MARIADB])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url_for(request, tmp_path)


@pytest.fixture
async def chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatApp]:
    async with chat_app(settings_for(database_url, tmp_path)) as app:
        yield app


def _principal(user: ChatUser) -> Principal:
    return Principal(subject=str(user.id), username=user.username)


async def test_concurrent_sends_get_distinct_consecutive_seqs(chat: ChatApp) -> None:
    users = [await chat.user(f"sender{n}") for n in range(SENDERS)]
    room_id = await chat.room(users[0], members=users[1:])
    root = await chat.send(users[0], room_id, "the thread")
    messaging = messaging_for(chat.platform)
    database = chat.platform.database

    async def send(user: ChatUser, number: int) -> dict[str, Any]:
        # Every other message is a reply, so that the root's counter is raced as well.
        draft = MessageCreate(
            body=f"{user.username} says {number}",
            thread_root_id=uuid.UUID(root["id"]) if number % 2 else None,
        )

        async def work(session: AsyncSession) -> dict[str, Any]:
            return await send_message(
                session,
                principal=_principal(user),
                room_id=room_id,
                draft=draft,
                messaging=messaging,
            )

        return await database.transaction(work)

    sent = await asyncio.gather(
        *(send(user, number) for user in users for number in range(MESSAGES_EACH))
    )

    total = SENDERS * MESSAGES_EACH
    assert sorted(message["seq"] for message in sent) == list(range(2, total + 2))
    async with database.unit_of_work() as session:
        room = await session.get(Room, room_id)
        assert room is not None
        assert room.last_seq == total + 1
        stored = await session.scalars(select(Message.seq).where(Message.room_id == room_id))
        assert sorted(stored) == list(range(1, total + 2))
        thread_root = await session.get(Message, uuid.UUID(root["id"]))
        assert thread_root is not None
        assert thread_root.reply_count == total // 2
