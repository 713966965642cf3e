"""OpenTelemetry tracing: off by default, one server span per request when configured."""

from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engineroom.app import create_app
from engineroom.core.observability.tracing import (
    build_exporter,
    configure_tracing,
    otlp_traces_url,
)
from engineroom.settings import Settings


async def _get(app: FastAPI, *paths: str) -> None:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in paths:
                await client.get(path)


def test_tracing_is_off_unless_configured(settings: Settings) -> None:
    assert settings.tracing_exporter == "none"
    assert build_exporter(settings) is None
    app = create_app(settings, modules=[], run_background=False)
    assert not hasattr(app.state, "tracer_provider")


def test_otlp_endpoint_gets_the_traces_path_once(settings: Settings) -> None:
    base = settings.model_copy(update={"otlp_endpoint": "http://127.0.0.1:4318/"})
    full = settings.model_copy(update={"otlp_endpoint": "http://127.0.0.1:4318/v1/traces"})
    assert otlp_traces_url(base) == "http://127.0.0.1:4318/v1/traces"
    assert otlp_traces_url(full) == "http://127.0.0.1:4318/v1/traces"


async def test_requests_become_server_spans_and_probes_do_not(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(settings, modules=[], run_background=False)
    configure_tracing(app, settings, exporter=exporter)
    # The lifespan's end shuts the provider down, which flushes the batch processor.
    await _get(app, "/graphql?query=%7Bhealth%7D", "/healthz", "/metrics")
    spans = exporter.get_finished_spans()
    routes = [span.attributes.get("http.route") for span in spans if span.attributes]
    assert routes == ["/graphql"]
    [span] = spans
    assert span.kind.name == "SERVER"
    assert span.resource.attributes["service.name"] == "engineroom"
