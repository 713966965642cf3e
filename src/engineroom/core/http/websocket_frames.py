"""WebSocket frames written as they are: one encoding of a message for many connections.

Through ASGI a WebSocket message is handed over as text, and the server encodes and frames
it again for each connection: a fan-out of one publication to a thousand subscribers
would encode and frame the same bytes a thousand times. ``serve`` runs uvicorn with
``FrameWritingProtocol``, its own WebSocket protocol plus one ASGI extension: the scope of
an accepted connection carries a ``write`` callable that puts an already framed message
(``text_frame``) on the socket as it is. A frame written this way is one complete,
unfragmented, uncompressed frame (per-message compression is off in ``serve``), which is
all the protocol state machine needs to know about data frames.

The extension is an optimisation only: ``frame_writer`` answers ``None`` under any other
server (tests drive the app in process), and ``write`` refuses, answering ``False``, when
the message must take the ASGI way instead: before the handshake completes, once a close
is sent, or while the socket's send buffer is full, where ``send`` waits for it to drain.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Scope
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

FRAMES_EXTENSION = "engineroom.websocket.frames"

FrameWriter = Callable[[bytes], bool]


def text_frame(payload: bytes) -> bytes:
    """A complete server-to-client text frame (servers do not mask) for ``payload``."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def frame_writer(scope: Scope) -> FrameWriter | None:
    """The connection's frame writer, when the server offers one."""
    extension = scope.get("extensions", {}).get(FRAMES_EXTENSION)
    if not isinstance(extension, dict):
        return None
    write = extension.get("write")
    return write if callable(write) else None


class FrameWritingProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (the websockets sans-I/O one) with the frames extension."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if not self.close_sent:  # the upgrade was valid: the app now decides
            self.scope["extensions"][FRAMES_EXTENSION] = {"write": self.write_frame}

    def write_frame(self, frame: bytes) -> bool:
        """Write ``frame`` now, or answer ``False`` when it must go through ``send``."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            # The peer's close was answered (that sets no ``close_sent``): a data frame
            # now would follow the close frame, or be dropped by the closing transport.
            or self.transport.is_closing()
            or self.initial_response is not None
            or not self.writable.is_set()
        ):
            return False
        self.transport.write(frame)
        return True
