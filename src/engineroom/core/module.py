"""The typed description of a module: what it brings to the composed application.

``create_app(settings, modules=...)`` reads these; nothing else about a module is special.
The same description serves the one-process topology and a service running one module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter

from engineroom.core.auth import PrincipalResolver
from engineroom.core.errors import ErrorRenderer
from engineroom.core.events import Subscription
from engineroom.core.jobs import JobSpec

if TYPE_CHECKING:
    import typer

    from engineroom.core.platform import Platform

LifecycleHook = Callable[["Platform"], Awaitable[None]]


@dataclass(frozen=True)
class Module:
    """Everything a module contributes. Only ``name`` is required."""

    name: str
    routers: Sequence[APIRouter] = ()
    graphql_queries: Sequence[type] = ()
    graphql_mutations: Sequence[type] = ()
    subscriptions: Sequence[Subscription] = ()
    jobs: Sequence[JobSpec] = ()
    migrations: Path | None = None
    """Directory of this module's Alembic revisions (branch label = module name)."""
    error_renderers: Mapping[str, ErrorRenderer] = field(default_factory=dict)
    """Path prefix -> renderer, for routes whose spec has its own error shape."""
    principal_resolver: PrincipalResolver | None = None
    """Turns credentials into a Principal; the identity module provides it."""
    on_startup: Sequence[LifecycleHook] = ()
    on_shutdown: Sequence[LifecycleHook] = ()
    on_drain: Sequence[LifecycleHook] = ()
    """Run when the server stops accepting connections, before it closes the open ones
    (a WebSocket transport tells its clients to reconnect elsewhere)."""
    openapi_tag: str | None = None
    commands: typer.Typer | None = None
    """Sub-commands mounted as ``engineroom <module name> ...`` (e.g. key rotation)."""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.name.islower():
            raise ValueError(f"module name must be a lowercase identifier, got {self.name!r}")
