"""Principal resolution and RBAC checks in the kernel."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from engineroom.core.auth import (
    Credentials,
    CurrentPrincipal,
    OptionalPrincipal,
    Principal,
    ensure_owner_or_permitted,
    require,
)
from engineroom.core.errors import ErrorRenderers, Forbidden, install_error_handlers

ALICE = Principal(subject="u-alice", username="alice", permissions=frozenset({"blog:*"}))
MOD = Principal(subject="u-mod", permissions=frozenset({"blog:article:delete"}))
SCOPED = Principal(
    subject="u-alice",
    permissions=frozenset({"*"}),
    scopes=frozenset({"blog:article:read"}),
    kind="api_key",
    via="api_key",
)


class FakeResolver:
    """Stands in for the identity module: maps fixed credential values to principals."""

    def __init__(self) -> None:
        self.seen: list[Credentials] = []

    async def __call__(self, credentials: Credentials, request: Request) -> Principal | None:
        self.seen.append(credentials)
        return {"alice-token": ALICE, "mod-token": MOD, "scoped-key": SCOPED}.get(credentials.value)


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def client(resolver: FakeResolver) -> httpx.AsyncClient:
    app = FastAPI()
    app.state.principal_resolver = resolver
    install_error_handlers(app, ErrorRenderers())

    @app.get("/api/v1/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"subject": principal.subject, "via": principal.via}

    @app.get("/api/v1/maybe")
    async def maybe(principal: OptionalPrincipal) -> dict[str, str | None]:
        return {"subject": principal.subject if principal else None}

    @app.delete("/api/v1/articles")
    async def delete(
        principal: Annotated[Principal, Depends(require("blog:article:delete"))],
    ) -> dict[str, str]:
        return {"deleted_by": principal.subject}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_bearer_and_token_schemes_resolve(client: httpx.AsyncClient) -> None:
    for scheme in ("Bearer", "Token", "bearer"):
        response = await client.get(
            "/api/v1/me", headers={"Authorization": f"{scheme} alice-token"}
        )
        assert response.status_code == 200, scheme
        assert response.json() == {"subject": "u-alice", "via": "bearer"}


async def test_api_key_header_and_session_cookie(
    client: httpx.AsyncClient, resolver: FakeResolver
) -> None:
    response = await client.get("/api/v1/me", headers={"X-API-Key": "scoped-key"})
    assert response.status_code == 200
    response = await client.get(
        "/api/v1/me", headers={"Cookie": "__Host-engineroom_session=alice-token"}
    )
    assert response.status_code == 200
    assert [c.scheme for c in resolver.seen] == ["api_key", "session"]


async def test_missing_credentials_is_401_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer    ", "alice-token"])
async def test_malformed_authorization_is_401(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get("/api/v1/me", headers={"Authorization": header})
    assert response.status_code == 401


async def test_unknown_credentials_are_401_even_on_optional_routes(
    client: httpx.AsyncClient,
) -> None:
    # A wrong token must not silently downgrade to anonymous.
    response = await client.get("/api/v1/maybe", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    anonymous = await client.get("/api/v1/maybe")
    assert anonymous.json() == {"subject": None}


async def test_require_permission(client: httpx.AsyncClient) -> None:
    allowed = await client.delete("/api/v1/articles", headers={"Authorization": "Token mod-token"})
    assert allowed.status_code == 200
    wildcard = await client.delete(
        "/api/v1/articles", headers={"Authorization": "Token alice-token"}
    )
    assert wildcard.status_code == 200
    scoped = await client.delete("/api/v1/articles", headers={"X-API-Key": "scoped-key"})
    assert scoped.status_code == 403
    assert "blog:article:delete" in scoped.json()["detail"]


def test_permission_matching() -> None:
    assert ALICE.can("blog:comment:create")
    assert not ALICE.can("shop:order:read")
    assert not Principal(subject="x", permissions=frozenset({"blog:"})).can("blog:article:read")
    assert Principal(subject="x", permissions=frozenset({"*"})).can("anything:at:all")
    # scopes narrow, never widen
    assert SCOPED.can("blog:article:read")
    assert not SCOPED.can("blog:article:create")
    narrow_user = Principal(
        subject="x", permissions=frozenset({"blog:article:read"}), scopes=frozenset({"*"})
    )
    assert not narrow_user.can("blog:article:delete")


def test_ownership_helper() -> None:
    ensure_owner_or_permitted(ALICE, "u-alice", "blog:article:delete")
    ensure_owner_or_permitted(MOD, "u-alice", "blog:article:delete")
    stranger = Principal(subject="u-bob")
    with pytest.raises(Forbidden):
        ensure_owner_or_permitted(stranger, "u-alice", "blog:article:delete")


async def test_a_principal_never_carries_over_to_the_next_request(
    resolver: FakeResolver,
) -> None:
    # A lifespan that yields state makes every request's ``request.state`` start from
    # the same dict; asgi-lifespan even shares it outright. The principal must not ride
    # along into the next request.
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from asgi_lifespan import LifespanManager

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, object]]:
        yield {"shared": True}

    app = FastAPI(lifespan=lifespan)
    app.state.principal_resolver = resolver
    install_error_handlers(app, ErrorRenderers())

    @app.get("/api/v1/maybe")
    async def maybe(principal: OptionalPrincipal) -> dict[str, str | None]:
        return {"subject": principal.subject if principal else None}

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = await client.get(
                "/api/v1/maybe", headers={"Authorization": "Bearer alice-token"}
            )
            second = await client.get("/api/v1/maybe")
            third = await client.get("/api/v1/maybe", headers={"Authorization": "Bearer mod-token"})
    assert first.json() == {"subject": ALICE.subject}
    assert second.json() == {"subject": None}
    assert third.json() == {"subject": MOD.subject}
