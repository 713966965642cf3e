"""CSRF tokens and the Origin check for cookie-authenticated requests."""

from __future__ import annotations

import pytest
from starlette.requests import HTTPConnection, Request

from engineroom.identity.csrf import (
    CSRF_HEADER,
    CsrfFailed,
    check_csrf,
    csrf_token,
    is_unsafe,
    new_csrf_secret,
    origin_allowed,
)
from engineroom.settings import Settings


def make_request(
    method: str = "POST",
    headers: dict[str, str] | None = None,
    *,
    scheme: str = "http",
    host: str = "app.example",
) -> Request:
    raw = [(b"host", host.encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "method": method,
        "scheme": scheme,
        "path": "/api/v1/identity/sessions",
        "raw_path": b"/api/v1/identity/sessions",
        "query_string": b"",
        "headers": raw,
        "server": (host, 443 if scheme == "https" else 80),
    }
    return Request(scope)


def test_token_is_tied_to_session_and_secret(settings: Settings) -> None:
    secret = new_csrf_secret()
    token = csrf_token(settings, "session-a", secret)
    assert token == csrf_token(settings, "session-a", secret)
    assert token != csrf_token(settings, "session-b", secret)
    assert token != csrf_token(settings, "session-a", new_csrf_secret())
    other = Settings(_env_file=None, secret_key="x" * 40)  # type: ignore[call-arg]
    assert token != csrf_token(other, "session-a", secret)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "TRACE", "get"])
def test_safe_methods_need_no_token(method: str) -> None:
    assert not is_unsafe(method)
    check_csrf(make_request(method), expected="x", trusted_origins=())


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_unsafe_methods_need_the_token(method: str) -> None:
    with pytest.raises(CsrfFailed, match="required"):
        check_csrf(make_request(method), expected="good", trusted_origins=())
    with pytest.raises(CsrfFailed, match="does not match"):
        check_csrf(make_request(method, {CSRF_HEADER: "bad"}), expected="good", trusted_origins=())
    check_csrf(make_request(method, {CSRF_HEADER: "good"}), expected="good", trusted_origins=())


def test_an_oversized_token_is_refused_without_comparing() -> None:
    with pytest.raises(CsrfFailed):
        check_csrf(
            make_request("POST", {CSRF_HEADER: "g" * 5000}), expected="good", trusted_origins=()
        )


def test_error_is_a_403_with_a_stable_code() -> None:
    assert CsrfFailed.status == 403
    assert CsrfFailed.code == "csrf_failed"


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({}, True),
        ({"Origin": "http://app.example"}, True),
        ({"Origin": "HTTP://APP.EXAMPLE"}, True),
        ({"Origin": "https://app.example"}, False),  # another scheme is another origin
        ({"Origin": "http://app.example:8080"}, False),
        ({"Origin": "http://evil.example"}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "http://[bad"}, False),
        ({"Origin": "https://spa.example"}, True),  # configured as trusted
        ({"Referer": "http://app.example/settings"}, True),
        ({"Referer": "http://evil.example/page"}, False),
        ({"Origin": "http://app.example", "Referer": "http://evil.example/"}, True),
    ],
)
def test_origin_check(headers: dict[str, str], allowed: bool) -> None:
    request = make_request("POST", headers)
    assert origin_allowed(request, ["https://spa.example/", "*"]) is allowed


def test_foreign_origin_fails_even_with_the_right_token() -> None:
    request = make_request("POST", {CSRF_HEADER: "good", "Origin": "http://evil.example"})
    with pytest.raises(CsrfFailed, match="origin"):
        check_csrf(request, expected="good", trusted_origins=())


def test_wildcard_cors_origin_is_never_trusted_for_csrf() -> None:
    request = make_request("POST", {"Origin": "http://evil.example"})
    assert not origin_allowed(request, ["*"])


def websocket(headers: dict[str, str], *, scheme: str = "wss") -> HTTPConnection:
    raw = [(b"host", b"app.example")]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "websocket",
        "scheme": scheme,
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": raw,
        "server": ("app.example", 443),
    }
    return HTTPConnection(scope)


def test_websocket_handshakes_are_checked_by_origin() -> None:
    # No token can ride on a browser's WebSocket handshake; the origin is what counts.
    check_csrf(websocket({"Origin": "https://app.example"}), expected="x", trusted_origins=())
    check_csrf(
        websocket({"Origin": "http://app.example"}, scheme="ws"), expected="x", trusted_origins=()
    )
    with pytest.raises(CsrfFailed):
        check_csrf(websocket({"Origin": "https://evil.example"}), expected="x", trusted_origins=())
