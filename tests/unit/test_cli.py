"""The command line: what it prints, and every refusal as one line with exit code 2.

Commands run in-process through Typer's runner, with the environment scrubbed and a
temporary working and data directory. ``serve`` is only run here up to a refusal; the
end-to-end tests start the real server.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from engineroom import __version__
from engineroom.catalog import load_modules
from engineroom.cli import (
    CliError,
    ServePlan,
    cli,
    mount_module_commands,
    plan_serve,
    prepare_database,
    redact_url,
    startup_lines,
)
from engineroom.core.module import Module
from engineroom.settings import SECRET_KEY_FILENAME, load_settings
from tests.support.server import make_self_signed_certificate

runner = CliRunner()
MIGRATE_HINT = "run `engineroom migrate`"


@pytest.fixture(autouse=True)
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ENGINEROOM_*, HOST or PORT from the caller; no ``.env`` from the repository."""
    for name in list(os.environ):
        if name.startswith("ENGINEROOM_") or name in ("HOST", "PORT"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "data"
    monkeypatch.setenv("ENGINEROOM_DATA_DIR", str(directory))
    monkeypatch.setenv("ENGINEROOM_ENVIRONMENT", "test")
    return directory


def invoke(*args: str) -> Result:
    return runner.invoke(cli, list(args), prog_name="engineroom")


def assert_refused(result: Result, starts_with: str) -> str:
    """Exit code 2 and exactly one line on stderr, starting ``error: <starts_with>``."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {starts_with}"), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def plan(**overrides: object) -> ServePlan:
    options: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 8000,
        "workers": 1,
        "modules": None,
        "data_dir": None,
        "ssl_certfile": None,
        "ssl_keyfile": None,
    }
    options.update(overrides)
    return plan_serve(**options)  # type: ignore[arg-type]


# ---- version, openapi -------------------------------------------------------------------


def test_version_prints_engineroom_and_python_versions() -> None:
    result = invoke("version")

    assert result.exit_code == 0
    assert result.stdout.strip() == (
        f"engineroom {__version__} (Python {platform.python_version()}, "
        f"{platform.python_implementation()})"
    )


def test_python_dash_m_runs_the_same_command_line(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "engineroom", "version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"engineroom {__version__} (Python ")


def test_openapi_prints_the_document_as_json() -> None:
    result = invoke("openapi")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["openapi"].startswith("3.")
    assert document["info"] == {
        "title": "engineroom",
        "version": __version__,
        "description": document["info"]["description"],
    }
    assert "/healthz" in document["paths"]
    assert "/readyz" in document["paths"]
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) >= {"type", "title", "status", "detail", "code"}


def test_openapi_writes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"

    result = invoke("openapi", "--output", str(target))

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "/healthz" in json.loads(target.read_text(encoding="utf-8"))["paths"]


# ---- wrong settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENGINEROOM_LOG_LEVEL", "LOUD"),
        ("ENGINEROOM_DATABASE_URL", "mongodb://x"),
        ("ENGINEROOM_MAX_BODY_BYTES", "abc"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "migrate", "worker", "openapi"])
def test_wrong_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, command: str, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    line = assert_refused(invoke(command), f"{variable}: ")

    assert repr(value) in line


def test_production_without_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    monkeypatch.setenv("ENGINEROOM_ENVIRONMENT", "production")

    assert_refused(invoke("serve"), "ENGINEROOM_SECRET_KEY: required in production")
    assert not (data_dir / SECRET_KEY_FILENAME).exists()


def test_serve_generates_the_secret_key_once_and_reuses_it(data_dir: Path) -> None:
    first = plan()
    secret_path = data_dir / SECRET_KEY_FILENAME
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    stored = secret_path.read_text(encoding="utf-8")

    second = plan()

    assert first.settings.secret == stored
    assert second.settings.secret == stored
    assert secret_path.read_text(encoding="utf-8") == stored


def test_bad_port_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "eighty")

    result = invoke("serve")

    assert result.exit_code == 2
    assert "Invalid value for '--port' (env var: 'PORT')" in result.stderr


# ---- topology refusals ------------------------------------------------------------------


def test_several_workers_need_redis() -> None:
    assert_refused(invoke("serve", "--workers", "2"), "--workers 2 needs ENGINEROOM_REDIS_URL")


def test_several_workers_need_a_server_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEROOM_REDIS_URL", "redis://127.0.0.1:6379/0")

    assert_refused(invoke("serve", "--workers", "2"), "--workers 2 needs a server database")


def test_several_workers_with_redis_and_a_server_database_are_planned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENGINEROOM_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("ENGINEROOM_DATABASE_URL", "postgresql+asyncpg://u@127.0.0.1/x")

    assert plan(workers=4).workers == 4


@pytest.mark.parametrize("option", ["--modules=nope", "--modules=,nope, also"])
def test_unknown_module_is_refused(option: str) -> None:
    assert_refused(invoke("serve", option), "unknown module(s): nope")


def test_unknown_module_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEROOM_MODULES", "blog,nope,shopp")

    assert_refused(invoke("migrate"), "unknown module(s): nope, shopp")


def test_worker_needs_a_broker() -> None:
    assert_refused(
        invoke("worker"),
        "jobs run inside `engineroom serve` in the embedded topology; "
        "set ENGINEROOM_BROKER_URL to run separate workers",
    )


def test_worker_refuses_an_unmigrated_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEROOM_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")

    line = assert_refused(invoke("worker"), "the database schema is not migrated (")

    assert line.endswith(MIGRATE_HINT)


# ---- TLS options ------------------------------------------------------------------------


def test_certificate_without_key_is_refused(tmp_path: Path) -> None:
    certificate = make_self_signed_certificate(tmp_path / "tls")

    assert_refused(
        invoke("serve", "--ssl-certfile", str(certificate.certfile)),
        "--ssl-certfile and --ssl-keyfile go together",
    )
    assert_refused(
        invoke("serve", "--ssl-keyfile", str(certificate.keyfile)),
        "--ssl-certfile and --ssl-keyfile go together",
    )


def test_missing_certificate_file_is_refused(tmp_path: Path) -> None:
    certificate = make_self_signed_certificate(tmp_path / "tls")
    absent = tmp_path / "absent.pem"

    assert_refused(
        invoke("serve", "--ssl-certfile", str(absent), "--ssl-keyfile", str(certificate.keyfile)),
        f"--ssl-certfile: no such file: {absent}",
    )


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    one = make_self_signed_certificate(tmp_path / "one")
    other = make_self_signed_certificate(tmp_path / "other")

    assert_refused(
        invoke("serve", "--ssl-certfile", str(one.certfile), "--ssl-keyfile", str(other.keyfile)),
        "--ssl-certfile/--ssl-keyfile: cannot load the certificate and key",
    )


def test_matching_certificate_and_key_make_an_https_plan(tmp_path: Path) -> None:
    certificate = make_self_signed_certificate(tmp_path / "tls")

    planned = plan(ssl_certfile=certificate.certfile, ssl_keyfile=certificate.keyfile, port=8443)

    assert planned.base_url == "https://127.0.0.1:8443"


# ---- what serve prints ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://[::1]:8000"),
        ("localhost", "http://localhost:8000"),
    ],
)
def test_startup_lines_point_at_every_endpoint(host: str, base_url: str) -> None:
    text = "\n".join(startup_lines(plan(host=host)))

    for path in ("/docs", "/redoc", "/openapi.json", "/graphql", "/metrics", "/healthz", "/readyz"):
        assert f"{base_url}{path}" in text


def test_printed_urls_hide_passwords() -> None:
    assert redact_url("amqp://guest:secret@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# ---- migrations -------------------------------------------------------------------------


def test_migrate_applies_pending_revisions_once(data_dir: Path) -> None:
    first = invoke("migrate")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith("applied ")
    assert (data_dir / "engineroom.db").exists()

    second = invoke("migrate")
    assert second.exit_code == 0, second.stderr
    assert second.stdout.strip().endswith("is up to date")

    down = invoke("migrate", "--down", "base")
    assert down.exit_code == 0, down.stderr
    assert down.stdout.startswith("downgraded ")

    again = invoke("migrate")
    assert again.exit_code == 0, again.stderr
    assert again.stdout == first.stdout


def test_migrate_to_an_unknown_revision_is_refused() -> None:
    assert invoke("migrate").exit_code == 0

    assert_refused(
        invoke("migrate", "--down", "no-such-revision"),
        "Can't locate revision identified by 'no-such-revision'",
    )


async def test_embedded_database_is_migrated_before_serving(data_dir: Path) -> None:
    planned = plan()

    await prepare_database(planned.settings, planned.modules)
    # A second start finds nothing to do, and so does `engineroom migrate`.
    await prepare_database(planned.settings, planned.modules)

    assert (data_dir / "engineroom.db").exists()
    migrated = await asyncio.to_thread(invoke, "migrate")
    assert migrated.stdout.strip().endswith("is up to date")


def test_unreachable_server_database_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    monkeypatch.setenv("ENGINEROOM_DATABASE_URL", "postgresql+asyncpg://u:pw@127.0.0.1:1/x")

    line = assert_refused(invoke("migrate"), "ENGINEROOM_DATABASE_URL: cannot reach ")

    assert "pw" not in line


@pytest.mark.postgres
async def test_serve_refuses_unmigrated_postgres_until_migrated(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    monkeypatch.setenv("ENGINEROOM_DATABASE_URL", postgres_url)

    # The runner calls asyncio.run(), which needs a thread without a running loop.
    refused = await asyncio.to_thread(invoke, "serve")
    line = assert_refused(refused, "the database schema is not migrated (")
    assert line.endswith(f"pending); {MIGRATE_HINT}")

    migrated = await asyncio.to_thread(invoke, "migrate")
    assert migrated.exit_code == 0, migrated.stderr
    assert migrated.stdout.startswith("applied ")

    settings = load_settings()
    # The modules `migrate` applied: a module's first revision depends on the core head,
    # so the version table records the module's head in place of the core one.
    modules = load_modules()
    await prepare_database(settings, modules)
    with pytest.raises(CliError):
        await prepare_database(
            settings.model_copy(update={"database_url": postgres_url + "x"}), modules
        )


def test_modules_contribute_sub_commands() -> None:
    app = typer.Typer()

    @app.command()
    def serve() -> None:
        """A built-in command."""

    extra = typer.Typer()

    @extra.command("say-hello")
    def say_hello(name: str) -> None:
        typer.echo(f"hello {name}")

    mount_module_commands(app, [Module(name="greeter", commands=extra), Module(name="plain")])
    result = runner.invoke(app, ["greeter", "say-hello", "you"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello you\n"
    with pytest.raises(ValueError, match="a command of that name exists"):
        mount_module_commands(app, [Module(name="serve", commands=typer.Typer())])


def test_catalog_module_commands_are_mounted_on_the_cli() -> None:
    result = invoke("identity", "--help")
    assert result.exit_code == 0
    assert "rotate-keys" in result.stdout
