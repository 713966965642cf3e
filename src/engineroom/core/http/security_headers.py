"""Security headers on every HTTP response.

API responses get the strictest policy (``default-src 'none'``): they are data, never
documents to render. The interactive documentation pages (Swagger UI, ReDoc, GraphiQL)
are HTML that loads its scripts and styles from public CDNs and starts with an inline
script, so HTML answered on those paths gets a policy that allows exactly that. A route
that sets a header itself (its own CSP for an HTML page, say) keeps its value.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_CDNS = "https://cdn.jsdelivr.net https://unpkg.com"
DOCS_CSP = "; ".join(
    (
        "default-src 'none'",
        f"script-src 'self' 'unsafe-inline' {_CDNS}",
        f"style-src 'self' 'unsafe-inline' {_CDNS} https://fonts.googleapis.com",
        f"img-src 'self' data: {_CDNS} https://fastapi.tiangolo.com",
        "font-src 'self' data: https://fonts.gstatic.com",
        "connect-src 'self'",
        # ReDoc runs its search in a worker built from a blob.
        "worker-src 'self' blob:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    )
)
HSTS = "max-age=31536000; includeSubDomains"
_ALWAYS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, html_paths: Collection[str] = ()) -> None:
        self.app = app
        self.html_paths = frozenset(html_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Only a request that reached us over TLS may pin TLS: over plain HTTP the header
        # is ignored by browsers, and a misconfigured proxy must not pin a dev host.
        https = scope.get("scheme") == "https"
        docs_page = _route_path(scope) in self.html_paths

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS:
                    headers.setdefault(name, value)
                html = headers.get("content-type", "").startswith("text/html")
                headers.setdefault(
                    "Content-Security-Policy", DOCS_CSP if docs_page and html else API_CSP
                )
                if https:
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path
