"""Prometheus metrics: request counts by route template, latency, in-flight, platform gauges."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client.parser import text_string_to_metric_families

from engineroom.app import create_app
from engineroom.core.errors import NotFound
from engineroom.core.http import direct
from engineroom.core.jobs import JobContext, JobSpec
from engineroom.core.migrations.runner import upgrade
from engineroom.core.module import Module
from engineroom.core.platform import Platform
from engineroom.settings import Settings
from tests.support.demo_module import demo_module


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_requests_are_counted_by_route_template_and_status(settings: Settings) -> None:
    await upgrade(settings, [demo_module])
    app = create_app(settings, modules=[demo_module], run_background=False)
    missing = uuid.uuid4()
    async with serve(app) as client:
        assert (await client.post("/api/v1/demo/notes", json={"title": "a"})).status_code == 201
        for _ in range(2):
            response = await client.get(f"/api/v1/demo/notes/{missing}")
            assert response.status_code == 404
        assert (await client.get("/no/such/path")).status_code == 404
        assert (await client.post("/graphql", json={"query": "{ version }"})).status_code == 200
        samples = await scrape(client)
        text = (await client.get("/metrics")).text

    total = "engineroom_http_requests_total"
    template = "/api/v1/demo/notes/{note_id}"
    assert value(samples, total, method="GET", route=template, status="404") == 2
    assert value(samples, total, method="POST", route="/api/v1/demo/notes", status="201") == 1
    assert value(samples, total, method="GET", route="unmatched", status="404") == 1
    # The GraphQL router is included with a prefix: its template is the full path.
    assert value(samples, total, method="POST", route="/graphql", status="200") == 1
    # Raw paths never become labels, and the scrape itself is not counted.
    assert str(missing) not in text
    assert "/no/such/path" not in text
    assert 'route="/metrics"' not in text

    duration = "engineroom_http_request_duration_seconds"
    assert value(samples, f"{duration}_count", method="GET", route=template) == 2
    buckets = {
        labels: count
        for (name, labels), count in samples.items()
        if name == f"{duration}_bucket" and ("route", template) in labels
    }
    assert len(buckets) > 5
    assert value(samples, f"{duration}_bucket", method="GET", route=template, le="+Inf") == 2


def _blocking_module(entered: asyncio.Event, release: asyncio.Event) -> Module:
    router = APIRouter()

    @router.get("/api/v1/slow/{item}")
    async def slow(item: str) -> dict[str, str]:
        entered.set()
        await release.wait()
        return {"item": item}

    return Module(name="slow", routers=(router,))


async def test_in_flight_gauge_counts_requests_being_handled(settings: Settings) -> None:
    await upgrade(settings, [])
    entered, release = asyncio.Event(), asyncio.Event()
    app = create_app(settings, modules=[_blocking_module(entered, release)], run_background=False)
    async with serve(app) as client:
        pending = asyncio.create_task(client.get("/api/v1/slow/x"))
        await asyncio.wait_for(entered.wait(), 30)
        during = await scrape(client)
        release.set()
        assert (await asyncio.wait_for(pending, 30)).status_code == 200
        after = await scrape(client)

    assert value(during, "engineroom_http_requests_in_flight") == 1
    assert value(after, "engineroom_http_requests_in_flight") == 0
    total = "engineroom_http_requests_total"
    assert value(after, total, method="GET", route="/api/v1/slow/{item}", status="200") == 1


async def test_database_pool_gauges(settings: Settings) -> None:
    await upgrade(settings, [])
    app = create_app(settings, modules=[], run_background=False)
    platform: Platform = app.state.platform
    async with serve(app) as client:
        idle = await scrape(client)
        async with platform.database.engine.connect():
            busy = await scrape(client)

    assert value(idle, "engineroom_db_pool_checked_out", pool="primary") == 0
    assert value(busy, "engineroom_db_pool_checked_out", pool="primary") == 1
    assert (
        value(busy, "engineroom_db_pool_size", pool="primary")
        == platform.database.engine.pool.size()
    )  # type: ignore[attr-defined]
    # SQLite reads go through a second pool on the same file.
    assert value(busy, "engineroom_db_pool_checked_out", pool="read0") == 0


async def test_outbox_lag_gauges_are_read_at_scrape_time(settings: Settings) -> None:
    await upgrade(settings, [demo_module])
    # The relay is stopped, so published events stay pending.
    app = create_app(settings, modules=[demo_module], run_background=False)
    async with serve(app) as client:
        before = await scrape(client)
        for title in ("one", "two"):
            response = await client.post("/api/v1/demo/notes", json={"title": title})
            assert response.status_code == 201
        after = await scrape(client)

    assert value(before, "engineroom_outbox_pending_events") == 0
    assert value(before, "engineroom_outbox_oldest_pending_age_seconds") == 0
    assert value(after, "engineroom_outbox_pending_events") == 2
    lag = value(after, "engineroom_outbox_oldest_pending_age_seconds")
    assert lag is not None
    assert lag > 0
    assert value(after, "engineroom_outbox_dead_letters") == 0
    assert value(after, "engineroom_metrics_refresh_errors_total") == 0


async def test_scrape_survives_unreadable_outbox(settings: Settings) -> None:
    # No migrations: the outbox tables do not exist, the scrape still answers.
    app = create_app(settings, modules=[], run_background=False)
    async with serve(app) as client:
        samples = await scrape(client)
    assert value(samples, "engineroom_metrics_refresh_errors_total") == 1
    assert value(samples, "engineroom_http_requests_in_flight") == 0


async def test_job_queue_depth_gauge(settings: Settings) -> None:
    await upgrade(settings, [])
    release = asyncio.Event()

    async def hold(_ctx: JobContext) -> None:
        await release.wait()

    module = Module(name="holder", jobs=(JobSpec("holder.hold", hold, max_retries=0),))
    app = create_app(settings, modules=[module], run_background=True)
    platform: Platform = app.state.platform
    async with serve(app) as client:
        idle = await scrape(client)
        for _ in range(3):
            await platform.jobs.enqueue("holder.hold")
        busy = await scrape(client)
        release.set()

    assert value(idle, "engineroom_jobs_queue_depth") == 0
    assert value(busy, "engineroom_jobs_queue_depth") == 3


async def test_each_app_has_its_own_registry(settings: Settings) -> None:
    await upgrade(settings, [])
    first = create_app(settings, modules=[], run_background=False)
    second = create_app(settings, modules=[], run_background=False)
    async with serve(first) as client:
        await client.get("/healthz")
    async with serve(second) as client:
        samples = await scrape(client)
    assert (
        value(
            samples, "engineroom_http_requests_total", method="GET", route="/healthz", status="200"
        )
        is None
    )


def _direct_module() -> Module:
    router = APIRouter()

    @router.get("/api/v1/direct/{name}")
    @direct
    async def named(name: str, request: Request) -> Response:
        if name == "missing":
            raise NotFound("No such name.")
        return Response(name)

    return Module(name="direct", routers=(router,))


async def test_direct_routes_are_counted_by_template(settings: Settings) -> None:
    await upgrade(settings, [])
    app = create_app(settings, modules=[_direct_module()], run_background=False)
    async with serve(app) as client:
        for path in ("/api/v1/direct/a", "/api/v1/direct/b", "/api/v1/direct/missing"):
            await client.get(path)
        assert (await client.get("/healthz")).status_code == 200
        samples = await scrape(client)

    total = "engineroom_http_requests_total"
    template = "/api/v1/direct/{name}"
    assert value(samples, total, method="GET", route=template, status="200") == 2
    assert value(samples, total, method="GET", route=template, status="404") == 1
    assert value(samples, total, method="GET", route="/healthz", status="200") == 1
    duration = "engineroom_http_request_duration_seconds"
    assert value(samples, f"{duration}_count", method="GET", route=template) == 3
