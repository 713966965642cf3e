"""CSRF protection for requests authenticated by the session cookie.

Browsers attach cookies to cross-site requests, so a cookie alone does not prove that our
own page sent a request. Two checks guard every unsafe method (anything but GET, HEAD,
OPTIONS, TRACE) that a session cookie authenticates:

* a synchronizer token in the ``X-CSRF-Token`` header. The token is an HMAC, under a key
  derived from the platform secret, of the session id and a random per-session value
  (``csrf_secret`` in the session record). Nothing stored is enough to compute it: the
  record holds the hash of the session id, never the id. The token is handed out at login
  and by ``GET /api/v1/identity/sessions/current``; another site cannot read either answer.
* the ``Origin`` header (``Referer`` when a browser sends no ``Origin``) must name this
  server or one of the configured CORS origins.

Bearer tokens and API keys are not sent automatically by browsers, so requests that carry
them are not subject to these checks.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from engineroom.core.errors import Forbidden
from engineroom.identity.crypto import hmac_hex
from engineroom.settings import Settings

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_PURPOSE = "csrf"
_MAX_TOKEN_LENGTH = 128


class CsrfFailed(Forbidden):
    code = "csrf_failed"


def is_unsafe(method: str) -> bool:
    return method.upper() not in SAFE_METHODS


def new_csrf_secret() -> str:
    """The random per-session value that the token is derived from."""
    return secrets.token_urlsafe(24)


def csrf_token(settings: Settings, session_id: str, csrf_secret: str) -> str:
    """The token a client must echo in ``X-CSRF-Token`` for this session."""
    return hmac_hex(settings, _PURPOSE, f"{csrf_secret}.{session_id}")


_WEB_SCHEMES = {"ws": "http", "wss": "https"}


def request_origin(request: HTTPConnection) -> str:
    """This server's origin as the client addressed it (scheme, host and port)."""
    scheme = _WEB_SCHEMES.get(request.url.scheme, request.url.scheme)
    return f"{scheme}://{request.url.netloc}".lower()


def _origin_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def origin_allowed(request: HTTPConnection, trusted_origins: Collection[str]) -> bool:
    """False when the request says it comes from a page of another origin.

    A request without ``Origin`` and ``Referer`` passes this check (some clients and
    privacy settings send neither); the synchronizer token still has to match.
    """
    header = request.headers.get("origin")
    if header is None:
        referer = request.headers.get("referer")
        if not referer:
            return True
        header = referer
    origin = _origin_of(header.strip())
    if origin is None:
        # "null" (sandboxed frames, some redirects) and garbage are never trusted.
        return False
    trusted = {o.rstrip("/").lower() for o in trusted_origins if o != "*"}
    return origin == request_origin(request) or origin in trusted


def check_origin(request: HTTPConnection, trusted_origins: Collection[str]) -> None:
    if not origin_allowed(request, trusted_origins):
        raise CsrfFailed("The request comes from an origin this server does not trust.")


def check_csrf(request: HTTPConnection, *, expected: str, trusted_origins: Collection[str]) -> None:
    """Refuse a cookie-authenticated unsafe request without the right token and origin."""
    if request.scope["type"] == "websocket":
        # A browser cannot add headers to a WebSocket handshake but always sends Origin:
        # that check alone stops another site from opening a socket with our cookie.
        check_origin(request, trusted_origins)
        return
    if not is_unsafe(request.scope["method"]):
        return
    check_origin(request, trusted_origins)
    given = request.headers.get(CSRF_HEADER)
    if not given:
        raise CsrfFailed(f"The {CSRF_HEADER} header is required with a session cookie.")
    if len(given) > _MAX_TOKEN_LENGTH or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        raise CsrfFailed(f"The {CSRF_HEADER} header does not match this session.")
