"""Structured logs: one JSON object per line (or a console rendering for humans).

structlog loggers and stdlib loggers (uvicorn, SQLAlchemy, libraries) share one handler
on the root logger, so every line carries the same keys: ``timestamp`` (ISO 8601 UTC),
``level``, ``logger``, ``event``, the context bound with ``structlog.contextvars`` (the
request id) and, while a span is recording, ``trace_id``/``span_id``.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

import structlog
from opentelemetry import trace
from structlog.tracebacks import ExceptionDictTransformer
from structlog.types import EventDict, Processor, WrappedLogger

from engineroom.settings import Settings

# Loggers that install their own handlers (uvicorn's dictConfig runs before the app
# factory); their records are sent to the root handler instead so the format is one.
_ROUTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy")
# Chatty at INFO: alembic on every readiness probe, httpx on every outgoing request.
_QUIET_LOGGERS = {
    "sqlalchemy": logging.WARNING,
    "aiosqlite": logging.WARNING,
    "alembic": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
}


class _StdoutHandler(logging.StreamHandler[IO[str]]):
    """Writes to whatever ``sys.stdout`` is at emit time (test capture, reopened pipes)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle), so the swap is safe.
        self.stream = sys.stdout
        super().emit(record)


def add_trace_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Add the current OpenTelemetry trace and span ids, when a span is recording."""
    span = trace.get_current_span()
    if span.is_recording():
        context = span.get_span_context()
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def _shared_processors() -> list[Processor]:
    """Processors for structlog and stdlib records alike, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_trace_context,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _render_processors(log_format: str) -> list[Processor]:
    if log_format == "json":
        # Locals stay out of logged tracebacks: they can hold passwords and tokens.
        exceptions = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False)
        )
        return [exceptions, structlog.processors.JSONRenderer()]
    colors = sys.stdout.isatty()
    return [structlog.dev.ConsoleRenderer(colors=colors)]


def _drop_color_message(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """uvicorn attaches an ANSI-coloured copy of each message; it is noise in log lines."""
    event_dict.pop("color_message", None)
    return event_dict


def _formatter(settings: Settings) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_shared_processors(),
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_render_processors(settings.log_format),
        ],
    )


def configure_logging(settings: Settings) -> None:
    """Configure structlog and the stdlib root logger; safe to call any number of times.

    Each call replaces the handler installed by the previous one, so the last settings
    win and no line is ever written twice.
    """
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Caching would pin loggers to the first configuration and defeat
        # structlog.testing.capture_logs in tests.
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdoutHandler):
            root.removeHandler(handler)
    handler = _StdoutHandler()
    handler.setFormatter(_formatter(settings))
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in _ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True
    configured = logging.getLevelNamesMapping()[settings.log_level]
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, configured))
