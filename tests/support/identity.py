"""Helpers for the identity tests: a migrated app with the identity module, and factories.

Tests hash with cheaper Argon2id parameters than production (the policy tests check the
production ones) so that a suite registering hundreds of users stays quick.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from engineroom.app import create_app
from engineroom.core.migrations.runner import upgrade
from engineroom.core.module import Module
from engineroom.core.platform import Platform
from engineroom.identity import module as identity_module
from engineroom.identity.config import IdentitySettings, configure
from engineroom.settings import Settings

PASSWORD = "correct horse battery staple"


def fast_identity_settings(**overrides: Any) -> IdentitySettings:
    values: dict[str, Any] = {
        "password_memory_cost": 8192,
        "password_time_cost": 1,
        "password_hash_concurrency": 2,
    }
    values.update(overrides)
    return IdentitySettings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class IdentityApp:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def platform(self) -> Platform:
        platform: Platform = self.app.state.platform
        return platform


@asynccontextmanager
async def identity_app(
    settings: Settings,
    identity: IdentitySettings | None = None,
    modules: tuple[Module, ...] = (identity_module,),
) -> AsyncIterator[IdentityApp]:
    """A migrated database, the app with ``modules`` started, and a client for it."""
    configure(settings, identity or fast_identity_settings())
    await upgrade(settings, list(modules))
    app = create_app(settings, modules=list(modules), run_background=False)
    async with LifespanManager(app):
        # Not ``manager.app``: it hands every request one shared ``scope["state"]`` dict,
        # so the principal cached on ``request.state`` would leak into the next request
        # (servers such as uvicorn give each request its own copy).
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield IdentityApp(app=app, client=client, settings=settings)


async def register(
    client: httpx.AsyncClient,
    username: str = "alice",
    email: str | None = None,
    password: str = PASSWORD,
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/identity/users",
        json={
            "email": email or f"{username}@example.com",
            "username": username,
            "password": password,
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def login(
    client: httpx.AsyncClient,
    email: str = "alice@example.com",
    password: str = PASSWORD,
    scope: str | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"email": email, "password": password}
    if scope is not None:
        payload["scope"] = scope
    response = await client.post("/api/v1/identity/token", json=payload)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
