"""Application composition: settings + selected modules -> one ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry import TelemetryConfig

from engineroom import __version__
from engineroom.catalog import load_modules, peers_of
from engineroom.core.errors import ErrorRenderers, install_error_handlers
from engineroom.core.graphql import build_graphql_router
from engineroom.core.health import router as health_router
from engineroom.core.http import PlatformApp, install_direct_routes, install_middleware
from engineroom.core.module import Module
from engineroom.core.observability.logging import configure_logging
from engineroom.core.observability.metrics import install_metrics
from engineroom.core.observability.tracing import configure_tracing
from engineroom.core.platform import Platform
from engineroom.core.responses import ORJSONResponse
from engineroom.settings import Settings, load_settings

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable, machine-readable error code."},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings | None = None,
    modules: Sequence[Module] | None = None,
    *,
    run_background: bool = True,
    peer_modules: Sequence[Module] | None = None,
) -> FastAPI:
    """Compose the app from ``modules`` (default: the catalog modules the settings select).

    ``run_background=False`` keeps the outbox relay and the job worker stopped, for tools
    (such as ``engineroom openapi``) that only need the routes. ``peer_modules`` are the
    modules other processes serve (default: the rest of the catalog when the modules come
    from the settings; none when the caller passes its own list).
    """
    settings = settings or load_settings()
    if modules is None:
        modules = load_modules(settings.modules or None)
        if peer_modules is None:
            peer_modules = peers_of(modules)
    selected = tuple(modules)
    configure_logging(settings)
    platform = Platform(settings, selected, peer_modules=peer_modules or ())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await platform.start(run_relay=run_background, run_jobs=run_background)
        try:
            yield
        finally:
            await platform.stop()

    app = PlatformApp(
        title="engineroom",
        version=__version__,
        description="A self-hosted backend platform. Errors under /api/v1 are RFC 9457 problems.",
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
        openapi_tags=[
            {"name": m.openapi_tag or m.name, "description": m.description} for m in selected
        ]
        + [{"name": "platform", "description": "Health, readiness and metrics."}],
        # FastAPI's own OpenTelemetry support checks the global providers on every
        # request; traces come from ``configure_tracing`` when an exporter is set, and
        # with none nothing is traced at all (docs/adr/0008, 0019).
        telemetry=None if settings.tracing_exporter != "none" else _NO_TELEMETRY,
    )
    app.state.platform = platform
    app.state.settings = settings
    resolvers = [m.principal_resolver for m in selected if m.principal_resolver is not None]
    app.state.principal_resolver = resolvers[0] if resolvers else None

    renderers = ErrorRenderers()
    for module in selected:
        for prefix, renderer in module.error_renderers.items():
            renderers.register(prefix, renderer)
    install_error_handlers(app, renderers)

    app.include_router(health_router)
    http_metrics = install_metrics(app, platform)
    for module in selected:
        for router in module.routers:
            app.include_router(router)
    app.include_router(build_graphql_router(selected, settings), prefix="/graphql")

    install_direct_routes(app)
    install_middleware(app, settings, observer=http_metrics)
    configure_tracing(app, settings)
    _install_openapi(app)
    return app


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (used by ``serve --workers N``)."""
    return create_app()
