"""Direct WebSockets: long-lived connections held without the framework's layers.

A WebSocket served through FastAPI keeps, for as long as it is open, one suspended
coroutine frame per layer it went through: the application, the error middleware, the
edge, the exception middleware, two exit stacks, the router and the route. For a chat
server holding ten thousand connections that is several kilobytes each, and one more
``send`` wrapper on every message written. A route made with ``direct_websocket`` is
served by ``PlatformApp`` itself: it does what the edge does for a WebSocket (request id,
trusted hosts; see ``edge.admit_websocket``) and calls the endpoint, a plain ASGI app,
with the server's own ``receive`` and ``send``.

As for direct HTTP routes, the app decides as the router would: a direct WebSocket is
served directly only when no route registered before it matches its path; otherwise, and
under a ``root_path``, the connection takes FastAPI's way (which leads to the same
endpoint when nothing shadows it).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Host, Mount, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from engineroom.core.http.edge import POLICY_VIOLATION, admit_websocket
from engineroom.core.http.request_id import HEADER_KEY
from engineroom.core.http.trusted_hosts import HostPolicy

_MARK = "__engineroom_direct_websocket__"


def direct_websocket(path: str, endpoint: ASGIApp) -> WebSocketRoute:
    """A WebSocket route on exactly ``path`` whose ASGI ``endpoint`` ``PlatformApp``
    serves itself. The endpoint accepts with ``accept_message(scope)``."""
    if "{" in path:
        raise ValueError(f"{path}: a direct WebSocket has an exact path")
    if inspect.isfunction(endpoint) or inspect.ismethod(endpoint):
        # Starlette would wrap a function as a handler taking a ``WebSocket`` object.
        raise TypeError(f"{path}: a direct WebSocket endpoint is an ASGI callable object")
    # The mark is on the endpoint: including a router copies its routes, not their attributes.
    setattr(endpoint, _MARK, True)
    return WebSocketRoute(path, endpoint)


def accept_message(scope: Scope, subprotocol: str | None = None) -> Message:
    """``websocket.accept`` carrying the request id, as the edge adds it elsewhere."""
    message: Message = {"type": "websocket.accept"}
    request_id = scope.get("state", {}).get("request_id")
    if isinstance(request_id, str):
        message["headers"] = [(HEADER_KEY, request_id.encode("latin-1"))]
    if subprotocol is not None:
        message["subprotocol"] = subprotocol
    return message


def direct_websocket_paths(routes: Sequence[BaseRoute]) -> dict[str, ASGIApp]:
    """The direct WebSockets the router would choose for their own paths."""
    found: dict[str, ASGIApp] = {}
    earlier: list[re.Pattern[str]] = []
    """Paths of earlier routes that can take a WebSocket (HTTP routes never do)."""
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, Host):
            break  # matched on the Host header: later routes cannot be judged here
        if not isinstance(route, (WebSocketRoute, Mount)):
            continue
        regex = getattr(context, "path_regex", None)
        path = context.path_format
        if not isinstance(regex, re.Pattern) or not path:
            break
        if (
            isinstance(route, WebSocketRoute)
            and getattr(context.endpoint, _MARK, False)
            and not any(other.match(path) for other in earlier)
        ):
            found[path] = route.app
        earlier.append(regex)
    return found


class PlatformApp(FastAPI):
    """The platform's FastAPI application: serves direct WebSockets itself."""

    host_policy: HostPolicy | None = None
    """Set with the edge middleware; ``None`` accepts every host (no edge installed)."""

    _direct_websockets: dict[str, ASGIApp] | None = None
    _indexed_routes = -1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not scope.get("root_path"):
            endpoint = self._direct_websocket(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await self._serve_websocket(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _direct_websocket(self, path: str) -> ASGIApp | None:
        routes = self.router.routes
        if self._direct_websockets is None or self._indexed_routes != len(routes):
            # Built at the first connection, again if routes were added since (tests).
            self._direct_websockets = direct_websocket_paths(routes)
            self._indexed_routes = len(routes)
        return self._direct_websockets.get(path)

    async def _serve_websocket(
        self, endpoint: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        request_id = admit_websocket(self.host_policy, scope)
        if request_id is None:
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        tokens = bind_contextvars(request_id=request_id)
        try:
            await endpoint(scope, receive, send)
        finally:
            reset_contextvars(**tokens)
