"""Real servers on loopback for integration tests.

Each test run creates its own database (or key prefix, vhost-free queue names) with a
random suffix and removes it afterwards. Under ``CI=true`` an unreachable server fails the
test; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

POSTGRES_HOST = os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("TEST_POSTGRES_USER", "postgres")
MARIADB_HOST = os.environ.get("TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("TEST_MARIADB_PORT", "3306"))
MARIADB_USER = os.environ.get("TEST_MARIADB_USER", "root")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(service: str, reason: str) -> None:
    """Fail under CI, skip elsewhere: a service test never silently passes."""
    message = f"{service} is unreachable: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: integration tests are mandatory)")
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def random_suffix() -> str:
    return secrets.token_hex(4)


@asynccontextmanager
async def postgres_admin() -> AsyncIterator[Any]:
    """A connection to the server's ``postgres`` database (to create and drop others)."""
    import asyncpg

    connection = await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, database="postgres", timeout=10
    )
    try:
        yield connection
    finally:
        await connection.close()
