"""Request ids: accept a safe ``X-Request-ID`` from the caller or make one.

The id is stored in the scope state (``request.state.request_id``), echoed in the
response, and bound to structlog's context so every log line of the request carries it.
The state dict is updated in place, so the app's outermost error handler (which runs
outside this middleware) still sees the id when it logs and renders a 500.
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
# Ids end up in logs and headers: anything else (spaces, quotes, control characters,
# huge values) could forge log entries or split headers, so it is replaced.
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_START_MESSAGES = {"http": "http.response.start", "websocket": "websocket.accept"}


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start_message = _START_MESSAGES.get(scope["type"])
        if start_message is None:
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (_HEADER_KEY, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == start_message:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != _HEADER_KEY
                ]
                headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            candidate = value.decode("latin-1")
            return candidate if _SAFE_ID.fullmatch(candidate) else None
    return None
