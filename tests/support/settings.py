"""Settings for one test: a temporary data dir, a chosen database, any host allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engineroom.settings import Settings


def settings_on(database_url: str | None, tmp_path: Path, **overrides: Any) -> Settings:
    """Test settings on ``database_url`` (None: the embedded SQLite in the data dir)."""
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "allowed_hosts": ["*"],
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
