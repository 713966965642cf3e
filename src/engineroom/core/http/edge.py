"""The platform's edge: one pure-ASGI layer that every request and WebSocket meets first.

It does in one pass over the request headers and one wrapper of ``send`` what used to
take five stacked middlewares (each with its own header scan, ``send`` wrapper and
coroutine frame): request id, trusted hosts, security headers, body size limit and the
request metrics. The order of the checks is the old stacking order: the id is assigned
first (so even a refusal carries it), then the host is checked, then the declared body
size. No ``BaseHTTPMiddleware``: streaming responses and WebSockets pass through
untouched and no request pays for an extra task.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from engineroom.core.errors import ErrorDetail
from engineroom.core.http._problem import send_problem
from engineroom.core.http.body_limit import MALFORMED, counting_receive, declared_length
from engineroom.core.http.request_id import HEADER_KEY, new_request_id, safe_request_id
from engineroom.core.http.security_headers import SecurityHeaders
from engineroom.core.http.trusted_hosts import HostPolicy

POLICY_VIOLATION = 1008
"""The close code of a WebSocket refused before its handshake."""
# Methods whose requests carry no body unless they say so (Content-Length or chunked).
_BODYLESS = frozenset({"GET", "HEAD"})
# HTTP/1.x frames a body by Content-Length or chunked encoding only; other versions may
# stream one without either header, so their bodies are always counted.
_HTTP1 = frozenset({"1.0", "1.1"})


class RequestObserver(Protocol):
    """What the edge reports about each HTTP request (the Prometheus metrics)."""

    def observes(self, scope: Scope) -> bool:
        """Whether this request is counted at all (the scrape itself is not)."""

    def started(self) -> None:
        """A counted request arrived."""

    def finished(self, scope: Scope, status: int, seconds: float) -> None:
        """A counted request ended with ``status`` (500 when it raised)."""


@dataclass(slots=True)
class _Incoming:
    """The request headers the edge acts on: the first of each, raw."""

    host: bytes | None = None
    request_id: bytes | None = None
    content_length: bytes | None = None
    chunked: bool = False


def _scan(headers: list[tuple[bytes, bytes]]) -> _Incoming:
    found = _Incoming()
    for name, value in headers:
        if name == b"host":
            if found.host is None:
                found.host = value
        elif name == HEADER_KEY:
            if found.request_id is None:
                found.request_id = value
        elif name == b"content-length":
            if found.content_length is None:
                found.content_length = value
        elif name == b"transfer-encoding":
            found.chunked = True
    return found


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: HostPolicy,
        security: SecurityHeaders,
        max_body_bytes: int,
        observer: RequestObserver | None = None,
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.security = security
        self.max_body_bytes = max_body_bytes
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = _scan(scope["headers"])
        request_id = safe_request_id(incoming.request_id) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (HEADER_KEY, request_id.encode("latin-1"))
        security = self.security
        docs_page = security.is_docs_page(_route_path(scope))
        https = scope.get("scheme") == "https"
        # An exception that escapes before a response starts becomes a 500 further out.
        status = 500

        async def send_decorated(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                given = message.get("headers", ())
                headers = [header for header in given if header[0].lower() != HEADER_KEY]
                headers.append(id_header)
                security.add_to(given, headers, docs_page=docs_page, https=https)
                message = {**message, "headers": headers}
            await send(message)

        observer = self.observer if self.observer and self.observer.observes(scope) else None
        if observer is not None:
            observer.started()
        started = perf_counter()
        tokens = bind_contextvars(request_id=request_id)
        try:
            await self._serve(scope, receive, send_decorated, incoming)
        finally:
            reset_contextvars(**tokens)
            if observer is not None:
                observer.finished(scope, status, perf_counter() - started)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, incoming: _Incoming) -> None:
        if not self.hosts.allows_header(incoming.host):
            error = ErrorDetail(
                status=400,
                code="invalid_host",
                message="The Host header names a host this server does not answer for.",
            )
            await send_problem(scope, receive, send, error)
            return
        length = declared_length(incoming.content_length)
        if length == MALFORMED:
            error = ErrorDetail(
                status=400, code="bad_request", message="The Content-Length header is not valid."
            )
            await send_problem(scope, receive, send, error)
            return
        if length is not None and length > self.max_body_bytes:
            error = ErrorDetail(
                status=413,
                code="payload_too_large",
                message=f"The request body is larger than {self.max_body_bytes} bytes.",
            )
            await send_problem(scope, receive, send, error)
            return
        if length is None and (
            incoming.chunked
            or scope["method"] not in _BODYLESS
            or scope.get("http_version") not in _HTTP1
        ):
            receive = counting_receive(receive, self.max_body_bytes)
        await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = admit_websocket(self.hosts, scope)
        if request_id is None:
            # Closing before accepting makes the server refuse the handshake (403).
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        id_header = (HEADER_KEY, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "websocket.accept":
                given = message.get("headers", ())
                headers = [header for header in given if header[0].lower() != HEADER_KEY]
                headers.append(id_header)
                message = {**message, "headers": headers}
            await send(message)

        tokens = bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_contextvars(**tokens)


def admit_websocket(hosts: HostPolicy | None, scope: Scope) -> str | None:
    """Give a WebSocket its request id (in the scope state) and check its host: the id,
    or ``None`` when the connection must be refused (``POLICY_VIOLATION``)."""
    incoming = _scan(scope["headers"])
    request_id = safe_request_id(incoming.request_id) or new_request_id()
    scope.setdefault("state", {})["request_id"] = request_id
    if hosts is not None and not hosts.allows_header(incoming.host):
        return None
    return request_id


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path
