"""Trusted hosts: answer only for the host names in ``ALLOWED_HOSTS``.

Starlette's ``TrustedHostMiddleware`` compares IPv6 literals with their brackets on
(``[::1]``), so the default ``::1`` entry would never match, and it answers in plain text;
this one normalises IP literals on both sides and answers with a problem document.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv6Address, ip_address

from starlette.types import ASGIApp, Receive, Scope, Send

from engineroom.core.errors import ErrorDetail
from engineroom.core.http._problem import send_problem

_POLICY_VIOLATION = 1008


class TrustedHostMiddleware:
    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        if not allowed_hosts:
            raise ValueError(
                "ENGINEROOM_ALLOWED_HOSTS is empty, so every request would be refused; "
                "list the host names (or '*' for any)"
            )
        self.app = app
        self.patterns = tuple(_normalise_pattern(pattern) for pattern in allowed_hosts)
        self.allow_any = "*" in self.patterns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = parse_host(_host_header(scope))
        if host is not None and self.is_allowed(host):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting makes the server refuse the handshake (403).
            await send({"type": "websocket.close", "code": _POLICY_VIOLATION})
            return
        error = ErrorDetail(
            status=400,
            code="invalid_host",
            message="The Host header names a host this server does not answer for.",
        )
        await send_problem(scope, receive, send, error)

    def is_allowed(self, host: str) -> bool:
        for pattern in self.patterns:
            if host == pattern:
                return True
            # "*.example.com" covers subdomains, not example.com itself.
            if pattern.startswith("*.") and host.endswith(pattern[1:]):
                return True
        return False


def _host_header(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1"))
    return None


def parse_host(value: str | None) -> str | None:
    """The host of a Host header, lowercased, IPv6 without brackets; None if malformed."""
    if not value:
        return None
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        try:
            host = str(IPv6Address(value[1:end]))
        except ValueError:
            return None
        port = value[end + 1 :]
    else:
        host, colon, rest = value.partition(":")
        port = colon + rest
    if not host or not _valid_port(port):
        return None
    return host


def _valid_port(port: str) -> bool:
    # RFC 3986 allows an empty port after the colon ("host:").
    return port == "" or (port.startswith(":") and (port == ":" or _digits(port[1:])))


def _digits(text: str) -> bool:
    # str.isdigit() also accepts digits such as "²" that int() and servers refuse.
    return text.isascii() and text.isdigit()


def _normalise_pattern(pattern: str) -> str:
    pattern = pattern.strip().lower()
    if pattern == "*":
        return pattern
    if "*" in pattern and not (pattern.startswith("*.") and "*" not in pattern[1:]):
        raise ValueError(f"allowed host {pattern!r}: wildcards must look like '*.example.com'")
    literal = pattern.removeprefix("[").removesuffix("]")
    try:
        return str(ip_address(literal))
    except ValueError:
        return pattern
