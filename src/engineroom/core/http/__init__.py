"""HTTP middleware: the edge (request id, trusted hosts, security headers, body size
limit, request metrics) and CORS; direct routes (see ``direct``) and direct WebSockets
(see ``direct_websocket``).

All of it is plain ASGI (no ``BaseHTTPMiddleware``): streaming responses and WebSockets
pass through untouched and no request pays for an extra task.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from engineroom.core.http.direct import direct, install_direct_routes
from engineroom.core.http.direct_websocket import PlatformApp, accept_message, direct_websocket
from engineroom.core.http.edge import EdgeMiddleware, RequestObserver
from engineroom.core.http.request_id import REQUEST_ID_HEADER
from engineroom.core.http.security_headers import SecurityHeaders
from engineroom.core.http.trusted_hosts import HostPolicy
from engineroom.settings import Settings

__all__ = [
    "REQUEST_ID_HEADER",
    "PlatformApp",
    "accept_message",
    "direct",
    "direct_websocket",
    "install_direct_routes",
    "install_middleware",
]

GRAPHQL_PATH = "/graphql"
CORS_ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CORS_ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "X-API-Key",
    "X-CSRF-Token",
    REQUEST_ID_HEADER,
)
CORS_EXPOSED_HEADERS = (
    REQUEST_ID_HEADER,
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Retry-After",
    "ETag",
    "Location",
    "Link",
    "Deprecation",
    "Sunset",
)


def install_middleware(
    app: FastAPI, settings: Settings, *, observer: RequestObserver | None = None
) -> None:
    """Wrap ``app`` in the platform middleware (outermost first, as a request meets them):
    the edge (request id, trusted hosts, security headers, body size limit, and the
    ``observer``'s request metrics), then CORS when origins are configured."""
    html_paths = {
        path
        for path in (
            app.docs_url,
            app.redoc_url,
            app.swagger_ui_oauth2_redirect_url,
            GRAPHQL_PATH,
        )
        if path
    }
    # Each add_middleware call wraps the previous ones: add from the innermost out.
    if settings.cors_origins:
        any_origin = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            # Credentials (cookies) only go to origins named one by one: with "*" any
            # site could make authenticated calls on a visitor's behalf.
            allow_credentials=not any_origin,
            allow_methods=CORS_ALLOWED_METHODS,
            allow_headers=CORS_ALLOWED_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    hosts = HostPolicy(settings.allowed_hosts)
    if isinstance(app, PlatformApp):
        app.host_policy = hosts  # its direct WebSockets meet the same host check
    app.add_middleware(
        EdgeMiddleware,
        hosts=hosts,
        security=SecurityHeaders(html_paths=html_paths),
        max_body_bytes=settings.max_body_bytes,
        observer=observer,
    )
