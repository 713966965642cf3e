"""Request body size limit.

A declared ``Content-Length`` over the limit is refused at once, before any route work.
A body without one (chunked) is counted as it streams by Starlette's
``RequestBodyLimitMiddleware``: the read that crosses the limit raises a 413
``HTTPException``, which the app's handlers render as a problem. Nothing is buffered here.
Routes may lower the limit with FastAPI's ``max_body_size``; this one is the ceiling.
"""

from __future__ import annotations

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from engineroom.core.errors import ErrorDetail
from engineroom.core.http._problem import send_problem


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._streaming_limit = RequestBodyLimitMiddleware(app, max_body_size=max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared == -1:
            error = ErrorDetail(
                status=400, code="bad_request", message="The Content-Length header is not valid."
            )
            await send_problem(scope, receive, send, error)
            return
        if declared is not None and declared > self.max_bytes:
            error = ErrorDetail(
                status=413,
                code="payload_too_large",
                message=f"The request body is larger than {self.max_bytes} bytes.",
            )
            await send_problem(scope, receive, send, error)
            return
        await self._streaming_limit(scope, receive, send)


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length, None when absent, -1 when malformed."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
            return int(text) if text.isascii() and text.isdigit() else -1
    return None
