"""Pre-framed WebSocket messages written through a real uvicorn server on a loopback port.

Each test serves a small ASGI app, in the test's own event loop, with uvicorn running
``FrameWritingProtocol`` (per-message compression off, as ``serve`` runs it), and talks to
it with the ``websockets`` client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from engineroom.core.http.websocket_frames import (
    FRAMES_EXTENSION,
    FrameWriter,
    FrameWritingProtocol,
    frame_writer,
    text_frame,
)

WAIT = 10.0
SIZES = (0, 125, 126, 65_535, 65_536, 200_000)
"""Payload sizes around the frame header's length encodings (7 bits, 16 bits, 64 bits)."""
MULTIBYTE = "é€😀ж"  # 2, 3, 4 and 2 bytes in UTF-8
CHUNK = 65_536
MAX_CHUNKS = 2_000
"""Far more than loopback socket buffers hold: the writer must refuse long before."""

Script = Callable[[Scope, Receive, Send, "Served"], Awaitable[None]]


@dataclass
class Served:
    """What the app saw, for the test to check once the app is done."""

    url: str = ""
    seen: dict[str, object] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def finished(self) -> None:
        async with asyncio.timeout(WAIT):
            await self.done.wait()
        assert self.errors == []


@asynccontextmanager
async def serving(
    script: Script, *, ws: type[asyncio.Protocol] | str = FrameWritingProtocol
) -> AsyncIterator[Served]:
    """Serve ``script`` as the WebSocket app on a free loopback port until the block ends."""
    served = Served()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        try:
            await script(scope, receive, send, served)
        except BaseException as exc:
            served.errors.append(exc)
            raise
        finally:
            served.done.set()

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        ws=ws,
        ws_per_message_deflate=False,
        lifespan="off",
        log_config=None,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        served.url = f"ws://127.0.0.1:{port}/"
        yield served
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def client(url: str) -> AsyncIterator[ClientConnection]:
    async with connect(
        url, compression=None, max_size=None, proxy=None, open_timeout=WAIT
    ) as websocket:
        yield websocket


async def recv_text(websocket: ClientConnection) -> str:
    async with asyncio.timeout(WAIT):
        message = await websocket.recv()
    assert isinstance(message, str), "expected a text message"
    return message


async def closed_by_server(websocket: ClientConnection) -> int | None:
    """Read until the server's close; nothing else may arrive before it."""
    with pytest.raises(ConnectionClosedOK):
        async with asyncio.timeout(WAIT):
            await websocket.recv()
    return websocket.close_code


async def accepted(receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})


async def until_disconnect(receive: Receive) -> Message:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return message


def writer_of(scope: Scope) -> FrameWriter:
    write = frame_writer(scope)
    assert write is not None
    return write


def text_of(size: int, *, multibyte: bool) -> str:
    """A text of exactly ``size`` bytes in UTF-8, multi-byte characters if asked."""
    if not multibyte:
        return "".join(chr(ord("a") + index % 26) for index in range(size))
    parts: list[str] = []
    length = 0
    index = 0
    while size - length >= 4:
        char = MULTIBYTE[index % len(MULTIBYTE)]
        parts.append(char)
        length += len(char.encode())
        index += 1
    parts.append("z" * (size - length))
    text = "".join(parts)
    assert len(text.encode()) == size
    return text


def parse(data: bytes, *, mask: bool = False) -> tuple[Frame, int]:
    """The frame at the start of ``data`` and how many bytes were left after it."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=mask, max_size=None)
    with pytest.raises(StopIteration) as stop:
        next(parser)
    frame: Frame = stop.value.value
    return frame, len(reader.buffer)


# ---- text_frame -------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("multibyte", [False, True], ids=["ascii", "multibyte"])
def test_text_frame_is_one_unmasked_final_text_frame(size: int, multibyte: bool) -> None:
    payload = text_of(size, multibyte=multibyte).encode()
    data = text_frame(payload)
    frame, left = parse(data)
    assert left == 0
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert (frame.rsv1, frame.rsv2, frame.rsv3) == (False, False, False)
    assert frame.data == payload
    assert data[0] == 0x81  # FIN + text
    assert data[1] & 0x80 == 0  # no mask bit: a server never masks
    header = 2 if size <= 125 else 4 if size <= 65_535 else 10
    assert len(data) == header + size


def test_a_client_side_parser_refuses_it_as_unmasked() -> None:
    with pytest.raises(ProtocolError, match="masking"):
        parse(text_frame(b"hello"), mask=True)


# ---- frame_writer -------------------------------------------------------------------------


def _write(frame: bytes) -> bool:
    return bool(frame)


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "websocket"},
        {"type": "websocket", "extensions": {}},
        {"type": "websocket", "extensions": {"websocket.http.response": {}}},
        {"type": "websocket", "extensions": {FRAMES_EXTENSION: None}},
        {"type": "websocket", "extensions": {FRAMES_EXTENSION: {}}},
        {"type": "websocket", "extensions": {FRAMES_EXTENSION: {"write": "not callable"}}},
    ],
)
def test_frame_writer_is_none_without_the_extension(scope: Scope) -> None:
    assert frame_writer(scope) is None


def test_frame_writer_is_the_extensions_write() -> None:
    scope = {"type": "websocket", "extensions": {FRAMES_EXTENSION: {"write": _write}}}
    assert frame_writer(scope) is _write


async def test_frame_writer_is_none_under_uvicorns_default_protocol() -> None:
    async def script(scope: Scope, receive: Receive, send: Send, served: Served) -> None:
        served.seen["writer"] = frame_writer(scope)
        await accepted(receive, send)
        await send({"type": "websocket.send", "text": "plain"})
        await send({"type": "websocket.close", "code": 1000})

    async with serving(script, ws="auto") as served, client(served.url) as websocket:
        assert await recv_text(websocket) == "plain"
        assert await closed_by_server(websocket) == 1000
        await served.finished()
    assert served.seen["writer"] is None


# ---- FrameWritingProtocol -----------------------------------------------------------------


async def test_frames_and_sends_arrive_intact_and_in_order() -> None:
    kinds = ["frame", "send", "frame", "frame", "send", "send", "frame"] + ["frame", "send"] * 50
    expected = [f"message {index} by {kind}" for index, kind in enumerate(kinds)]

    async def script(scope: Scope, receive: Receive, send: Send, served: Served) -> None:
        write = writer_of(scope)
        await accepted(receive, send)
        written = []
        for kind, text in zip(kinds, expected, strict=True):
            if kind == "frame":
                written.append(write(text_frame(text.encode())))
            else:
                await send({"type": "websocket.send", "text": text})
        served.seen["written"] = written
        message = await receive()
        await send({"type": "websocket.send", "text": f"echo {message['text']}"})
        await send({"type": "websocket.close", "code": 1000})

    async with serving(script) as served, client(served.url) as websocket:
        received = [await recv_text(websocket) for _ in expected]
        await websocket.send("bye")
        assert await recv_text(websocket) == "echo bye"
        assert await closed_by_server(websocket) == 1000
        await served.finished()
    assert received == expected
    assert served.seen["written"] == [True] * kinds.count("frame")


@pytest.mark.parametrize(
    ("size", "multibyte"),
    [(size, False) for size in SIZES] + [(size, True) for size in SIZES if size],
)
async def test_payload_sizes_round_trip(size: int, multibyte: bool) -> None:
    text = text_of(size, multibyte=multibyte)

    async def script(scope: Scope, receive: Receive, send: Send, served: Served) -> None:
        write = writer_of(scope)
        await accepted(receive, send)
        served.seen["written"] = write(text_frame(text.encode()))
        # The same text the ASGI way, then again as a frame: the stream stays in step.
        await send({"type": "websocket.send", "text": text})
        write(text_frame(text.encode()))
        await until_disconnect(receive)

    async with serving(script) as served, client(served.url) as websocket:
        received = [await recv_text(websocket) for _ in range(3)]
        await websocket.close()
        await served.finished()
    assert served.seen["written"] is True
    for message in received:
        assert len(message.encode()) == size
        assert message == text


async def test_write_refuses_before_the_accept_and_after_a_close() -> None:
    async def script(scope: Scope, receive: Receive, send: Send, served: Served) -> None:
        write = writer_of(scope)
        assert (await receive())["type"] == "websocket.connect"
        served.seen["before accept"] = write(text_frame(b"too early"))
        await send({"type": "websocket.accept"})
        served.seen["open"] = write(text_frame(b"live"))
        await send({"type": "websocket.close", "code": 1000})
        served.seen["after close"] = write(text_frame(b"too late"))
        await until_disconnect(receive)

    async with serving(script) as served, client(served.url) as websocket:
        assert await recv_text(websocket) == "live"
        assert await closed_by_server(websocket) == 1000
        await served.finished()
    assert served.seen == {"before accept": False, "open": True, "after close": False}


async def test_write_refuses_after_the_handshake_is_refused() -> None:
    async def script(scope: Scope, receive: Receive, send: Send, served: Served) -> None:
        write = writer_of(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.close", "code": 1008})
        served.seen["after refusal"] = write(text_frame(b"never"))

    async with serving(script) as served:
        with pytest.raises(InvalidStatus) as refused:
            async with client(served.url):
                pass
        await served.finished()
    assert refused.value.response.status_code == 403
    assert served.seen == {"after refusal": False}


async def test_write_refuses_during_a_denial_response() -> None:
    async def script(scope: Scope, receive: Receive, send: Send, served: Served) -> None:
        write = writer_of(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 429,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        served.seen["mid response"] = write(text_frame(b"never"))
        await send({"type": "websocket.http.response.body", "body": b"slow down"})

    async with serving(script) as served:
        with pytest.raises(InvalidStatus) as refused:
            async with client(served.url):
                pass
        await served.finished()
    assert refused.value.response.status_code == 429
    assert refused.value.response.body == b"slow down"
    assert served.seen == {"mid response": False}


async def test_write_refuses_once_the_client_is_gone() -> None:
    async def script(scope: Scope, receive: Receive, send: Send, served: Served) -> None:
        write = writer_of(scope)
        await accepted(receive, send)
        served.seen["disconnect"] = (await until_disconnect(receive))["code"]
        served.seen["after disconnect"] = write(text_frame(b"nobody"))

    async with serving(script) as served:
        async with client(served.url) as websocket:
            await websocket.close(1000)
        await served.finished()
    assert served.seen == {"disconnect": 1000, "after disconnect": False}


async def test_write_refuses_while_the_send_buffer_is_full() -> None:
    filler = "x" * (CHUNK - 8)

    async def script(scope: Scope, receive: Receive, send: Send, served: Served) -> None:
        write = writer_of(scope)
        await accepted(receive, send)
        # The client runs in this same event loop: nothing is read until this yields.
        count = 0
        while count < MAX_CHUNKS and write(text_frame(f"{count:08d}{filler}".encode())):
            count += 1
        served.seen["frames"] = count
        # The ASGI send waits for the buffer to drain instead.
        await send({"type": "websocket.send", "text": "drained"})
        served.seen["after drain"] = write(text_frame(b"final"))
        await until_disconnect(receive)

    async with serving(script) as served, client(served.url) as websocket:
        received = []
        while (message := await recv_text(websocket)) != "drained":
            received.append(message)
        assert await recv_text(websocket) == "final"
        await websocket.close()
        await served.finished()
    count = served.seen["frames"]
    assert isinstance(count, int)
    assert 0 < count < MAX_CHUNKS
    assert received == [f"{index:08d}{filler}" for index in range(count)]
    assert served.seen["after drain"] is True
