"""Direct WebSockets: served by ``PlatformApp`` itself, as the router would choose them."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import structlog
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.routing import Host, Mount, Router, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send

from engineroom.app import create_app
from engineroom.core.http import install_middleware
from engineroom.core.http.direct_websocket import (
    PlatformApp,
    accept_message,
    direct_websocket,
    direct_websocket_paths,
)
from engineroom.settings import Settings

HEX_ID = re.compile(r"[0-9a-f]{32}")
# What FastAPI's and Starlette's layers leave in the scope of a WebSocket they route.
FRAMEWORK_KEYS = frozenset(
    {"router", "route", "endpoint", "path_params", "starlette.exception_handlers"}
)


@dataclass(eq=False)
class Endpoint:
    """A plain ASGI WebSocket endpoint that echoes one message, recording what it saw."""

    name: str
    scopes: list[Scope] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    logged_ids: list[object] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        self.sends.append(send)
        self.logged_ids.append(structlog.contextvars.get_contextvars().get("request_id"))
        assert (await receive())["type"] == "websocket.connect"
        await send(accept_message(scope))
        message = await receive()
        await send({"type": "websocket.send", "text": f"{self.name}:{message['text']}"})
        await send({"type": "websocket.close", "code": 1000})

    @property
    def calls(self) -> int:
        return len(self.scopes)


@dataclass
class Session:
    sent: list[Message]
    send: Send
    """The server's own ``send`` callable the app was given."""


async def websocket_session(
    app: FastAPI,
    path: str,
    *,
    host: str = "testserver",
    request_id: str | None = None,
    root_path: str = "",
) -> Session:
    """Drive one WebSocket session through the ASGI app as a server would."""
    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[Message] = []
    headers = [(b"host", host.encode())]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "subprotocols": [],
    }

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return Session(sent, send)


def served_directly(endpoint: Endpoint, session: Session) -> bool:
    """Whether the endpoint's last call got the server's ``send`` and no framework state."""
    scope = endpoint.scopes[-1]
    return endpoint.sends[-1] is session.send and not FRAMEWORK_KEYS & scope.keys()


def request_id_of(accept: Message) -> str:
    assert accept["type"] == "websocket.accept"
    values = [value for name, value in accept.get("headers", []) if name == b"x-request-id"]
    assert len(values) == 1, accept
    return bytes(values[0]).decode()


def platform_app(*routes: WebSocketRoute | Mount | Host) -> PlatformApp:
    app = PlatformApp()
    app.router.routes.extend(routes)
    return app


@pytest.fixture
def edge_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allowed_hosts": ["testserver", "*.example.com"]})


# ---- served directly -------------------------------------------------------------------


async def test_a_direct_websocket_is_served_without_the_framework_layers() -> None:
    endpoint = Endpoint("direct")
    app = platform_app(direct_websocket("/ws/direct", endpoint))
    session = await websocket_session(app, "/ws/direct")
    assert [m["type"] for m in session.sent] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert session.sent[1]["text"] == "direct:hello"
    assert endpoint.calls == 1
    assert endpoint.sends[0] is session.send
    scope = endpoint.scopes[0]
    assert not FRAMEWORK_KEYS & scope.keys()
    assert not any(key.startswith("fastapi") for key in scope)
    assert scope["app"] is app


async def test_the_edge_middleware_is_bypassed_but_its_checks_are_kept(
    edge_settings: Settings,
) -> None:
    endpoint = Endpoint("direct")
    app = platform_app(direct_websocket("/ws/direct", endpoint))
    install_middleware(app, edge_settings)
    assert app.host_policy is not None
    session = await websocket_session(app, "/ws/direct", host="api.example.com", request_id="e-1")
    assert served_directly(endpoint, session)
    assert request_id_of(session.sent[0]) == "e-1"


async def test_the_accept_echoes_a_safe_request_id_and_logs_with_it() -> None:
    endpoint = Endpoint("direct")
    app = platform_app(direct_websocket("/ws/direct", endpoint))
    session = await websocket_session(app, "/ws/direct", request_id="edge-42.a_B")
    assert request_id_of(session.sent[0]) == "edge-42.a_B"
    assert endpoint.scopes[0]["state"]["request_id"] == "edge-42.a_B"
    assert endpoint.logged_ids == ["edge-42.a_B"]
    # Bound for the connection only.
    assert "request_id" not in structlog.contextvars.get_contextvars()


@pytest.mark.parametrize("bad", ["has space", 'quote"d', "x" * 129, "é"])
async def test_an_unsafe_request_id_is_replaced(bad: str) -> None:
    endpoint = Endpoint("direct")
    app = platform_app(direct_websocket("/ws/direct", endpoint))
    session = await websocket_session(app, "/ws/direct", request_id=bad)
    request_id = request_id_of(session.sent[0])
    assert HEX_ID.fullmatch(request_id)
    assert endpoint.logged_ids == [request_id]


async def test_each_connection_gets_its_own_request_id() -> None:
    app = platform_app(direct_websocket("/ws/direct", Endpoint("direct")))
    first = await websocket_session(app, "/ws/direct")
    second = await websocket_session(app, "/ws/direct")
    assert request_id_of(first.sent[0]) != request_id_of(second.sent[0])


@pytest.mark.parametrize("host", ["evil.test", "example.com", "testserver.evil.test", ""])
async def test_an_untrusted_host_is_refused_before_the_accept(
    edge_settings: Settings, host: str
) -> None:
    endpoint = Endpoint("direct")
    app = platform_app(direct_websocket("/ws/direct", endpoint))
    install_middleware(app, edge_settings)
    session = await websocket_session(app, "/ws/direct", host=host)
    assert session.sent == [{"type": "websocket.close", "code": 1008}]
    assert endpoint.calls == 0


async def test_without_the_edge_every_host_is_accepted() -> None:
    endpoint = Endpoint("direct")
    app = platform_app(direct_websocket("/ws/direct", endpoint))
    assert app.host_policy is None
    session = await websocket_session(app, "/ws/direct", host="evil.test")
    assert session.sent[1]["text"] == "direct:hello"
    assert served_directly(endpoint, session)


async def test_other_websockets_and_http_still_take_fastapis_way(edge_settings: Settings) -> None:
    app = platform_app(direct_websocket("/ws/direct", Endpoint("direct")))

    @app.websocket("/ws/routed")
    async def routed(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(f"routed:{await websocket.receive_text()}")
        await websocket.close()

    install_middleware(app, edge_settings)
    session = await websocket_session(app, "/ws/routed", request_id="r-1")
    assert session.sent[1]["text"] == "routed:hello"
    assert request_id_of(session.sent[0]) == "r-1"
    refused = await websocket_session(app, "/ws/routed", host="evil.test")
    assert refused.sent == [{"type": "websocket.close", "code": 1008}]


# ---- when FastAPI's router decides ---------------------------------------------------------


@pytest.mark.parametrize(
    "earlier",
    [
        pytest.param(lambda ep: WebSocketRoute("/ws/direct", ep), id="same-path"),
        pytest.param(lambda ep: WebSocketRoute("/ws/{name}", ep), id="template"),
        pytest.param(
            lambda ep: Mount("/ws", routes=[WebSocketRoute("/direct", ep)]), id="mount-route"
        ),
        pytest.param(lambda ep: Mount("/ws", app=ep), id="mount-app"),
    ],
)
async def test_an_earlier_route_matching_the_path_serves_it(
    earlier: Callable[[Endpoint], WebSocketRoute | Mount],
) -> None:
    shadowing, direct = Endpoint("earlier"), Endpoint("direct")
    app = platform_app(earlier(shadowing), direct_websocket("/ws/direct", direct))
    assert "/ws/direct" not in direct_websocket_paths(app.router.routes)
    session = await websocket_session(app, "/ws/direct")
    assert session.sent[1]["text"] == "earlier:hello"
    assert direct.calls == 0
    assert shadowing.calls == 1
    assert shadowing.sends[0] is not session.send  # through the framework's layers


async def test_an_earlier_route_on_a_fastapi_websocket_shadows_too() -> None:
    direct = Endpoint("direct")
    app = PlatformApp()

    @app.websocket("/ws/direct")
    async def earlier(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(f"earlier:{await websocket.receive_text()}")
        await websocket.close()

    app.router.routes.append(direct_websocket("/ws/direct", direct))
    session = await websocket_session(app, "/ws/direct")
    assert session.sent[1]["text"] == "earlier:hello"
    assert direct.calls == 0


async def test_earlier_routes_on_other_paths_or_for_http_do_not_shadow() -> None:
    direct, other = Endpoint("direct"), Endpoint("other")
    app = PlatformApp()

    @app.get("/ws/direct")
    async def http_page() -> dict[str, str]:
        return {"page": "http"}

    app.router.routes.extend(
        [
            WebSocketRoute("/ws/other", other),
            Mount("/elsewhere", app=other),
            WebSocketRoute("/ws/direct/{name}", other),
            direct_websocket("/ws/direct", direct),
        ]
    )
    assert set(direct_websocket_paths(app.router.routes)) == {"/ws/direct"}
    session = await websocket_session(app, "/ws/direct")
    assert served_directly(direct, session)
    assert other.calls == 0


async def test_a_later_route_on_the_same_path_changes_nothing() -> None:
    direct, later = Endpoint("direct"), Endpoint("later")
    app = platform_app(direct_websocket("/ws/direct", direct), WebSocketRoute("/ws/direct", later))
    session = await websocket_session(app, "/ws/direct")
    assert served_directly(direct, session)
    assert later.calls == 0


async def test_a_host_route_leaves_every_later_route_to_the_router() -> None:
    direct, hosted = Endpoint("direct"), Endpoint("hosted")
    app = platform_app(
        Host("ws.example.com", app=Router(routes=[WebSocketRoute("/ws/direct", hosted)])),
        direct_websocket("/ws/direct", direct),
    )
    assert direct_websocket_paths(app.router.routes) == {}
    on_host = await websocket_session(app, "/ws/direct", host="ws.example.com")
    assert on_host.sent[1]["text"] == "hosted:hello"
    elsewhere = await websocket_session(app, "/ws/direct", host="testserver")
    # The router's way still reaches the endpoint, through its layers.
    assert elsewhere.sent[1]["text"] == "direct:hello"
    assert not served_directly(direct, elsewhere)


async def test_under_a_root_path_the_connection_takes_fastapis_way(
    edge_settings: Settings,
) -> None:
    endpoint = Endpoint("direct")
    app = platform_app(direct_websocket("/ws/direct", endpoint))
    install_middleware(app, edge_settings)
    session = await websocket_session(app, "/ws/direct", root_path="/api", request_id="root-1")
    assert session.sent[1]["text"] == "direct:hello"
    assert endpoint.sends[0] is not session.send
    assert "router" in endpoint.scopes[0]
    # The edge on FastAPI's way gives the same request id exactly once.
    assert request_id_of(session.sent[0]) == "root-1"
    refused = await websocket_session(app, "/ws/direct", root_path="/api", host="evil.test")
    assert refused.sent == [{"type": "websocket.close", "code": 1008}]
    assert endpoint.calls == 1


async def test_a_path_that_is_not_exactly_the_route_is_not_served_directly() -> None:
    endpoint = Endpoint("direct")
    app = platform_app(direct_websocket("/ws/direct", endpoint))
    for path in ("/ws/direct/", "/ws/Direct", "/ws/direct/more"):
        session = await websocket_session(app, path)
        assert session.sent == [{"type": "websocket.close", "code": 1000, "reason": ""}]
    assert endpoint.calls == 0


# ---- the index -------------------------------------------------------------------------


async def test_routes_added_after_the_first_connection_are_picked_up() -> None:
    first, second, shadowing = Endpoint("first"), Endpoint("second"), Endpoint("shadowing")
    app = platform_app(direct_websocket("/ws/first", first))
    assert served_directly(first, await websocket_session(app, "/ws/first"))
    unknown = await websocket_session(app, "/ws/second")
    assert unknown.sent[0]["type"] == "websocket.close"

    app.router.routes.append(direct_websocket("/ws/second", second))
    assert served_directly(second, await websocket_session(app, "/ws/second"))

    router = APIRouter()
    router.routes.append(direct_websocket("/third", Endpoint("third")))
    app.include_router(router, prefix="/ws")
    third = await websocket_session(app, "/ws/third")
    assert third.sent[1]["text"] == "third:hello"

    # A route inserted in front takes the path from the direct one.
    app.router.routes.insert(0, WebSocketRoute("/ws/first", shadowing))
    session = await websocket_session(app, "/ws/first")
    assert session.sent[1]["text"] == "shadowing:hello"
    assert first.calls == 1


def test_a_templated_path_is_refused() -> None:
    with pytest.raises(ValueError, match="exact path"):
        direct_websocket("/ws/{room}", Endpoint("direct"))


async def test_included_routers_are_indexed_with_their_full_path() -> None:
    chat, nested = Endpoint("chat"), Endpoint("nested")
    inner = APIRouter()
    inner.routes.append(direct_websocket("/nested", nested))
    outer = APIRouter()
    outer.routes.append(direct_websocket("/chat", chat))
    outer.include_router(inner, prefix="/inner")
    app = PlatformApp()
    app.include_router(outer, prefix="/ws/v1")

    paths = direct_websocket_paths(app.router.routes)
    assert paths == {"/ws/v1/chat": chat, "/ws/v1/inner/nested": nested}
    session = await websocket_session(app, "/ws/v1/chat")
    assert session.sent[1]["text"] == "chat:hello"
    assert served_directly(chat, session)
    nested_session = await websocket_session(app, "/ws/v1/inner/nested")
    assert served_directly(nested, nested_session)
    # The route's own path, without the prefix, is not served.
    assert (await websocket_session(app, "/chat")).sent[0]["type"] == "websocket.close"
    assert chat.calls == 1


async def test_an_earlier_included_route_shadows_a_later_direct_one() -> None:
    earlier, direct = Endpoint("earlier"), Endpoint("direct")
    router = APIRouter()
    router.routes.append(WebSocketRoute("/{name}", earlier))
    app = PlatformApp()
    app.include_router(router, prefix="/ws")
    app.router.routes.append(direct_websocket("/ws/direct", direct))
    assert direct_websocket_paths(app.router.routes) == {}
    session = await websocket_session(app, "/ws/direct")
    assert session.sent[1]["text"] == "earlier:hello"
    assert direct.calls == 0


# ---- accept message ----------------------------------------------------------------------


def test_the_accept_message_carries_the_request_id_and_subprotocol() -> None:
    scope: Scope = {"type": "websocket", "state": {"request_id": "abc"}}
    assert accept_message(scope) == {
        "type": "websocket.accept",
        "headers": [(b"x-request-id", b"abc")],
    }
    assert accept_message(scope, "chat.v2")["subprotocol"] == "chat.v2"
    assert accept_message({"type": "websocket"}) == {"type": "websocket.accept"}


# ---- the application -------------------------------------------------------------------


def test_the_chat_endpoint_of_the_application_is_direct(settings: Settings) -> None:
    app = create_app(settings, run_background=False)
    assert isinstance(app, PlatformApp)
    assert app.host_policy is not None
    assert "/connection/websocket" in direct_websocket_paths(app.router.routes)


def test_a_plain_function_endpoint_is_refused() -> None:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.close", "code": 1000})

    with pytest.raises(TypeError, match="ASGI callable object"):
        direct_websocket("/ws/function", endpoint)
