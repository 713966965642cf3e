"""Fixtures that start the real ``engineroom serve`` process (see tests/support/server.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess, serve_process

StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers for one test: ``start_server(args=[...], env={...})``.

    Each gets its own working directory under ``tmp_path`` (``data_dir=`` shares one);
    every server still running when the test ends is stopped by PID.
    """
    numbers = count(1)
    with ExitStack() as stack:

        def start(**options: Any) -> ServerProcess:
            workdir = tmp_path / f"server-{next(numbers)}"
            return stack.enter_context(serve_process(workdir, **options))

        yield start


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One embedded-topology server (every module, SQLite) shared by a test module."""
    with serve_process(tmp_path_factory.mktemp("embedded")) as server:
        yield server
