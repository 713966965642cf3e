"""Liveness (``/healthz``) and readiness (``/readyz``) probes.

``/healthz`` answers as long as the process serves HTTP and touches nothing else: a
database outage must not make an orchestrator restart every replica. ``/readyz`` checks
what a request needs (the database, migrations at head, Redis and the broker when
configured), all at once and each within ``CHECK_TIMEOUT_S``, and names what failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import aio_pika
import structlog
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from engineroom.core.cache import ping_cache
from engineroom.core.http.direct import direct
from engineroom.core.platform import Platform
from engineroom.core.responses import ORJSONResponse, Prepared
from engineroom.settings import Settings

CHECK_TIMEOUT_S = 2.0

logger = structlog.get_logger("engineroom.health")
router = APIRouter(tags=["platform"])

Check = Callable[[], Awaitable[None]]
CheckResult = Literal["ok", "timeout", "unreachable", "pending"]


class NotReady(Exception):
    """A dependency answered, but the app cannot serve yet (``reason`` is reported)."""

    def __init__(self, reason: CheckResult) -> None:
        super().__init__(reason)
        self.reason: CheckResult = reason


class Health(BaseModel):
    status: Literal["ok"] = "ok"


# Probes arrive every few seconds from every orchestrator: the answer is encoded once.
_HEALTHY = Prepared.of(Health().model_dump_json().encode())


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, CheckResult] = Field(
        description="Each dependency checked: ok, timeout, unreachable or pending (migrations)."
    )
    failing: list[str] = Field(default_factory=list, description="The checks that failed.")


@router.get(
    "/healthz",
    summary="Liveness probe",
    description="The process is up and serving HTTP. Calls no dependency.",
    response_model=Health,
)
@direct
async def healthz(request: Request) -> Response:
    del request  # a direct route takes the request; liveness needs nothing from it
    return _HEALTHY.response()


@router.get(
    "/readyz",
    summary="Readiness probe",
    description=(
        "Checks the database, pending migrations and, when configured, Redis and the "
        "message broker, concurrently with a timeout each."
    ),
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is not ready."}},
)
async def readyz(request: Request) -> ORJSONResponse:
    platform: Platform = request.app.state.platform
    checks = _checks(request, platform)
    results = dict(await asyncio.gather(*(_run(name, check) for name, check in checks.items())))
    failing = [name for name, result in results.items() if result != "ok"]
    body = Readiness(status="unavailable" if failing else "ready", checks=results, failing=failing)
    return ORJSONResponse(body.model_dump(), status_code=503 if failing else 200)


async def _run(name: str, check: Check) -> tuple[str, CheckResult]:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        logger.warning("readiness_check_failed", check=name, reason="timeout")
        return name, "timeout"
    except NotReady as exc:
        logger.warning("readiness_check_failed", check=name, reason=exc.reason)
        return name, exc.reason
    except Exception as exc:
        # The client learns which check failed; the cause stays in the logs.
        logger.warning(
            "readiness_check_failed",
            check=name,
            reason="unreachable",
            error_type=type(exc).__name__,
            error=str(exc),
        )
        return name, "unreachable"
    return name, "ok"


def _checks(request: Request, platform: Platform) -> dict[str, Check]:
    settings = platform.settings
    checks: dict[str, Check] = {
        "database": platform.database.ping,
        "migrations": lambda: _check_migrations(request, platform),
    }
    if settings.redis_url:
        checks["redis"] = lambda: _check_redis(platform)
    if settings.broker_url:
        checks["broker"] = lambda: ping_broker(settings)
    return checks


async def _check_migrations(request: Request, platform: Platform) -> None:
    # Migrations never go backwards under a running app: once at head, stay ready.
    if getattr(request.app.state, "migrations_at_head", False):
        return
    from engineroom.core.migrations.runner import is_at_head

    if not await is_at_head(platform.database, platform.modules):
        raise NotReady("pending")
    request.app.state.migrations_at_head = True


async def _check_redis(platform: Platform) -> None:
    # Through the platform's own clients: their pools are what requests will use.
    await asyncio.gather(ping_cache(platform.cache), platform.rate_limiter.ping())


async def ping_redis(url: str) -> None:
    client = Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


async def ping_broker(settings: Settings) -> None:
    url = settings.broker_url
    if url is None:
        return
    if url.startswith(("redis://", "rediss://")):
        await ping_redis(url)
        return
    connection = await aio_pika.connect(url, timeout=CHECK_TIMEOUT_S)
    await connection.close()
