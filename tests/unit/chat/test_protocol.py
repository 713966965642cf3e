"""Frames, channel names and the in-process history, without a server."""

from __future__ import annotations

import orjson
import pytest

from engineroom.chat.realtime.broker import StreamPosition, UnrecoverablePositionError
from engineroom.chat.realtime.broker_memory import MemoryBroker
from engineroom.chat.realtime.channels import (
    ChannelAction,
    ChannelRegistry,
    DenyAll,
    Namespace,
    NamespaceOptions,
    parse_channel,
)
from engineroom.chat.realtime.protocol import (
    Disconnect,
    ErrorCode,
    FrameError,
    ReplyError,
    encode_error,
    parse_frame,
    publication_body,
    publication_head,
    publication_object,
    publication_push,
)
from engineroom.core.auth import Principal


def test_frames_split_on_newlines_and_name_the_method() -> None:
    commands = parse_frame('{"id":1,"connect":{"token":"t"}}\n\n{}\n{"id":2,"ping":{}}\n')
    assert [(c.id, c.method) for c in commands] == [(1, "connect"), (0, None), (2, "ping")]
    assert commands[0].params == {"token": "t"}
    # Unknown fields are ignored; a null method is absent.
    assert parse_frame('{"id":3,"x":1,"publish":null}')[0].method is None


@pytest.mark.parametrize(
    "text",
    ["", "nope", "[]", '{"id":"1"}', '{"id":-1}', '{"id":4294967296}', '{"id":1,"subscribe":[]}'],
)
def test_frames_that_are_not_the_protocol_are_refused(text: str) -> None:
    with pytest.raises(FrameError):
        parse_frame(text)


def test_publications_are_encoded_once_and_spliced() -> None:
    body = publication_body({"a": 1}, info={"user": "u"}, tags={"t": "1"})
    push = publication_push(publication_head('room:"1"'), 7, body)
    # A str subclass (its frame is cached): orjson reads exact str or bytes only.
    assert orjson.loads(push.encode()) == {
        "push": {
            "channel": 'room:"1"',
            "pub": {"offset": 7, "data": {"a": 1}, "info": {"user": "u"}, "tags": {"t": "1"}},
        }
    }
    assert orjson.loads(publication_push(publication_head("c"), 0, body).encode())["push"][
        "pub"
    ] == {
        "data": {"a": 1},
        "info": {"user": "u"},
        "tags": {"t": "1"},
    }
    assert orjson.loads(orjson.dumps([publication_object(3, b'"data":null')])) == [
        {"offset": 3, "data": None}
    ]


def test_errors_and_disconnects_follow_the_protocol_codes() -> None:
    assert orjson.loads(encode_error(5, ReplyError(ErrorCode.TOO_MANY_REQUESTS))) == {
        "id": 5,
        "error": {"code": 111, "message": "too many requests", "temporary": True},
    }
    assert Disconnect(3001, "shutdown").reconnect
    assert Disconnect(4000, "custom").reconnect
    assert not Disconnect(3500, "invalid token").reconnect
    assert not Disconnect(4500, "custom").reconnect


def test_channel_names() -> None:
    assert parse_channel("room:42") == parse_channel("room:42")
    assert parse_channel("room:42").namespace == "room"
    assert parse_channel("#u1").namespace == ""
    assert parse_channel("#u1").users == frozenset({"u1"})
    assert parse_channel("dm:chat#u1,u2").users == frozenset({"u1", "u2"})
    for bad in ("", "has space", "x" * 256, "tab\there", "é:x"):
        with pytest.raises(ReplyError):
            parse_channel(bad)
    with pytest.raises(ReplyError) as unknown:
        parse_channel("Bad_NS!:x")
    assert unknown.value.code is ErrorCode.UNKNOWN_CHANNEL


async def test_registry_checks_users_then_the_namespace_authorizer() -> None:
    registry = ChannelRegistry(
        [Namespace("secret", NamespaceOptions(client_publish=True), DenyAll())]
    )
    principal = Principal(subject="u1")
    with pytest.raises(ReplyError) as denied:
        await registry.check(principal, parse_channel("secret:x"), ChannelAction.SUBSCRIBE)
    assert denied.value.code is ErrorCode.PERMISSION_DENIED

    class Members:
        async def authorize(self, principal: Principal, channel: object, action: object) -> bool:
            return principal.subject == "u1"

    registry.set_authorizer("secret", Members())
    await registry.check(principal, parse_channel("secret:x"), ChannelAction.PUBLISH)
    with pytest.raises(ReplyError):
        await registry.check(principal, parse_channel("secret:x#u2"), ChannelAction.SUBSCRIBE)
    with pytest.raises(ReplyError) as unknown:
        registry.resolve("other:x")
    assert unknown.value.code is ErrorCode.UNKNOWN_CHANNEL


async def test_memory_history_is_all_or_nothing() -> None:
    broker = MemoryBroker()
    options = NamespaceOptions(history_size=3, history_ttl=60)
    start = await broker.history("c", options, limit=0)
    for number in range(1, 6):
        await broker.publish("c", b'"data":%d' % number, options)
    page = await broker.history("c", options, limit=-1)
    assert [p.offset for p in page.publications] == [3, 4, 5]
    assert page.position == StreamPosition(5, start.position.epoch)
    gap = await broker.history("c", options, since=StreamPosition(2, page.position.epoch), limit=-1)
    assert [p.offset for p in gap.publications] == [3, 4, 5]
    for lost in (StreamPosition(1, page.position.epoch), StreamPosition(3, "other")):
        with pytest.raises(UnrecoverablePositionError):
            await broker.history("c", options, since=lost, limit=-1)
    newest = await broker.history("c", options, limit=2, reverse=True)
    assert [p.offset for p in newest.publications] == [5, 4]
    unkept = await broker.history("c", NamespaceOptions(), limit=-1)
    assert unkept.publications == []
    assert unkept.position == StreamPosition(0, "")
