"""Request body size limit.

A declared ``Content-Length`` over the limit is refused at once, before any route work
(``EdgeMiddleware``). A body without one (chunked) is counted as it streams: the read that
crosses the limit raises a 413 ``HTTPException``, which the app's handlers render as a
problem. Nothing is buffered here. Routes may lower the limit with FastAPI's
``max_body_size``; this one is the ceiling.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

MALFORMED = -1


def declared_length(value: bytes | None) -> int | None:
    """The Content-Length, ``None`` when absent, ``MALFORMED`` when not a number."""
    if value is None:
        return None
    text = value.strip()
    # bytes.isdigit() accepts ASCII digits only (str.isdigit() would take "²" too).
    return int(text) if text.isdigit() else MALFORMED


def counting_receive(receive: Receive, max_bytes: int) -> Receive:
    """``receive`` that raises 413 once the body read so far exceeds ``max_bytes``."""
    total = 0

    async def receive_counted() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > max_bytes:
                raise HTTPException(status_code=413, detail="Content Too Large")
        return message

    return receive_counted
