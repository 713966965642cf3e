"""``/connection/websocket``: the endpoint Centrifugo client SDKs connect to by default.

A plain ASGI endpoint served as a direct WebSocket (``core.http.direct_websocket``): a
connection lives for hours, and every layer a framework route keeps around it (middleware,
exception handling, dependency exit stacks, a ``WebSocket`` object) costs memory for that
long and time on every message sent. The token travels in the connect command, not in
headers or cookies, so a page on another origin cannot use a visitor's session through this
endpoint: no Origin check is needed.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.types import Receive, Scope, Send

from engineroom.chat.realtime.connection import Connection
from engineroom.chat.realtime.protocol import DisconnectCode
from engineroom.chat.realtime.runtime import find_runtime
from engineroom.core.http import accept_message, direct_websocket
from engineroom.core.http.websocket_frames import frame_writer

WEBSOCKET_PATH = "/connection/websocket"
_TRY_AGAIN_LATER = 1013
_UNSUPPORTED_DATA = 1003
_PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"


class _AsgiTransport:
    __slots__ = ("_send", "_write_frame")

    def __init__(self, send: Send, scope: Scope) -> None:
        self._send = send
        self._write_frame = frame_writer(scope)

    def write_frame(self, frame: bytes) -> bool:
        write = self._write_frame
        return write is not None and write(frame)

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


class ConnectionEndpoint:
    """The ASGI app of the endpoint (a class, so Starlette does not wrap it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        app = scope.get("app")
        runtime = find_runtime(getattr(getattr(app, "state", None), "platform", None))
        if runtime is None or not runtime.hub.accepting:
            # Refused before the handshake completes: the client retries (another process).
            await send({"type": "websocket.close", "code": _TRY_AGAIN_LATER})
            return
        if scope.get("subprotocols") == [_PROTOBUF_SUBPROTOCOL]:
            # Only the JSON encoding is spoken here.
            await send({"type": "websocket.close", "code": _UNSUPPORTED_DATA})
            return
        await send(accept_message(scope))
        hub = runtime.hub
        connection = hub.open(_AsgiTransport(send, scope))
        try:
            await _read(receive, connection)
        except asyncio.CancelledError:
            if not connection.aborted:
                raise
            # The connection ended from our side (closed, slow): not a cancellation of the
            # app, which returns normally.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        finally:
            hub.remove(connection)


async def _read(receive: Receive, connection: Connection) -> None:
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        text = message.get("text")
        if text is None:
            try:
                text = (message.get("bytes") or b"").decode()
            except UnicodeDecodeError:
                connection.close(DisconnectCode.BAD_REQUEST)
                continue
        await connection.handle_frame(text)


router = APIRouter()
router.routes.append(direct_websocket(WEBSOCKET_PATH, ConnectionEndpoint()))
