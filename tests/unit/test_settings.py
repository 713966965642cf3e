"""Settings come from ``ENGINEROOM_*`` variables; a wrong one is one line naming it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engineroom.settings import (
    SECRET_KEY_FILENAME,
    Environment,
    SettingsError,
    load_secret_key,
    load_settings,
)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ENGINEROOM_* from the caller's shell and no ``.env`` from the repository."""
    for name in list(os.environ):
        if name.startswith("ENGINEROOM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("ENGINEROOM_DATA_DIR", str(data_dir))
    return data_dir


def test_defaults_are_the_embedded_topology(isolated_env: Path) -> None:
    settings = load_settings()

    assert settings.environment is Environment.DEVELOPMENT
    assert settings.is_embedded_database
    assert settings.resolved_database_url == (
        f"sqlite+aiosqlite:///{(isolated_env / 'engineroom.db').as_posix()}"
    )
    assert settings.modules == []
    assert settings.redis_url is None
    assert settings.broker_url is None


def test_values_come_from_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEROOM_MODULES", " identity , blog,")
    monkeypatch.setenv("ENGINEROOM_DATABASE_URL", "postgresql+asyncpg://u@db:5432/x")
    monkeypatch.setenv("ENGINEROOM_REDIS_URL", "  ")
    monkeypatch.setenv("ENGINEROOM_MAX_BODY_BYTES", "2048")

    settings = load_settings()

    assert settings.modules == ["identity", "blog"]
    assert settings.database_dialect == "postgresql"
    assert not settings.is_embedded_database
    assert settings.redis_url is None
    assert settings.max_body_bytes == 2048


def test_dotenv_file_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ENGINEROOM_LOG_LEVEL=DEBUG\n", encoding="utf-8")

    assert load_settings().log_level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENGINEROOM_LOG_LEVEL", "LOUD"),
        ("ENGINEROOM_DATABASE_URL", "mongodb://x"),
        ("ENGINEROOM_MAX_BODY_BYTES", "abc"),
        ("ENGINEROOM_ENVIRONMENT", "staging"),
        ("ENGINEROOM_REDIS_URL", "http://cache"),
        ("ENGINEROOM_BROKER_URL", "kafka://mq"),
        ("ENGINEROOM_DATABASE_POOL_SIZE", "0"),
    ],
)
def test_wrong_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    assert repr(value) in message


def test_otlp_exporter_needs_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEROOM_TRACING_EXPORTER", "otlp")

    with pytest.raises(SettingsError, match=r"^ENGINEROOM_OTLP_ENDPOINT: required"):
        load_settings()


def test_development_secret_is_generated_once_with_mode_0600(isolated_env: Path) -> None:
    first = load_secret_key(load_settings())
    path = isolated_env / SECRET_KEY_FILENAME

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == first
    assert len(first) >= 32
    assert load_secret_key(load_settings()) == first
    assert load_settings().secret == first


def test_production_refuses_to_start_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    monkeypatch.setenv("ENGINEROOM_ENVIRONMENT", "production")

    with pytest.raises(SettingsError, match=r"^ENGINEROOM_SECRET_KEY: required in production"):
        load_secret_key(load_settings())
    assert not (isolated_env / SECRET_KEY_FILENAME).exists()


def test_production_takes_the_secret_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s" * 40 + "\n", encoding="utf-8")
    monkeypatch.setenv("ENGINEROOM_ENVIRONMENT", "production")
    monkeypatch.setenv("ENGINEROOM_SECRET_KEY_FILE", str(secret_file))

    assert load_settings().secret == "s" * 40


def test_missing_secret_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ENGINEROOM_SECRET_KEY_FILE", str(tmp_path / "absent"))

    with pytest.raises(SettingsError, match=r"^ENGINEROOM_SECRET_KEY_FILE: cannot read"):
        load_secret_key(load_settings())


def test_short_secret_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEROOM_SECRET_KEY", "too-short-secret")

    with pytest.raises(SettingsError) as caught:
        load_secret_key(load_settings())

    assert str(caught.value).startswith("ENGINEROOM_SECRET_KEY: must be at least 32")
    assert "too-short-secret" not in str(caught.value)
