"""Security headers on every HTTP response.

API responses get the strictest policy (``default-src 'none'``): they are data, never
documents to render. The interactive documentation pages (Swagger UI, ReDoc, GraphiQL)
are HTML that loads its scripts and styles from public CDNs and starts with an inline
script, so HTML answered on those paths gets a policy that allows exactly that. A route
that sets a header itself (its own CSP for an HTML page, say) keeps its value.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

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

RawHeaders = list[tuple[bytes, bytes]]


def _raw(name: str, value: str) -> tuple[bytes, bytes]:
    return name.lower().encode("latin-1"), value.encode("latin-1")


_CSP = b"content-security-policy"
_CONTENT_TYPE = b"content-type"


class SecurityHeaders:
    """The headers to add to a response, encoded once."""

    def __init__(self, *, html_paths: Collection[str] = ()) -> None:
        self.html_paths = frozenset(html_paths)
        self._always = tuple(_raw(name, value) for name, value in _ALWAYS)
        self._api_csp = _raw("Content-Security-Policy", API_CSP)
        self._docs_csp = _raw("Content-Security-Policy", DOCS_CSP)
        self._hsts = _raw("Strict-Transport-Security", HSTS)

    def is_docs_page(self, route_path: str) -> bool:
        return route_path in self.html_paths

    def add_to(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        out: RawHeaders,
        *,
        docs_page: bool,
        https: bool,
    ) -> None:
        """Append to ``out`` the security headers that ``headers`` do not set already.

        Only a request that reached us over TLS may pin TLS (``https``): over plain HTTP
        the header is ignored by browsers, and a misconfigured proxy must not pin a dev
        host.
        """
        present = {name.lower() for name, _ in headers}
        for header in self._always:
            if header[0] not in present:
                out.append(header)
        if _CSP not in present:
            out.append(self._docs_csp if docs_page and _is_html(headers) else self._api_csp)
        if https and self._hsts[0] not in present:
            out.append(self._hsts)


def _is_html(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == _CONTENT_TYPE:
            return value.startswith(b"text/html")
    return False
