"""``engineroom identity rotate-keys`` and ``create-admin``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from engineroom.catalog import load_modules
from engineroom.cli import cli
from engineroom.core.db import Database
from engineroom.core.migrations.runner import upgrade
from engineroom.identity import repository
from engineroom.identity.models import SigningKey
from engineroom.settings import load_settings
from tests.support.identity import PASSWORD

runner = CliRunner()


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("ENGINEROOM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENGINEROOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENGINEROOM_ENVIRONMENT", "test")
    monkeypatch.setenv("ENGINEROOM_IDENTITY_PASSWORD_MEMORY_COST", "8192")
    monkeypatch.setenv("ENGINEROOM_IDENTITY_PASSWORD_TIME_COST", "1")
    return tmp_path


async def _migrate() -> None:
    await upgrade(load_settings(), load_modules(["identity"]))


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args), input=stdin, prog_name="engineroom")
    return result.exit_code, result.stdout, result.stderr


async def test_identity_commands_are_mounted() -> None:
    code, out, _ = await asyncio.to_thread(invoke, "identity", "--help")
    assert code == 0
    assert "rotate-keys" in out
    assert "create-admin" in out


async def test_create_admin_reads_the_password_from_stdin() -> None:
    await _migrate()
    code, out, err = await asyncio.to_thread(
        invoke,
        "identity",
        "create-admin",
        "--email",
        "Root@Example.com",
        "--username",
        "root",
        stdin=PASSWORD + "\n",
    )
    assert code == 0, err
    assert out.startswith("created administrator root (")
    database = Database(load_settings())
    try:
        async with database.read_only() as session:
            user = await repository.user_by_email(session, "root@example.com")
            assert user is not None
            roles, permissions = await repository.roles_and_permissions(session, user.id)
    finally:
        await database.dispose()
    assert roles == {"admin", "member"}
    assert permissions == {"*"}


async def test_create_admin_refusals() -> None:
    await _migrate()
    base = ("identity", "create-admin", "--email", "root@example.com", "--username", "root")
    argv_password = await asyncio.to_thread(invoke, *base, "--password", PASSWORD)
    empty = await asyncio.to_thread(invoke, *base, stdin="")
    weak = await asyncio.to_thread(invoke, *base, stdin="password\n")
    ok = await asyncio.to_thread(invoke, *base, stdin=PASSWORD + "\n")
    twice = await asyncio.to_thread(invoke, *base, stdin=PASSWORD + "\n")
    assert argv_password[0] == 2
    assert "No such option" in argv_password[2]
    assert empty[0] == 2
    assert empty[2].strip() == "error: no password on stdin"
    assert weak[0] == 2
    assert weak[2].strip() == "error: password is too common; choose a less guessable password"
    assert ok[0] == 0
    assert twice[0] == 2
    assert twice[2].strip() == "error: email has already been taken"


async def test_create_admin_on_an_unmigrated_database_is_one_line() -> None:
    code, _, err = await asyncio.to_thread(
        invoke,
        "identity",
        "create-admin",
        "--email",
        "a@example.com",
        "--username",
        "root",
        stdin=PASSWORD + "\n",
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: database: ")
    assert "engineroom migrate" in err


async def test_rotate_keys() -> None:
    await _migrate()
    first = await asyncio.to_thread(invoke, "identity", "rotate-keys")
    second = await asyncio.to_thread(invoke, "identity", "rotate-keys")
    assert first[0] == 0, first[2]
    assert "0 older key(s)" in first[1]
    assert "1 older key(s) verify for 1 day, 0:05:00 more" in second[1]
    database = Database(load_settings())
    try:
        async with database.read_only() as session:
            rows = list(await session.scalars(select(SigningKey).order_by(SigningKey.created_at)))
            state = [(row.kid, row.retired_at is None, row.expires_at is None) for row in rows]
    finally:
        await database.dispose()
    assert [signing for _, signing, _ in state] == [False, True]
    assert state[1][0] in second[1]
