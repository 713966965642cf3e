"""The caller of a request (the principal) and role-based access checks.

The kernel only extracts credentials and asks the registered ``PrincipalResolver`` (the
identity module's) who they belong to. Permissions are named ``module:resource:action``;
a grant may end in ``*`` (``blog:*`` or ``*``). Scopes on a token or API key can only
narrow what the user may do, never widen it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from engineroom.core.errors import Forbidden, Unauthorized

SESSION_COOKIE_NAMES = ("__Host-engineroom_session", "engineroom_session")
CredentialScheme = Literal["bearer", "api_key", "session"]
PrincipalKind = Literal["user", "api_key", "service"]


@dataclass(frozen=True)
class Credentials:
    scheme: CredentialScheme
    value: str


@dataclass(frozen=True)
class Principal:
    subject: str
    """The user id (or service name) the credential acts for."""
    kind: PrincipalKind = "user"
    username: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] | None = None
    """``None`` means the credential is not narrowed below the user's permissions."""
    credential_id: str | None = None
    via: CredentialScheme = "bearer"

    def can(self, permission: str) -> bool:
        if not _granted(permission, self.permissions):
            return False
        return self.scopes is None or _granted(permission, self.scopes)

    def owns(self, owner_id: object) -> bool:
        return str(owner_id) == self.subject


def _granted(permission: str, grants: Iterable[str]) -> bool:
    for grant in grants:
        if grant == permission or grant == "*":
            return True
        if grant.endswith(":*") and permission.startswith(grant[:-1]):
            return True
    return False


class PrincipalResolver(Protocol):
    async def __call__(self, credentials: Credentials, request: Request) -> Principal | None:
        """Return the principal, ``None`` for unknown credentials; may raise ``AppError``."""


def extract_credentials(request: HTTPConnection) -> Credentials | None:
    """Find the credential a request carries: Authorization, X-API-Key, then the cookie."""
    # One pass over the raw headers (the first of each counts, as with request.headers):
    # this runs on every request that may have a caller, signed in or not.
    authorization = api_key = cookie = None
    for name, raw in request.scope["headers"]:
        if name == b"authorization":
            authorization = raw if authorization is None else authorization
        elif name == b"x-api-key":
            api_key = raw if api_key is None else api_key
        elif name == b"cookie":
            cookie = raw if cookie is None else cookie
    if authorization:
        scheme, _, value = authorization.decode("latin-1").partition(" ")
        value = value.strip()
        if scheme.lower() not in ("bearer", "token") or not value:
            raise Unauthorized(
                "Authorization must be 'Bearer <token>' or 'Token <token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Credentials("bearer", value)
    if api_key:
        return Credentials("api_key", api_key.decode("latin-1").strip())
    if cookie:
        for name in SESSION_COOKIE_NAMES:
            found = request.cookies.get(name)
            if found:
                return Credentials("session", found)
    return None


_PRINCIPAL_SCOPE_KEY = "engineroom.principal"


def resolved_principal(request: HTTPConnection) -> Principal | None:
    """The principal already resolved for this request, if any (no resolving here)."""
    cached = request.scope.get(_PRINCIPAL_SCOPE_KEY)
    return cached if isinstance(cached, Principal) else None


def remember_principal(request: HTTPConnection, principal: Principal) -> None:
    # Kept in the ASGI scope of this one request, not in ``request.state``: the state
    # dict may be shared between requests (lifespan state copied shallowly), and a
    # principal must never carry over to the next caller.
    request.scope[_PRINCIPAL_SCOPE_KEY] = principal


async def get_optional_principal(request: Request) -> Principal | None:
    cached = resolved_principal(request)
    if cached is not None:
        return cached
    credentials = extract_credentials(request)
    if credentials is None:
        return None
    resolver: PrincipalResolver | None = getattr(request.app.state, "principal_resolver", None)
    principal = await resolver(credentials, request) if resolver is not None else None
    if principal is None:
        raise Unauthorized("The credentials are not valid.", headers={"WWW-Authenticate": "Bearer"})
    remember_principal(request, principal)
    return principal


async def get_principal(
    principal: Annotated[Principal | None, Depends(get_optional_principal)],
) -> Principal:
    if principal is None:
        raise Unauthorized("Authentication required.", headers={"WWW-Authenticate": "Bearer"})
    return principal


async def require_principal(request: Request) -> Principal:
    """The caller, for routes that resolve it themselves (direct routes); 401 if none."""
    return await get_principal(await get_optional_principal(request))


OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require(*permissions: str) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency factory: the caller must hold every named permission."""

    async def check(principal: CurrentPrincipal) -> Principal:
        missing = [p for p in permissions if not principal.can(p)]
        if missing:
            raise Forbidden(f"Missing permission: {', '.join(missing)}.")
        return principal

    return check


def ensure_owner_or_permitted(principal: Principal, owner_id: object, permission: str) -> None:
    """Owners may act on their own resources; others need ``permission`` (moderators)."""
    if principal.owns(owner_id) or principal.can(permission):
        return
    raise Forbidden("You may not change a resource you do not own.")
