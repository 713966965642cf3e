"""The ``engineroom`` command: serve, migrate, worker, openapi, version.

Every refusal is one line on stderr (``error: ...``) and exit code 2, never a traceback:
a wrong setting, an unknown module, a combination that would split in-process state
between processes, or a schema that is not migrated.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import os
import platform as python_platform
import signal
import socket
import ssl
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from engineroom import __version__
from engineroom.app import create_app
from engineroom.catalog import UnknownModuleError, load_modules, parse_module_names, peers_of
from engineroom.core.db import Database
from engineroom.core.http.websocket_frames import FrameWritingProtocol
from engineroom.core.migrations.runner import (
    MigrationError,
    downgrade,
    pending_migrations,
    upgrade,
)
from engineroom.core.module import Module
from engineroom.core.observability.logging import configure_logging
from engineroom.core.platform import Platform
from engineroom.settings import Settings, SettingsError, load_settings

EXIT_REFUSED = 2
GRACEFUL_SHUTDOWN_SECONDS = 30
APP_FACTORY = "engineroom.app:create_app_from_env"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

cli = typer.Typer(
    name="engineroom",
    help="engineroom: a self-hosted backend platform.",
    no_args_is_help=True,
    add_completion=False,
    # Plain click output: errors stay one readable line in logs and CI, not a rich box.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class CliError(Exception):
    """A refusal to run as asked; the message is the one line the user sees."""


@contextmanager
def refusals() -> Iterator[None]:
    """Turn the expected start-up failures into ``error: <one line>`` and exit code 2."""
    try:
        yield
    except (CliError, SettingsError, UnknownModuleError, MigrationError) as exc:
        message = " ".join(str(exc).split())
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None


# ---- shared options ---------------------------------------------------------------------

ModulesOption = Annotated[
    str | None,
    typer.Option(
        "--modules",
        help="Comma-separated modules (default: ENGINEROOM_MODULES, else every module).",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: ENGINEROOM_DATA_DIR or ./var)."),
]


def resolve(
    modules: str | None = None, data_dir: Path | None = None
) -> tuple[Settings, list[Module]]:
    """Settings from the environment with the command-line overrides, and the modules."""
    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = load_settings(**overrides)
    # The option wins over ENGINEROOM_MODULES; both go through the same validation.
    raw = modules if modules is not None else ",".join(settings.modules)
    names = parse_module_names(raw)
    settings = settings.model_copy(update={"modules": names or []})
    return settings, load_modules(names)


def describe_database(settings: Settings) -> str:
    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/`` -> ``amqp://user:***@host/``, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ---- database pre-flight ----------------------------------------------------------------


async def check_schema(settings: Settings, modules: Sequence[Module]) -> None:
    """Refuse a schema with pending migrations (server databases are migrated explicitly)."""
    database = Database(settings)
    try:
        pending = await pending_migrations(database, modules)
    except (SQLAlchemyError, OSError) as exc:
        raise CliError(
            f"ENGINEROOM_DATABASE_URL: cannot reach {describe_database(settings)}: "
            f"{_first_line(exc)}"
        ) from exc
    finally:
        await database.dispose()
    if pending:
        raise CliError(
            f"the database schema is not migrated ({len(pending)} pending); "
            "run `engineroom migrate`"
        )


async def prepare_database(settings: Settings, modules: Sequence[Module]) -> None:
    """Before serving: migrate the embedded database, or check that a server one is."""
    if settings.is_embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await upgrade(settings, modules)
        return
    await check_schema(settings, modules)


async def migrate_database(
    settings: Settings, modules: Sequence[Module], down: str | None = None
) -> str:
    """Upgrade to every head (or downgrade to ``down``); return what was done."""
    if down is not None:
        await downgrade(settings, modules, down)
        return f"downgraded {describe_database(settings)} to {down}"
    database = Database(settings)
    try:
        pending = await pending_migrations(database, modules)
    except (SQLAlchemyError, OSError) as exc:
        raise CliError(
            f"ENGINEROOM_DATABASE_URL: cannot reach {describe_database(settings)}: "
            f"{_first_line(exc)}"
        ) from exc
    finally:
        await database.dispose()
    if not pending:
        return f"{describe_database(settings)} is up to date"
    await upgrade(settings, modules)
    return f"applied {len(pending)} migration(s) to {describe_database(settings)}: " + ", ".join(
        pending
    )


# ---- serve ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServePlan:
    """Everything ``serve`` decided before it binds a socket."""

    settings: Settings
    modules: list[Module]
    host: str
    port: int
    workers: int
    ssl_certfile: Path | None
    ssl_keyfile: Path | None
    proxy_headers: bool
    forwarded_allow_ips: str

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile is not None else "http"

    @property
    def base_url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"


def check_tls(certfile: Path | None, keyfile: Path | None) -> None:
    """Both files or neither, readable, and a key that matches the certificate."""
    if certfile is None and keyfile is None:
        return
    if certfile is None or keyfile is None:
        raise CliError("--ssl-certfile and --ssl-keyfile go together: give both or neither")
    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not path.is_file():
            raise CliError(f"{flag}: no such file: {path}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # An encrypted key would make OpenSSL prompt on the terminal; an empty password
        # makes it fail here instead, with a message.
        context.load_cert_chain(certfile, keyfile, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise CliError(
            f"--ssl-certfile/--ssl-keyfile: cannot load the certificate and key: "
            f"{getattr(exc, 'reason', None) or _first_line(exc)}"
        ) from exc


def check_workers(settings: Settings, workers: int) -> None:
    """Several processes only where no state lives inside one process."""
    if workers <= 1:
        return
    if settings.redis_url is None:
        raise CliError(
            f"--workers {workers} needs ENGINEROOM_REDIS_URL: the in-memory cache, rate limits, "
            "presence and WebSocket fan-out live in one process (use --workers 1)"
        )
    if settings.is_embedded_database:
        raise CliError(
            f"--workers {workers} needs a server database (ENGINEROOM_DATABASE_URL on "
            "PostgreSQL or MariaDB): the embedded topology runs one process (use --workers 1)"
        )


def startup_lines(plan: ServePlan) -> list[str]:
    base = plan.base_url
    names = ", ".join(m.name for m in plan.modules) or "none"
    return [
        f"engineroom {__version__} serving on {base} "
        f"({plan.workers} worker process{'es' if plan.workers > 1 else ''}; modules: {names})",
        f"  API docs:  {base}/docs  (ReDoc {base}/redoc, OpenAPI {base}/openapi.json)",
        f"  GraphQL:   {base}/graphql",
        f"  Metrics:   {base}/metrics",
        f"  Health:    {base}/healthz  (readiness {base}/readyz)",
        f"  Data:      {describe_database(plan.settings)}",
    ]


def _uvicorn_options(plan: ServePlan) -> dict[str, Any]:
    return {
        "host": plan.host,
        "port": plan.port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "lifespan": "on",
        "proxy_headers": plan.proxy_headers,
        "forwarded_allow_ips": plan.forwarded_allow_ips,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        # Per-message compression costs ~40 KB of zlib state per WebSocket and compresses
        # every message once per client, where a fan-out writes the same bytes to all.
        "ws_per_message_deflate": False,
        # uvicorn's WebSocket protocol plus writing pre-framed messages (a fan-out frames
        # a publication once for all its subscribers; see core/http/websocket_frames.py).
        "ws": FrameWritingProtocol,
        "server_header": False,
        # No logging config of uvicorn's own: configure_logging() routes its records
        # (access lines included) into the application's JSON lines.
        "log_config": None,
        "ssl_certfile": str(plan.ssl_certfile) if plan.ssl_certfile else None,
        "ssl_keyfile": str(plan.ssl_keyfile) if plan.ssl_keyfile else None,
    }


class DrainingServer(uvicorn.Server):
    """The uvicorn server of ``serve``: runs the modules' drain hooks when it stops.

    uvicorn closes open WebSockets with code 1012 as soon as it shuts down, before the
    lifespan shutdown; the hooks run first, once the listening sockets are closed, so a
    module can tell its clients to reconnect (to another process) in its own protocol.
    With ``freeze_heap`` the objects built by imports and startup are frozen out of the
    cyclic garbage collector once the app has started.
    """

    def __init__(
        self, config: uvicorn.Config, platform: Platform, *, freeze_heap: bool = False
    ) -> None:
        super().__init__(config)
        self.platform = platform
        self.freeze_heap = freeze_heap

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.freeze_heap:
            # What imports and startup built lives as long as the process: frozen, the
            # cyclic collector stops rescanning it (measured: a third of the CPU of a
            # WebSocket fan-out went to full collections over those objects).
            gc.collect()
            gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await self.platform.drain()
        await super().shutdown(sockets)


def run_single_process(plan: ServePlan) -> None:
    app = create_app(plan.settings, plan.modules, peer_modules=peers_of(plan.modules))
    server = DrainingServer(
        uvicorn.Config(app, **_uvicorn_options(plan)), app.state.platform, freeze_heap=True
    )

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    # After a graceful shutdown uvicorn re-raises the signal that stopped it against the
    # handler installed before it started. With the default handler a clean SIGTERM stop
    # would end as "killed by signal", where supervisors expect exit code 0; this handler
    # also covers a signal that arrives before uvicorn installs its own.
    previous = {sig: signal.signal(sig, request_stop) for sig in _STOP_SIGNALS}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise typer.Exit(1)


def run_worker_processes(plan: ServePlan) -> None:
    # The children build their app from the environment (uvicorn --factory), so the
    # command-line choices travel as the settings they override.
    os.environ["ENGINEROOM_DATA_DIR"] = str(plan.settings.data_dir)
    os.environ["ENGINEROOM_MODULES"] = ",".join(m.name for m in plan.modules)
    configure_logging(plan.settings)
    uvicorn.run(APP_FACTORY, factory=True, workers=plan.workers, **_uvicorn_options(plan))


def plan_serve(
    *,
    host: str,
    port: int,
    workers: int,
    modules: str | None,
    data_dir: Path | None,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
    proxy_headers: bool = False,
    forwarded_allow_ips: str = "127.0.0.1",
) -> ServePlan:
    """Validate the whole configuration; raise ``CliError``/``SettingsError`` on refusal."""
    settings, selected = resolve(modules, data_dir)
    # Generate (development) or validate (production) the root secret now, not on the
    # first request that signs something.
    _ = settings.secret
    check_tls(ssl_certfile, ssl_keyfile)
    check_workers(settings, workers)
    return ServePlan(
        settings=settings,
        modules=selected,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
    )


@cli.command()
def serve(
    host: Annotated[str, typer.Option(envvar="HOST", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="PORT", min=0, max=65535, help="TCP port to bind.")
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Server processes; above 1 needs Redis and a server database."),
    ] = 1,
    modules: ModulesOption = None,
    data_dir: DataDirOption = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="PEM certificate chain: serve HTTPS.")
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option(help="PEM private key for --ssl-certfile.")
    ] = None,
    proxy_headers: Annotated[
        bool,
        typer.Option(help="Trust X-Forwarded-* headers from --forwarded-allow-ips."),
    ] = False,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Comma-separated proxy addresses trusted for --proxy-headers.")
    ] = "127.0.0.1",
) -> None:
    """Serve the API (every selected module in one process)."""
    with refusals():
        plan = plan_serve(
            host=host,
            port=port,
            workers=workers,
            modules=modules,
            data_dir=data_dir,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
        )
        asyncio.run(prepare_database(plan.settings, plan.modules))
    typer.echo("\n".join(startup_lines(plan)))
    sys.stdout.flush()
    if plan.workers > 1:
        run_worker_processes(plan)
    else:
        run_single_process(plan)


# ---- migrate ----------------------------------------------------------------------------


@cli.command()
def migrate(
    modules: ModulesOption = None,
    data_dir: DataDirOption = None,
    down: Annotated[
        str | None,
        typer.Option(
            "--down",
            metavar="REVISION",
            help="Downgrade to REVISION instead (`base` empties the schema).",
        ),
    ] = None,
) -> None:
    """Apply every pending migration of the kernel and the selected modules."""
    with refusals():
        settings, selected = resolve(modules, data_dir)
        typer.echo(asyncio.run(migrate_database(settings, selected, down)))


# ---- worker -----------------------------------------------------------------------------


async def run_worker(settings: Settings, modules: Sequence[Module]) -> None:
    """Relay the outbox and run jobs from the broker until SIGINT or SIGTERM."""
    platform = Platform(settings, modules, peer_modules=peers_of(modules))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        await platform.relay.start()
        broker = redact_url(settings.broker_url or "")
        typer.echo(f"engineroom {__version__} worker: jobs from {broker}, outbox relay on")
        sys.stdout.flush()
        await platform.jobs.run_worker(stop)
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        await platform.stop()


@cli.command()
def worker(modules: ModulesOption = None, data_dir: DataDirOption = None) -> None:
    """Run background jobs and the outbox relay against ENGINEROOM_BROKER_URL."""
    with refusals():
        settings, selected = resolve(modules, data_dir)
        if settings.broker_url is None:
            raise CliError(
                "jobs run inside `engineroom serve` in the embedded topology; "
                "set ENGINEROOM_BROKER_URL to run separate workers"
            )
        _ = settings.secret
        asyncio.run(check_schema(settings, selected))
    configure_logging(settings)
    asyncio.run(run_worker(settings, selected))


# ---- openapi, version -------------------------------------------------------------------


@cli.command()
def openapi(
    modules: ModulesOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
) -> None:
    """Print the OpenAPI document of the selected modules."""
    with refusals():
        settings, selected = resolve(modules)
        document = create_app(settings, selected, run_background=False).openapi()
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


@cli.command()
def version() -> None:
    """Print the engineroom and Python versions."""
    typer.echo(
        f"engineroom {__version__} (Python {python_platform.python_version()}, "
        f"{python_platform.python_implementation()})"
    )


# ---- module commands --------------------------------------------------------------------


def mount_module_commands(app: typer.Typer, modules: Sequence[Module]) -> None:
    """Mount each module's own sub-commands as ``engineroom <module> ...``."""
    taken = {
        command.name or getattr(command.callback, "__name__", "").replace("_", "-")
        for command in app.registered_commands
    }
    taken |= {group.name for group in app.registered_groups if group.name}
    for module in modules:
        if module.commands is None:
            continue
        if module.name in taken:
            raise ValueError(f"module {module.name!r}: a command of that name exists")
        app.add_typer(module.commands, name=module.name)
        taken.add(module.name)


mount_module_commands(cli, load_modules())


def main() -> None:
    cli(prog_name="engineroom")
