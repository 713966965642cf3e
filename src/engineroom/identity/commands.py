"""``engineroom identity ...``: signing key rotation and the first admin.

A refusal is one line on stderr (``error: ...``) and exit code 2, like the kernel's
commands. Passwords are read from stdin (one line) or prompted for, never from argv,
where every user of the machine could read them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from engineroom.core.db import Database
from engineroom.core.errors import AppError
from engineroom.identity import accounts, keys, rbac
from engineroom.identity.config import identity_settings
from engineroom.settings import Settings, SettingsError, load_settings

EXIT_REFUSED = 2

commands = typer.Typer(
    help="Identity: signing keys and administrators.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class CommandRefused(Exception):
    pass


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except (CommandRefused, SettingsError) as exc:
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    except AppError as exc:
        details = "; ".join(
            f"{name} {message}"
            for name, messages in exc.field_errors.items()
            for message in messages
        )
        typer.echo(f"error: {details or exc.message}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    except (SQLAlchemyError, OSError) as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        typer.echo(f"error: database: {first} (is it migrated? run `engineroom migrate`)", err=True)
        raise typer.Exit(EXIT_REFUSED) from None


async def rotate_keys(settings: Settings) -> tuple[str, int]:
    """Rotate; return the new ``kid`` and how many retired keys still verify."""
    database = Database(settings)
    try:
        async with database.unit_of_work() as session:
            kid = (await keys.rotate(session, settings)).kid
            verifying = await keys.verifying_rows(session)
        return kid, len(verifying) - 1
    finally:
        await database.dispose()


@commands.command("rotate-keys")
def rotate_keys_command() -> None:
    """Make a new signing key; old keys keep verifying until their tokens expire."""
    with _refusals():
        settings = load_settings()
        kid, retired = asyncio.run(rotate_keys(settings))
        config = identity_settings(settings)
        keep = config.longest_access_ttl + keys.EXPIRY_MARGIN
    typer.echo(
        f"new signing key {kid}; {retired} older key(s) verify for {keep} more "
        f"(running servers switch within {config.signing_key_cache_seconds:g} s)"
    )


def read_password(*, prompt: bool) -> str:
    if prompt:
        value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return value
    line = sys.stdin.readline()
    if not line:
        raise CommandRefused("no password on stdin")
    return line.rstrip("\r\n")


async def create_admin(settings: Settings, *, email: str, username: str, password: str) -> str:
    """Register an account and give it the ``admin`` role; return its id."""
    database = Database(settings)
    try:
        async with database.unit_of_work() as session:
            user = await accounts.register(
                session,
                identity_settings(settings),
                email=email,
                username=username,
                password=password,
            )
            await rbac.assign_role(session, user.id, rbac.ADMIN_ROLE)
            return str(user.id)
    finally:
        await database.dispose()


@commands.command("create-admin")
def create_admin_command(
    email: Annotated[str, typer.Option("--email", help="The administrator's email.")],
    username: Annotated[str, typer.Option("--username", help="The administrator's username.")],
) -> None:
    """Create an administrator. The password comes from stdin, or a prompt on a terminal."""
    with _refusals():
        settings = load_settings()
        password = read_password(prompt=sys.stdin.isatty())
        user_id = asyncio.run(
            create_admin(settings, email=email, username=username, password=password)
        )
    typer.echo(f"created administrator {username} ({user_id})")
