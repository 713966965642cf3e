"""HTTP middleware: request id, trusted hosts, CORS, security headers, body size limit."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request, WebSocket
from starlette.responses import HTMLResponse
from starlette.types import Message

from engineroom.core.errors import ErrorRenderers, install_error_handlers
from engineroom.core.http import install_middleware
from engineroom.core.http.security_headers import API_CSP, HSTS
from engineroom.core.http.trusted_hosts import HostPolicy, parse_host
from engineroom.core.responses import ORJSONResponse
from engineroom.settings import Settings

MAX_BODY = 2048
ALLOWED_ORIGIN = "https://app.example.com"
HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def http_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "allowed_hosts": ["testserver", "::1", "127.0.0.1", "*.example.com"],
            "cors_origins": [ALLOWED_ORIGIN],
            "max_body_bytes": MAX_BODY,
        }
    )


class Calls:
    def __init__(self) -> None:
        self.count = 0


def build_app(settings: Settings, calls: Calls | None = None) -> FastAPI:
    calls = calls or Calls()
    app = FastAPI(default_response_class=ORJSONResponse)
    install_error_handlers(app, ErrorRenderers())

    @app.get("/api/v1/ping")
    async def ping(request: Request) -> dict[str, Any]:
        return {
            "request_id": request.state.request_id,
            "logged_with": structlog.contextvars.get_contextvars().get("request_id"),
        }

    @app.post("/api/v1/upload")
    async def upload(request: Request) -> dict[str, int]:
        calls.count += 1
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size": size}

    @app.get("/pages/own-policy")
    async def own_policy() -> HTMLResponse:
        return HTMLResponse("<p>hi</p>", headers={"Content-Security-Policy": "default-src 'self'"})

    @app.get("/api/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail")

    @app.websocket("/ws/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"{text}:{websocket.state.request_id}")
        await websocket.close()

    install_middleware(app, settings)
    return app


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
async def client(http_settings: Settings, calls: Calls) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(http_settings, calls)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


# ---- request id ----------------------------------------------------------------------


async def test_request_id_is_generated_stored_echoed_and_logged(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/ping")
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert HEX_ID.fullmatch(request_id)
    assert response.json() == {"request_id": request_id, "logged_with": request_id}


async def test_each_request_gets_its_own_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/api/v1/ping")
    second = await client.get("/api/v1/ping")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_safe_incoming_request_id_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/ping", headers={"X-Request-ID": "edge-42.a_B"})
    assert response.headers["x-request-id"] == "edge-42.a_B"
    assert response.json()["request_id"] == "edge-42.a_B"


@pytest.mark.parametrize("bad", ["has space", 'quote"d', "x" * 129, "new\\nline", "é"])
async def test_an_unsafe_incoming_request_id_is_replaced(
    client: httpx.AsyncClient, bad: str
) -> None:
    response = await client.get("/api/v1/ping", headers={"X-Request-ID": bad.encode()})
    assert HEX_ID.fullmatch(response.headers["x-request-id"])
    assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_a_500_names_the_request_id_without_leaking_details(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/boom", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 500
    assert response.json()["request_id"] == "trace-me"
    assert "secret detail" not in response.text


# ---- security headers ----------------------------------------------------------------


async def test_api_responses_carry_the_strict_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/ping")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["content-security-policy"] == API_CSP
    assert "strict-transport-security" not in response.headers


async def test_errors_carry_the_security_headers_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/missing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["content-security-policy"] == API_CSP
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_hsts_is_sent_only_over_https(http_settings: Settings) -> None:
    transport = httpx.ASGITransport(app=build_app(http_settings))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/api/v1/ping")
    assert response.headers["strict-transport-security"] == HSTS


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_documentation_pages_may_load_their_cdn_assets(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"


async def test_the_openapi_document_keeps_the_strict_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == API_CSP


async def test_a_policy_set_by_the_route_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/pages/own-policy")
    assert response.headers["content-security-policy"] == "default-src 'self'"
    assert response.headers["x-content-type-options"] == "nosniff"


# ---- CORS ----------------------------------------------------------------------------


def preflight_headers(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_preflight_from_a_configured_origin_is_allowed(client: httpx.AsyncClient) -> None:
    response = await client.options("/api/v1/upload", headers=preflight_headers(ALLOWED_ORIGIN))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "Authorization" in response.headers["access-control-allow-headers"]


async def test_preflight_from_another_origin_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/api/v1/upload", headers=preflight_headers("https://evil.example.net")
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_cross_origin_responses_expose_the_platform_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/ping", headers={"Origin": ALLOWED_ORIGIN})
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"x-request-id", "ratelimit-remaining", "retry-after"} <= exposed


async def test_any_origin_never_comes_with_credentials(http_settings: Settings) -> None:
    app = build_app(http_settings.model_copy(update={"cors_origins": ["*"]}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.options(
            "/api/v1/upload", headers=preflight_headers("https://anyone.example.org")
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_without_origins_there_is_no_cors(http_settings: Settings) -> None:
    app = build_app(http_settings.model_copy(update={"cors_origins": []}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.options("/api/v1/upload", headers=preflight_headers(ALLOWED_ORIGIN))
    assert "access-control-allow-origin" not in response.headers


# ---- trusted hosts -------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["testserver", "TestServer:8000", "[::1]:8000", "[::1]", "127.0.0.1:80", "api.example.com"],
)
async def test_allowed_hosts_are_served(client: httpx.AsyncClient, host: str) -> None:
    response = await client.get("/api/v1/ping", headers={"Host": host})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.test", "example.com", "testserver.evil.test", "[::2]", "[::1", "::1", "a:b:c"]
)
async def test_other_hosts_get_a_400_problem(client: httpx.AsyncClient, host: str) -> None:
    response = await client.get("/api/v1/ping", headers={"Host": host})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "invalid_host"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_a_refused_host_still_gets_the_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/ping", headers={"Host": "evil.test"})
    assert response.status_code == 400
    assert response.headers["content-security-policy"] == API_CSP
    assert response.headers["x-frame-options"] == "DENY"


async def test_each_host_keeps_its_verdict_across_requests(client: httpx.AsyncClient) -> None:
    # Verdicts are remembered per Host value: asking again must give the same answers.
    statuses = [
        (await client.get("/api/v1/ping", headers={"Host": host})).status_code
        for host in ("api.example.com", "evil.test", "api.example.com", "evil.test")
    ]
    assert statuses == [200, 400, 200, 400]


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("Example.COM:443", "example.com"),
        ("[0:0:0:0:0:0:0:1]:8000", "::1"),
        ("10.0.0.1", "10.0.0.1"),
        ("host:", "host"),
        ("host:12x", None),
        ("host:\u00b2", None),
        ("[zz::1]", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_host(value: str | None, host: str | None) -> None:
    assert parse_host(value) == host


@pytest.mark.parametrize("pattern", ["ex*ample.com", "*example.com", "*.*.example.com"])
def test_malformed_wildcards_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="wildcards"):
        HostPolicy(allowed_hosts=[pattern])


def test_an_empty_host_list_is_refused() -> None:
    with pytest.raises(ValueError, match="ALLOWED_HOSTS"):
        HostPolicy(allowed_hosts=[])


# ---- body size limit -----------------------------------------------------------------


async def test_a_body_within_the_limit_is_served(client: httpx.AsyncClient, calls: Calls) -> None:
    response = await client.post("/api/v1/upload", content=b"x" * MAX_BODY)
    assert response.status_code == 200
    assert response.json() == {"size": MAX_BODY}
    assert calls.count == 1


async def test_a_declared_length_over_the_limit_is_refused_before_the_route(
    client: httpx.AsyncClient, calls: Calls
) -> None:
    response = await client.post("/api/v1/upload", content=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "payload_too_large"
    assert response.headers["content-security-policy"] == API_CSP
    assert calls.count == 0


async def chunks(count: int, size: int = 512) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"y" * size


async def test_a_streamed_body_within_the_limit_is_served(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/upload", content=chunks(4))
    assert response.status_code == 200
    assert response.json() == {"size": 2048}


async def test_a_streamed_body_over_the_limit_is_cut_off(client: httpx.AsyncClient) -> None:
    request = client.build_request("POST", "/api/v1/upload", content=chunks(8))
    assert "content-length" not in request.headers
    response = await client.send(request)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("length", [b"12abc", b"-1", b"\xb2"])
async def test_a_malformed_content_length_is_a_400(http_settings: Settings, length: bytes) -> None:
    app = build_app(http_settings)
    messages: list[Message] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/upload",
        "raw_path": b"/api/v1/upload",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-length", length)],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    assert messages[0]["type"] == "http.response.start"
    assert messages[0]["status"] == 400


# ---- websockets ----------------------------------------------------------------------


async def websocket_session(app: FastAPI, host: str, request_id: str) -> list[Message]:
    """Drive one WebSocket session through the ASGI app as a server would."""
    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[Message] = []
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/ws/echo",
        "raw_path": b"/ws/echo",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", host.encode()), (b"x-request-id", request_id.encode())],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "subprotocols": [],
    }

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_websockets_pass_through_with_a_request_id(http_settings: Settings) -> None:
    sent = await websocket_session(build_app(http_settings), "testserver", "ws-1")
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert (b"x-request-id", b"ws-1") in sent[0]["headers"]
    assert sent[1]["text"] == "hello:ws-1"


async def test_websockets_from_untrusted_hosts_are_refused(http_settings: Settings) -> None:
    sent = await websocket_session(build_app(http_settings), "evil.test", "ws-2")
    assert sent == [{"type": "websocket.close", "code": 1008}]
