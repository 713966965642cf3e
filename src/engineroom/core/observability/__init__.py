"""Logs, metrics and traces: structlog JSON lines, Prometheus at ``/metrics``, OpenTelemetry.

Each piece is installed by ``create_app``: ``configure_logging(settings)``,
``install_metrics(app, platform)`` and ``configure_tracing(app, settings)``.
"""

from engineroom.core.observability.logging import configure_logging
from engineroom.core.observability.metrics import install_metrics
from engineroom.core.observability.tracing import configure_tracing

__all__ = ["configure_logging", "configure_tracing", "install_metrics"]
