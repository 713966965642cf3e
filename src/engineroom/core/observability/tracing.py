"""OpenTelemetry traces for HTTP requests (and anything that uses the global tracer).

``ENGINEROOM_TRACING_EXPORTER=none`` (the default) installs nothing at all. ``console``
prints finished spans to stdout; ``otlp`` sends them over OTLP/HTTP to
``ENGINEROOM_OTLP_ENDPOINT`` (the collector's base URL; ``/v1/traces`` is appended when
missing, as for ``OTEL_EXPORTER_OTLP_ENDPOINT``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from engineroom import __version__
from engineroom.settings import Settings

SERVICE = "engineroom"
OTLP_TIMEOUT_S = 10.0
# Probes and scrapes arrive every few seconds and say nothing about user traffic.
EXCLUDED_URLS = "/healthz,/readyz,/metrics"

_global_lock = threading.Lock()
_global_set = False


def build_exporter(settings: Settings) -> SpanExporter | None:
    """The exporter the settings ask for, or ``None`` when tracing is off."""
    if settings.tracing_exporter == "console":
        return ConsoleSpanExporter(service_name=SERVICE)
    if settings.tracing_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=otlp_traces_url(settings), timeout=OTLP_TIMEOUT_S)
    return None


def otlp_traces_url(settings: Settings) -> str:
    endpoint = (settings.otlp_endpoint or "").rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def _set_global_once(provider: TracerProvider) -> None:
    """Make ``provider`` the process's tracer provider unless one is already set.

    OpenTelemetry allows setting it once per process; an app created later (tests build
    many) traces its requests through its own provider but leaves the global one alone.
    """
    global _global_set
    with _global_lock:
        if _global_set or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return
        trace.set_tracer_provider(provider)
        _global_set = True


def _shutdown_with_app(app: FastAPI, provider: TracerProvider) -> None:
    """Flush and close the provider when the app's lifespan ends."""
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        try:
            async with inner(asgi_app) as state:
                yield state
        finally:
            # Exporting the last batch does blocking network I/O.
            await asyncio.to_thread(provider.shutdown)

    app.router.lifespan_context = lifespan


def configure_tracing(
    app: FastAPI, settings: Settings, *, exporter: SpanExporter | None = None
) -> None:
    """Trace ``app``'s requests when the settings (or ``exporter``, for tests) ask for it."""
    exporter = exporter or build_exporter(settings)
    if exporter is None:
        return
    resource = Resource.create({SERVICE_NAME: SERVICE, SERVICE_VERSION: __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _set_global_once(provider)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=EXCLUDED_URLS,
        exclude_spans=["receive", "send"],
    )
    app.state.tracer_provider = provider
    _shutdown_with_app(app, provider)
