"""The Centrifugo client protocol (v2, JSON encoding): frames, codes and encoders.

A WebSocket text frame carries one or more JSON objects separated by ``\\n``. A client
sends commands (``{"id": 1, "subscribe": {"channel": "public:lobby"}}``); the server
answers each command that has an ``id`` with a reply carrying the same ``id`` and either a
result under the method's name or ``"error": {"code", "message"}``. Pushes have no ``id``
(``{"push": {"channel": ..., "pub": {...}}}``). An empty object ``{}`` is the ping the
server sends and the pong the client answers with.

Publications are encoded here once, as text, and that same text is queued for every
subscriber of the channel (see ``publication_push``): fan-out never re-encodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import orjson

from engineroom.core.http.websocket_frames import text_frame

METHODS = frozenset(
    {
        "connect",
        "subscribe",
        "unsubscribe",
        "publish",
        "presence",
        "presence_stats",
        "history",
        "ping",
        "send",
        "rpc",
        "refresh",
        "sub_refresh",
    }
)
MAX_COMMAND_ID = 2**32 - 1
"""Ids are uint32 in the protocol schema."""

PING = "{}"
"""The server's ping (and the client's pong): an empty reply."""

JSON = object
"""A value decoded from JSON (dict, list, str, int, float, bool or None)."""


class ErrorCode(IntEnum):
    """Codes of errors in replies to commands."""

    INTERNAL = 100
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    METHOD_NOT_FOUND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109
    EXPIRED = 110
    TOO_MANY_REQUESTS = 111
    UNRECOVERABLE_POSITION = 112


_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INTERNAL: "internal server error",
    ErrorCode.UNAUTHORIZED: "unauthorized",
    ErrorCode.UNKNOWN_CHANNEL: "unknown channel",
    ErrorCode.PERMISSION_DENIED: "permission denied",
    ErrorCode.METHOD_NOT_FOUND: "method not found",
    ErrorCode.ALREADY_SUBSCRIBED: "already subscribed",
    ErrorCode.LIMIT_EXCEEDED: "limit exceeded",
    ErrorCode.BAD_REQUEST: "bad request",
    ErrorCode.NOT_AVAILABLE: "not available",
    ErrorCode.TOKEN_EXPIRED: "token expired",
    ErrorCode.EXPIRED: "expired",
    ErrorCode.TOO_MANY_REQUESTS: "too many requests",
    ErrorCode.UNRECOVERABLE_POSITION: "unrecoverable position",
}
# Temporary errors tell the client to retry the same command later.
_TEMPORARY = frozenset({ErrorCode.INTERNAL, ErrorCode.TOO_MANY_REQUESTS})


APPLICATION_ERROR_MIN = 400
"""Codes below are the protocol's own; application errors (RPC methods of the chat
domain) use codes from here on, the HTTP status of the same error (403, 404, 409...)."""


class ReplyError(Exception):
    """An error answered to one command; the connection stays open."""

    def __init__(self, code: ErrorCode | int, message: str | None = None) -> None:
        self.code = code
        known = code if isinstance(code, ErrorCode) else None
        self.message = message or (_MESSAGES[known] if known else "application error")
        self.temporary = code in _TEMPORARY
        super().__init__(f"{int(code)}: {self.message}")

    def as_dict(self) -> dict[str, object]:
        error: dict[str, object] = {"code": int(self.code), "message": self.message}
        if self.temporary:
            error["temporary"] = True
        return error


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Why the server closes a connection; sent as the WebSocket close code and reason.

    Clients reconnect after codes 3000-3499 (and 4000-4499); 3500-3999 (and 4500-4999)
    are terminal.
    """

    code: int
    reason: str

    @property
    def reconnect(self) -> bool:
        return self.code < 3500 or self.code >= 5000 or 4000 <= self.code < 4500


class DisconnectCode:
    CONNECTION_CLOSED = Disconnect(3000, "connection closed")
    SHUTDOWN = Disconnect(3001, "shutdown")
    SERVER_ERROR = Disconnect(3004, "internal server error")
    EXPIRED = Disconnect(3005, "connection expired")
    SLOW = Disconnect(3008, "slow")
    INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
    FORCE_RECONNECT = Disconnect(3011, "force reconnect")
    NO_PONG = Disconnect(3012, "no pong")
    INVALID_TOKEN = Disconnect(3500, "invalid token")
    BAD_REQUEST = Disconnect(3501, "bad request")
    STALE = Disconnect(3502, "stale")
    FORCE_DISCONNECT = Disconnect(3503, "force disconnect")
    CONNECTION_LIMIT = Disconnect(3504, "connection limit")
    MESSAGE_TOO_BIG = Disconnect(1009, "message too big")
    """The WebSocket code for an oversized frame (clients do not reconnect)."""


class UnsubscribeCode:
    """Codes of unsubscribe pushes: below 2500 final, 2500 and above resubscribe."""

    SERVER = (2000, "server unsubscribe")
    INSUFFICIENT_STATE = (2500, "insufficient state")


class FrameError(Exception):
    """A frame that is not the protocol at all: the connection is closed (bad request)."""


@dataclass(frozen=True, slots=True)
class Command:
    id: int
    method: str | None
    """``None`` for an empty command: the client's pong."""
    params: dict[str, object]


def parse_frame(text: str) -> list[Command]:
    """Split a frame into commands; raise ``FrameError`` if any line is not a command."""
    commands: list[Command] = []
    for line in text.split("\n"):
        if not line or line.isspace():
            continue
        commands.append(parse_command(line))
    if not commands:
        raise FrameError("empty frame")
    return commands


def parse_command(line: str) -> Command:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FrameError("a command must be a JSON object")
    raw_id = value.get("id", 0)
    if type(raw_id) is not int or not 0 <= raw_id <= MAX_COMMAND_ID:
        raise FrameError("id must be an unsigned 32-bit integer")
    for method, params in value.items():
        if method in METHODS and params is not None:
            if not isinstance(params, dict):
                raise FrameError(f"{method} must be an object")
            return Command(raw_id, method, params)
    return Command(raw_id, None, {})


# ---- encoding ----------------------------------------------------------------------------


def dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def dumps_kept(value: object) -> bytes:
    """JSON bytes to keep for long (presence entries, client info): ``orjson.dumps``
    answers with an object that holds a 4 KB buffer whatever its length, which ten
    thousand connections would each keep; this is a copy of exactly its length."""
    return bytes(memoryview(orjson.dumps(value)))


def encode_reply(command_id: int, method: str, result: dict[str, object]) -> str:
    return dumps({"id": command_id, method: result})


def encode_error(command_id: int, error: ReplyError) -> str:
    return dumps({"id": command_id, "error": error.as_dict()})


def encode_push(channel: str, kind: str, body: dict[str, object]) -> str:
    return dumps({"push": {"channel": channel, kind: body}})


def publication_head(channel: str) -> bytes:
    """The start of a publication push, up to the publication's first field."""
    return b'{"push":{"channel":' + orjson.dumps(channel) + b',"pub":{'


def publication_body(
    data: JSON,
    *,
    info: object | None = None,
    tags: dict[str, str] | None = None,
) -> bytes:
    """A publication's fields other than ``offset``, as JSON without the braces.

    Stored as is in the history and spliced into pushes and replies, so a publication is
    serialised once for its whole life.
    """
    fields: dict[str, object] = {"data": data}
    if info is not None:
        fields["info"] = info
    if tags:
        fields["tags"] = tags
    return orjson.dumps(fields)[1:-1]


class SharedText(str):
    """A message written to many connections: framed once, the same bytes for every one
    that can take a frame as it is (see ``core.http.websocket_frames``)."""

    _frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:
            frame = self._frame = text_frame(self.encode())
        return frame


def shared(push: str) -> SharedText:
    return push if isinstance(push, SharedText) else SharedText(push)


def publication_push(channel_head: bytes, offset: int, body: bytes) -> SharedText:
    """The push frame for one publication (``offset`` 0: the channel keeps no history)."""
    if offset:
        return SharedText((channel_head + b'"offset":%d,' % offset + body + b"}}}").decode())
    return SharedText((channel_head + body + b"}}}").decode())


def publication_object(offset: int, body: bytes) -> orjson.Fragment:
    """A stored publication as a JSON fragment for replies (history, recovery)."""
    if offset:
        return orjson.Fragment(b'{"offset":%d,' % offset + body + b"}")
    return orjson.Fragment(b"{" + body + b"}")
