"""Trusted hosts: answer only for the host names in ``ALLOWED_HOSTS``.

Starlette's ``TrustedHostMiddleware`` compares IPv6 literals with their brackets on
(``[::1]``), so the default ``::1`` entry would never match, and it answers in plain text;
this policy normalises IP literals on both sides, and ``EdgeMiddleware`` answers a refused
request with a problem document (a WebSocket handshake with a close, 1008).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv6Address, ip_address

# Clients send a handful of distinct Host values; the verdict on each is kept (bounded, so
# a client cycling through made-up hosts only costs itself the full check).
_VERDICTS_KEPT = 256


class HostPolicy:
    """Which ``Host`` header values this server answers for."""

    def __init__(self, allowed_hosts: Sequence[str]) -> None:
        if not allowed_hosts:
            raise ValueError(
                "ENGINEROOM_ALLOWED_HOSTS is empty, so every request would be refused; "
                "list the host names (or '*' for any)"
            )
        self.patterns = tuple(_normalise_pattern(pattern) for pattern in allowed_hosts)
        self.allow_any = "*" in self.patterns
        self._verdicts: dict[bytes, bool] = {}

    def allows_header(self, value: bytes | None) -> bool:
        """Whether a raw ``Host`` header value (``None``: absent) names an allowed host."""
        if self.allow_any:
            return True
        if value is None:
            return False
        verdict = self._verdicts.get(value)
        if verdict is None:
            host = parse_host(value.decode("latin-1"))
            verdict = host is not None and self.is_allowed(host)
            if len(self._verdicts) < _VERDICTS_KEPT:
                self._verdicts[value] = verdict
        return verdict

    def is_allowed(self, host: str) -> bool:
        for pattern in self.patterns:
            if host == pattern:
                return True
            # "*.example.com" covers subdomains, not example.com itself.
            if pattern.startswith("*.") and host.endswith(pattern[1:]):
                return True
        return False


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
