"""A minimal WebSocket client for load generation: many connections, little CPU.

Only what the benchmark needs from RFC 6455: the upgrade handshake, masked text frames
out, unmasked frames in (text, close, ping), no extensions. Each text frame is split into
the protocol's newline-separated messages and handed to a callback.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import cast

import orjson

_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA
_ZERO_MASK = b"\x00\x00\x00\x00"
"""Masking with a zero key leaves the payload as is (the load generator is not a browser)."""


def _frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + _ZERO_MASK + payload


class WsClient(asyncio.Protocol):
    def __init__(self, host: str, port: int, path: str, on_message: Callable[[bytes], None]):
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self._on_message = on_message
        self._buffer = bytearray()
        self._upgraded = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(1006)

    def send(self, message: dict[str, object]) -> None:
        self.send_text(orjson.dumps(message))

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(_TEXT, payload))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[:12])
            del self._buffer[: end + 4]
            if b" 101" not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self._upgraded = True
            self.opened.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = struct.unpack_from("!H", buffer, 2)[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._handle(opcode, payload)

    def _handle(self, opcode: int, payload: bytes) -> None:
        if opcode == _TEXT:
            for line in payload.split(b"\n"):
                if line == b"{}":
                    self.send_text(b"{}")  # the protocol's pong
                elif line:
                    self._on_message(line)
        elif opcode == _PING and self.transport is not None:
            self.transport.write(_frame(_PONG, payload))
        elif opcode == _CLOSE:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            if not self.closed.done():
                self.closed.set_result(code)
            if self.transport is not None:
                self.transport.close()


async def open_client(
    host: str, port: int, on_message: Callable[[bytes], None], path: str = "/connection/websocket"
) -> WsClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: WsClient(host, port, path, on_message), host, port
    )
    await asyncio.wait_for(client.opened, 30)
    return client
