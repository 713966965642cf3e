"""A running identity app for credential tests (sessions, API keys, MFA).

``identity_app(settings)`` is ``tests.support.identity.identity_app`` plus a small
``probe`` module whose routes show the principal a request resolved to, with identity
settings overridden by keyword (``session_idle_timeout=...``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from sqlalchemy import text, update

from engineroom.core.auth import CurrentPrincipal, Principal, get_optional_principal, require
from engineroom.core.deps import SessionDep
from engineroom.core.errors import Forbidden, Unauthorized, error_responses
from engineroom.core.module import Module
from engineroom.core.platform import Platform
from engineroom.identity import module as identity_module
from engineroom.identity import rbac
from engineroom.identity.models import User
from engineroom.settings import Settings
from tests.support import identity as support

PASSWORD = support.PASSWORD

probe = APIRouter(prefix="/api/v1/probe", tags=["probe"])


def _describe(principal: Principal) -> dict[str, Any]:
    return {
        "subject": principal.subject,
        "kind": principal.kind,
        "via": principal.via,
        "username": principal.username,
        "scopes": None if principal.scopes is None else sorted(principal.scopes),
        "credential_id": principal.credential_id,
    }


@probe.get("/whoami", summary="Who is calling", responses=error_responses(Unauthorized))
async def whoami(principal: CurrentPrincipal) -> dict[str, Any]:
    return _describe(principal)


@probe.post("/write", summary="An unsafe request", responses=error_responses(Unauthorized))
async def write(principal: CurrentPrincipal) -> dict[str, Any]:
    return _describe(principal)


@probe.post(
    "/moderate",
    summary="Needs chat:room:moderate",
    responses=error_responses(Unauthorized, Forbidden),
)
async def moderate(
    principal: Annotated[Principal, Depends(require("chat:room:moderate"))],
) -> dict[str, Any]:
    return _describe(principal)


@probe.get(
    "/lazy-whoami",
    summary="Who is calling, asked after this request's transaction began",
    responses=error_responses(Unauthorized),
)
async def lazy_whoami(request: Request, session: SessionDep) -> dict[str, Any]:
    # On SQLite the first statement takes the write lock until the request ends, as a
    # GraphQL operation that writes before a later field asks for the principal.
    await session.execute(text("SELECT 1"))
    principal = await get_optional_principal(request)
    if principal is None:
        raise Unauthorized("Authentication required.")
    return _describe(principal)


probe_module = Module(name="probe", routers=(probe,), description="Shows the principal.")


@dataclass
class IdentityApp:
    app: FastAPI
    client: httpx.AsyncClient
    platform: Platform

    def new_client(self, base_url: str | None = None) -> httpx.AsyncClient:
        """Another browser: its own cookie jar."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url=base_url or str(self.client.base_url),
        )


@asynccontextmanager
async def identity_app(settings: Settings, **identity: Any) -> AsyncIterator[IdentityApp]:
    """The identity app (plus the probe module), with ``identity`` settings overridden."""
    async with support.identity_app(
        settings,
        support.fast_identity_settings(**identity),
        modules=(identity_module, probe_module),
    ) as running:
        yield IdentityApp(app=running.app, client=running.client, platform=running.platform)


async def register(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/identity/users",
        json={"email": f"{name}@example.com", "username": name, "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def bearer(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    """Authorization headers with an access token of ``name`` (no MFA)."""
    response = await client.post(
        "/api/v1/identity/token", json={"email": f"{name}@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def grant_role(platform: Platform, user_id: str, name: str, permissions: list[str]) -> None:
    """Create the role if needed and give it to the user."""
    async with platform.database.unit_of_work() as session:
        existing = {role.name for role in await rbac.list_roles(session)}
        if name not in existing:
            await rbac.create_role(session, name=name, description=None, permissions=permissions)
        await rbac.assign_role(session, uuid.UUID(user_id), name)


async def revoke_role(platform: Platform, user_id: str, name: str) -> None:
    async with platform.database.unit_of_work() as session:
        await rbac.unassign_role(session, uuid.UUID(user_id), name)


async def set_user_columns(platform: Platform, user_id: str, **values: Any) -> None:
    """Change the account directly (disable it, move its password change date...)."""
    async with platform.database.unit_of_work() as session:
        await session.execute(update(User).where(User.id == uuid.UUID(user_id)).values(**values))
