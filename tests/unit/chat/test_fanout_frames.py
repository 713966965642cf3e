"""Fan-out writes one framed copy of a publication to every subscriber that takes frames.

The hub runs on the in-process broker; each connection goes through the real connect
(identity access tokens) and subscribe commands over a transport that records what it was
given.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest

from engineroom.chat.realtime.auth import IdentityTokens
from engineroom.chat.realtime.broker import StreamPosition
from engineroom.chat.realtime.broker_memory import MemoryBroker
from engineroom.chat.realtime.commands import HANDLERS
from engineroom.chat.realtime.connection import Connection
from engineroom.chat.realtime.hub import Hub
from engineroom.chat.realtime.protocol import (
    SharedText,
    encode_push,
    publication_body,
    publication_head,
    publication_push,
    shared,
)
from engineroom.chat.realtime.runtime import default_registry, limits_of
from engineroom.core.http.websocket_frames import text_frame
from engineroom.core.migrations.runner import upgrade
from engineroom.core.platform import Platform
from engineroom.identity import module as identity_module
from engineroom.identity.config import configure
from engineroom.identity.tokens import issue_access_token
from engineroom.settings import Settings
from tests.support.chat import chat_settings, eventually
from tests.support.identity import fast_identity_settings

CHANNEL = "public:lobby"
SUBSCRIBE_ID = 2


@dataclass(eq=False)
class RecordingTransport:
    """A connection's transport: records each text sent and each frame written."""

    takes_frames: bool = True
    texts: list[str] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    refused: list[bytes] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)

    async def send_text(self, text: str) -> None:
        self.texts.append(text)

    def write_frame(self, frame: bytes) -> bool:
        if not self.takes_frames:
            self.refused.append(frame)
            return False
        self.frames.append(frame)
        return True

    async def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def messages(self) -> list[dict[str, object]]:
        """Every protocol message sent as text so far."""
        return [orjson.loads(line) for text in self.texts for line in text.split("\n")]

    def forget(self) -> None:
        self.texts.clear()
        self.frames.clear()
        self.refused.clear()


@dataclass
class Fanout:
    platform: Platform
    hub: Hub

    async def subscriber(
        self, transport: RecordingTransport, *, join_leave: bool = False
    ) -> Connection:
        """A connection, connected and subscribed to ``CHANNEL``, with nothing recorded."""

        async def open_connection() -> Connection:
            # Opened in a task of its own, as the endpoint's reading task would.
            return self.hub.open(transport)

        connection = await asyncio.get_running_loop().create_task(open_connection())
        issued = await issue_access_token(
            self.platform,
            user_id=uuid.uuid4(),
            username="reader",
            roles=("member",),
            permissions=(),
        )
        await connection.handle_frame(
            orjson.dumps({"id": 1, "connect": {"token": issued.token}}).decode()
        )
        subscribe = {"channel": CHANNEL, "join_leave": join_leave}
        await connection.handle_frame(
            orjson.dumps({"id": SUBSCRIBE_ID, "subscribe": subscribe}).decode()
        )
        await eventually(
            lambda: any(
                message.get("id") == SUBSCRIBE_ID and "subscribe" in message
                for message in transport.messages()
            )
        )
        assert transport.frames == []
        transport.forget()
        return connection


@pytest.fixture
async def fanout(settings: Settings) -> AsyncIterator[Fanout]:
    configure(settings, fast_identity_settings())
    await upgrade(settings, [identity_module])
    platform = Platform(settings, [identity_module])
    chat = chat_settings()
    hub = Hub(
        MemoryBroker(),
        default_registry(chat),
        IdentityTokens(platform),
        limits_of(chat),
        HANDLERS,
    )
    await hub.start()
    try:
        yield Fanout(platform, hub)
    finally:
        for connection in list(hub.connections):
            hub.remove(connection)
        await hub.close()
        await platform.stop()


def expected_push(position: StreamPosition, data: object) -> str:
    return publication_push(publication_head(CHANNEL), position.offset, publication_body(data))


async def delivered(transports: list[RecordingTransport]) -> None:
    await eventually(lambda: all(t.texts or t.frames for t in transports))


async def frames_reach(transports: list[RecordingTransport], count: int) -> None:
    await eventually(lambda: all(len(t.frames) == count for t in transports))


# ---- SharedText ------------------------------------------------------------------------


def test_a_shared_text_is_framed_once() -> None:
    push = shared('{"push":{"channel":"c","pub":{"data":"é"}}}')
    assert isinstance(push, SharedText)
    assert shared(push) is push
    frame = push.frame
    assert frame is push.frame
    assert frame == text_frame(push.encode())
    # Still the text itself wherever a str is expected.
    assert push == '{"push":{"channel":"c","pub":{"data":"é"}}}'


# ---- fan-out -----------------------------------------------------------------------------


async def test_every_subscriber_gets_the_very_same_frame(fanout: Fanout) -> None:
    transports = [RecordingTransport() for _ in range(5)]
    for transport in transports:
        await fanout.subscriber(transport)
    assert fanout.hub.subscriber_count(CHANNEL) == 5

    data = {"text": "hello, everyone", "emoji": "😀"}
    position = await fanout.hub.publish(CHANNEL, data)
    await delivered(transports)

    push = expected_push(position, data)
    first = transports[0].frames[0]
    assert first == text_frame(push.encode())
    for transport in transports:
        assert transport.texts == []
        assert len(transport.frames) == 1
        assert transport.frames[0] is first
    assert orjson.loads(str(push))["push"]["pub"] == {"offset": position.offset, "data": data}


async def test_each_publication_is_framed_once_for_all(fanout: Fanout) -> None:
    transports = [RecordingTransport() for _ in range(3)]
    for transport in transports:
        await fanout.subscriber(transport)
    pushes = []
    for index in range(3):
        position = await fanout.hub.publish(CHANNEL, {"n": index})
        pushes.append(expected_push(position, {"n": index}))
        # One publication per turn of the loop: each leaves alone, as a frame.
        await frames_reach(transports, index + 1)
    expected = [text_frame(push.encode()) for push in pushes]
    for transport in transports:
        assert transport.frames == expected
        assert transport.texts == []
        for mine, first in zip(transport.frames, transports[0].frames, strict=True):
            assert mine is first


async def test_a_transport_that_refuses_the_frame_gets_the_text(fanout: Fanout) -> None:
    taking = [RecordingTransport() for _ in range(2)]
    refusing = RecordingTransport(takes_frames=False)
    for transport in (taking[0], refusing, taking[1]):
        await fanout.subscriber(transport)

    data = {"text": "through send_text"}
    position = await fanout.hub.publish(CHANNEL, data)
    await delivered([*taking, refusing])

    push = expected_push(position, data)
    frame = taking[0].frames[0]
    assert refusing.texts == [push]
    assert refusing.frames == []
    # It was offered the shared frame first.
    assert len(refusing.refused) == 1
    assert refusing.refused[0] is frame
    for transport in taking:
        assert transport.frames[0] is frame
        assert transport.texts == []


async def test_two_queued_messages_leave_as_one_joined_text(fanout: Fanout) -> None:
    transports = [RecordingTransport() for _ in range(3)]
    for transport in transports:
        await fanout.subscriber(transport)

    # The in-process broker delivers while publish runs: nothing is written in between.
    first = await fanout.hub.publish(CHANNEL, {"n": 1})
    second = await fanout.hub.publish(CHANNEL, {"n": 2})
    await delivered(transports)

    joined = expected_push(first, {"n": 1}) + "\n" + expected_push(second, {"n": 2})
    for transport in transports:
        assert transport.frames == []
        assert transport.refused == []
        assert transport.texts == [joined]


async def test_join_pushes_are_shared_frames_too(fanout: Fanout) -> None:
    watchers = [RecordingTransport() for _ in range(3)]
    for transport in watchers:
        await fanout.subscriber(transport, join_leave=True)
    for transport in watchers:
        transport.forget()  # the joins of the watchers subscribed after them

    newcomer = await fanout.subscriber(RecordingTransport(), join_leave=True)
    await delivered(watchers)

    push = encode_push(CHANNEL, "join", {"info": orjson.Fragment(newcomer.info)})
    frame = watchers[0].frames[0]
    assert frame == text_frame(push.encode())
    for transport in watchers:
        assert transport.texts == []
        assert transport.frames == [frame]
        assert transport.frames[0] is frame
