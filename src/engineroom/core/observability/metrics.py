"""Prometheus metrics: HTTP traffic, the database pools, outbox lag and job queue depth.

Every app owns its ``CollectorRegistry`` (``app.state.metrics_registry``): the global
registry would mix the numbers of the many apps a test run creates. Requests are
labelled with the route *template* (``/api/v1/demo/notes/{note_id}``), never the raw
path, so the number of series stays bounded whatever clients send. The edge middleware
reports each request to ``HttpMetrics`` (``install_middleware(..., observer=...)``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI, Request
from fastapi.routing import RouteContext, iter_route_contexts
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from starlette.responses import Response
from starlette.types import Scope

from engineroom.core.http.direct import ROUTE_TEMPLATE_KEY

if TYPE_CHECKING:
    from engineroom.core.platform import Platform

METRICS_PATH = "/metrics"
UNMATCHED_ROUTE = "unmatched"
REFRESH_TIMEOUT_S = 5.0
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

logger = structlog.get_logger("engineroom.metrics")


class HttpMetrics:
    """The request counters, registered in one app's registry; the edge's observer."""

    def __init__(self, registry: CollectorRegistry, routes: RouteTemplates) -> None:
        self.routes = routes
        # The labelled children by (method, route, status): ``labels()`` takes a lock
        # and builds its key on every call. Bounded like the series themselves.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.requests = Counter(
            "engineroom_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "engineroom_http_request_duration_seconds",
            "Time from receiving a request to the end of its response.",
            ["method", "route"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "engineroom_http_requests_in_flight",
            "HTTP requests being handled right now.",
            registry=registry,
        )

    def observes(self, scope: Scope) -> bool:
        return bool(scope["path"] != METRICS_PATH)

    def started(self) -> None:
        self.in_flight.inc()

    def finished(self, scope: Scope, status: int, seconds: float) -> None:
        self.in_flight.dec()
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
        # Direct routes name their template; the router wrote the route it matched
        # into this same scope dict on the way in.
        route = scope.get(ROUTE_TEMPLATE_KEY) or self.routes.template(scope)
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.duration.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class RouteTemplates:
    """Finds the full path template of the route a request matched.

    FastAPI keeps an included router's routes as they were declared and matches them
    through the inclusion, so ``scope["route"].path`` lacks the ``include_router``
    prefix (``""`` for the GraphQL router mounted at ``/graphql``). The app's route
    contexts carry the full template; they are indexed by route object, rebuilt when
    routes were added since the last lookup.
    """

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._index: dict[int, list[RouteContext]] = {}
        self._indexed_count = -1

    def template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED_ROUTE
        contexts = self._contexts(route)
        path = scope.get("path", "")
        # One route object included under several prefixes: the one whose regex matches.
        for context in contexts:
            regex = getattr(context, "path_regex", None)
            if len(contexts) == 1 or (regex is not None and regex.match(path)):
                return str(context.path_format or UNMATCHED_ROUTE)
        own = getattr(route, "path_format", None) or getattr(route, "path", None)
        return own if isinstance(own, str) and own else UNMATCHED_ROUTE

    def _contexts(self, route: object) -> list[RouteContext]:
        found = self._index.get(id(route))
        if found is None and len(self._app.routes) != self._indexed_count:
            self._rebuild()
            found = self._index.get(id(route))
        return found or []

    def _rebuild(self) -> None:
        index: dict[int, list[RouteContext]] = {}
        for context in iter_route_contexts(self._app.routes):
            index.setdefault(id(context.original_route), []).append(context)
        self._index = index
        self._indexed_count = len(self._app.routes)


class PlatformCollector:
    """Reads the database pools and the job queue when Prometheus scrapes."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def describe(self) -> Iterable[Metric]:
        # Registering must not touch the platform (it may not be started yet).
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        checked_out, size, overflow, depth = self._families()
        for name, engine in self._engines():
            pool = engine.pool
            if isinstance(pool, QueuePool):
                checked_out.add_metric([name], pool.checkedout())
                size.add_metric([name], pool.size())
                overflow.add_metric([name], max(0, pool.overflow()))
        try:
            depth.add_metric([], self.platform.jobs.queue_depth())
        except Exception as exc:
            logger.warning("job_queue_depth_unavailable", error_type=type(exc).__name__)
        return [checked_out, size, overflow, depth]

    def _engines(self) -> Iterator[tuple[str, AsyncEngine]]:
        database = self.platform.database
        yield "primary", database.engine
        for index, engine in enumerate(database.read_engines):
            yield f"read{index}", engine

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        return (
            GaugeMetricFamily(
                "engineroom_db_pool_checked_out",
                "Database connections in use, per pool.",
                labels=["pool"],
            ),
            GaugeMetricFamily(
                "engineroom_db_pool_size", "Configured size of each pool.", labels=["pool"]
            ),
            GaugeMetricFamily(
                "engineroom_db_pool_overflow",
                "Connections open beyond the pool size, per pool.",
                labels=["pool"],
            ),
            GaugeMetricFamily(
                "engineroom_jobs_queue_depth", "Background jobs waiting to run.", labels=[]
            ),
        )


class OutboxMetrics:
    """Outbox gauges, refreshed by the ``/metrics`` route (collectors cannot await)."""

    def __init__(self, registry: CollectorRegistry, platform: Platform) -> None:
        self.platform = platform
        self.pending_events = Gauge(
            "engineroom_outbox_pending_events",
            "Committed events not yet fanned out to subscribers.",
            registry=registry,
        )
        self.oldest_age = Gauge(
            "engineroom_outbox_oldest_pending_age_seconds",
            "Age of the oldest event still owed to a subscriber (the outbox lag).",
            registry=registry,
        )
        self.pending_deliveries = Gauge(
            "engineroom_outbox_pending_deliveries",
            "Deliveries waiting to run or to be retried.",
            registry=registry,
        )
        self.dead_letters = Gauge(
            "engineroom_outbox_dead_letters",
            "Deliveries that exhausted their attempts.",
            registry=registry,
        )
        self.refresh_errors = Counter(
            "engineroom_metrics_refresh_errors",
            "Scrapes whose outbox numbers could not be read (the gauges kept old values).",
            registry=registry,
        )

    async def refresh(self) -> None:
        try:
            stats = await asyncio.wait_for(self.platform.relay.stats(), REFRESH_TIMEOUT_S)
        except Exception as exc:
            # A scrape still answers: the other metrics matter most when the DB is sick.
            self.refresh_errors.inc()
            logger.warning("outbox_stats_unavailable", error_type=type(exc).__name__)
            return
        self.pending_events.set(stats.pending_events)
        self.oldest_age.set(stats.oldest_pending_age_seconds)
        self.pending_deliveries.set(stats.pending_deliveries)
        self.dead_letters.set(stats.dead_letters)


def install_metrics(app: FastAPI, platform: Platform) -> HttpMetrics:
    """Add the scrape-time collectors and ``GET /metrics``; return the request metrics,
    for the edge middleware to report to."""
    registry = CollectorRegistry(auto_describe=True)
    http_metrics = HttpMetrics(registry, RouteTemplates(app))
    outbox = OutboxMetrics(registry, platform)
    registry.register(PlatformCollector(platform))
    app.state.metrics_registry = registry

    @app.get(
        METRICS_PATH,
        tags=["platform"],
        summary="Prometheus metrics",
        description="Metrics in the Prometheus text format (OpenMetrics when asked for).",
        response_class=Response,
        responses={
            200: {
                "description": "The current metrics.",
                "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics(request: Request) -> Response:
        await outbox.refresh()
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        # Collected on the loop: the collectors read asyncio-owned state (the job queue).
        return Response(encoder(registry), media_type=content_type)

    return http_metrics
