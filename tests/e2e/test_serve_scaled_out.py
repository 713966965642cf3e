"""The scaled-out topology as real processes: PostgreSQL, Redis and a broker.

``serve`` refuses an unmigrated server database, serves after ``engineroom migrate``,
runs several worker processes, and ``engineroom worker`` runs beside it; each stops
cleanly on SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import StartServer
from tests.support.server import STOP_TIMEOUT, ServerFailedError, server_env

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.postgres]
COMMAND_TIMEOUT = 120.0


def run_command(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "engineroom", *args],
        cwd=workdir,
        env=server_env(workdir / "data", env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def test_serve_refuses_an_unmigrated_database_then_serves_after_migrate(
    start_server: StartServer, postgres_url: str, tmp_path: Path
) -> None:
    env = {"ENGINEROOM_DATABASE_URL": postgres_url}

    with pytest.raises(ServerFailedError) as caught:
        start_server(env=env)
    assert caught.value.exit_code == 2
    assert caught.value.output.strip().splitlines() == [caught.value.output.strip().splitlines()[0]]
    assert "the database schema is not migrated (" in caught.value.output
    assert "run `engineroom migrate`" in caught.value.output

    migrated = run_command(tmp_path / "migrate", env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("applied ")

    server = start_server(env=env)
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
    assert server.stop() == 0


@pytest.mark.redis
def test_several_worker_processes_serve_and_stop_cleanly(
    start_server: StartServer, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {"ENGINEROOM_DATABASE_URL": postgres_url, "ENGINEROOM_REDIS_URL": redis_url}
    assert run_command(tmp_path / "migrate", env, "migrate").returncode == 0

    server = start_server(args=["--workers", "2"], env=env)
    with server.client() as client:
        for _ in range(10):
            assert client.get("/readyz").status_code == 200

    assert "2 worker processes" in server.output()
    assert server.stop() == 0


@pytest.mark.rabbitmq
def test_worker_runs_until_sigterm(postgres_url: str, rabbitmq_url: str, tmp_path: Path) -> None:
    env = {"ENGINEROOM_DATABASE_URL": postgres_url, "ENGINEROOM_BROKER_URL": rabbitmq_url}
    assert run_command(tmp_path / "migrate", env, "migrate").returncode == 0
    workdir = tmp_path / "worker"
    workdir.mkdir()
    log_path = workdir / "worker.log"

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engineroom", "worker"],
            cwd=workdir,
            env=server_env(workdir / "data", env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while "outbox relay on" not in log_path.read_text(encoding="utf-8"):
            assert process.poll() is None, log_path.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, log_path.read_text(encoding="utf-8")
            time.sleep(0.1)
        output = log_path.read_text(encoding="utf-8")
        assert "guest:***@" in output
        assert ":guest@" not in output

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_TIMEOUT) == 0, log_path.read_text(encoding="utf-8")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in log_path.read_text(encoding="utf-8")
