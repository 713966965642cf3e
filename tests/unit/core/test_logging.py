"""JSON log lines: one object per line, stdlib records included, no terminal noise."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from engineroom.core.observability.logging import configure_logging
from engineroom.settings import Settings


def _lines(captured: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in captured.splitlines() if line.strip()]


def test_stdlib_records_become_json_without_color_copies(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings.model_copy(update={"log_format": "json", "log_level": "INFO"}))
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "\x1b[36m%d\x1b[0m"}
    )
    [line] = _lines(capsys.readouterr().out)
    assert line["event"] == "Started server process [42]"
    assert line["logger"] == "uvicorn.error"
    assert line["level"] == "info"
    assert "color_message" not in line


def test_structlog_events_carry_bound_context(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings.model_copy(update={"log_format": "json", "log_level": "INFO"}))
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        structlog.get_logger("engineroom.test").info("thing_done", items=3)
    structlog.get_logger("engineroom.test").debug("below_the_level")
    [line] = _lines(capsys.readouterr().out)
    assert line["event"] == "thing_done"
    assert line["request_id"] == "req-1"
    assert line["items"] == 3
    assert str(line["timestamp"]).endswith("Z")
