"""The principal resolver the identity module gives the kernel.

It dispatches on the credential's scheme. Bearer values are JWT access tokens unless they
start with a registered prefix (API keys carry one), in which case the handler registered
for that prefix decides. The ``api_key`` (``X-API-Key``) and ``session`` (cookie) schemes
are answered by handlers the credential features register with ``register_handler``;
a scheme nobody registered resolves to nothing (401).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from engineroom.core.auth import Credentials, CredentialScheme, Principal
from engineroom.core.platform import Platform
from engineroom.identity.tokens import verify_access_token

CredentialHandler = Callable[[Credentials, Request], Awaitable[Principal | None]]

_HANDLERS: dict[CredentialScheme, CredentialHandler] = {}
_BEARER_PREFIXES: dict[str, tuple[CredentialScheme, CredentialHandler]] = {}


def register_handler(
    scheme: CredentialScheme, handler: CredentialHandler, *, bearer_prefix: str | None = None
) -> None:
    """Answer ``scheme`` with ``handler``.

    With ``bearer_prefix`` the handler also gets ``Authorization: Bearer <prefix>...``
    values (they reach it with the scheme rewritten to ``scheme``).
    """
    _HANDLERS[scheme] = handler
    if bearer_prefix:
        _BEARER_PREFIXES[bearer_prefix] = (scheme, handler)


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


async def resolve_principal(credentials: Credentials, request: Request) -> Principal | None:
    """The ``PrincipalResolver``: a principal, ``None`` for unknown credentials, or raise."""
    if credentials.scheme == "bearer":
        for prefix, (scheme, prefixed) in _BEARER_PREFIXES.items():
            if credentials.value.startswith(prefix):
                return await prefixed(Credentials(scheme, credentials.value), request)
        return await verify_access_token(_platform(request), credentials.value)
    handler = _HANDLERS.get(credentials.scheme)
    if handler is None:
        return None
    return await handler(credentials, request)
