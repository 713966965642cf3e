"""Liveness and readiness probes on real dependencies."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from engineroom.app import create_app
from engineroom.core.migrations.runner import upgrade
from engineroom.settings import Settings
from tests.support.demo_module import demo_module


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_healthz_is_ok_without_touching_dependencies(settings: Settings) -> None:
    # Not migrated and Redis unreachable: liveness is still fine.
    broken = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"})
    app = create_app(broken, modules=[], run_background=False)
    async with serve(app) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_names_pending_migrations_then_turns_ready(settings: Settings) -> None:
    app = create_app(settings, modules=[demo_module], run_background=False)
    async with serve(app) as client:
        before = await client.get("/readyz")
        await upgrade(settings, [demo_module])
        after = await client.get("/readyz")

    assert before.status_code == 503
    body = before.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["migrations"]
    assert body["checks"] == {"database": "ok", "migrations": "pending"}

    assert after.status_code == 200
    assert after.json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok"},
        "failing": [],
    }


async def test_readyz_pending_when_a_module_branch_is_missing(settings: Settings) -> None:
    # The kernel is migrated but the demo module's branch is not.
    await upgrade(settings, [])
    app = create_app(settings, modules=[demo_module], run_background=False)
    async with serve(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "pending"


async def test_readyz_names_unreachable_redis(settings: Settings) -> None:
    await upgrade(settings, [])
    broken = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"})
    app = create_app(broken, modules=[], run_background=False)
    async with serve(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["redis"]
    assert body["checks"]["redis"] in ("unreachable", "timeout")
    assert body["checks"]["database"] == "ok"
    assert "Traceback" not in response.text
    assert "Error" not in response.text


async def test_readyz_with_reachable_redis(settings: Settings, redis_url: str) -> None:
    await upgrade(settings, [])
    configured = settings.model_copy(update={"redis_url": redis_url})
    app = create_app(configured, modules=[], run_background=False)
    async with serve(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}


async def test_readyz_checks_the_amqp_broker(settings: Settings, rabbitmq_url: str) -> None:
    await upgrade(settings, [])
    reachable = settings.model_copy(update={"broker_url": rabbitmq_url})
    closed = settings.model_copy(
        update={"broker_url": f"amqp://guest:guest@127.0.0.1:{closed_port()}/"}
    )
    app = create_app(reachable, modules=[], run_background=False)
    async with serve(app) as client:
        ok = await client.get("/readyz")
    # A broker that is down: start the app without its job machinery.
    app = create_app(closed, modules=[], run_background=False)
    async with serve(app) as client:
        down = await client.get("/readyz")

    assert ok.status_code == 200, ok.text
    assert ok.json()["checks"]["broker"] == "ok"
    assert down.status_code == 503
    assert down.json()["failing"] == ["broker"]


async def test_probes_are_documented(settings: Settings) -> None:
    app = create_app(settings, modules=[], run_background=False)
    schema = app.openapi()
    readyz = schema["paths"]["/readyz"]["get"]
    assert readyz["tags"] == ["platform"]
    assert readyz["summary"]
    assert {"200", "503"} <= set(readyz["responses"])
    assert schema["paths"]["/healthz"]["get"]["tags"] == ["platform"]
    assert schema["paths"]["/metrics"]["get"]["tags"] == ["platform"]
