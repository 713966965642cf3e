"""Shared fixtures: settings on a temporary data dir, and real-service databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engineroom.settings import Settings
from tests.support import services
from tests.support.settings import settings_on


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-topology settings isolated in a temporary data dir."""
    return settings_on(None, tmp_path, outbox_poll_interval=0.05)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    if not services.port_open(services.POSTGRES_HOST, services.POSTGRES_PORT):
        services.unavailable("PostgreSQL", f"{services.POSTGRES_HOST}:{services.POSTGRES_PORT}")
    name = f"engineroom_test_{services.random_suffix()}"
    async with services.postgres_admin() as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            f"postgresql+asyncpg://{services.POSTGRES_USER}@{services.POSTGRES_HOST}:"
            f"{services.POSTGRES_PORT}/{name}"
        )
    finally:
        async with services.postgres_admin() as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def mariadb_url() -> AsyncIterator[str]:
    """A fresh MariaDB database for this test, dropped afterwards."""
    import asyncmy

    if not services.port_open(services.MARIADB_HOST, services.MARIADB_PORT):
        services.unavailable("MariaDB", f"{services.MARIADB_HOST}:{services.MARIADB_PORT}")
    name = f"engineroom_test_{services.random_suffix()}"

    async def admin(statement: str) -> None:
        connection = await asyncmy.connect(
            host=services.MARIADB_HOST,
            port=services.MARIADB_PORT,
            user=services.MARIADB_USER,
            password="",
            connect_timeout=10,
        )
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(statement)
        finally:
            connection.close()

    await admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        yield (
            f"mysql+asyncmy://{services.MARIADB_USER}@{services.MARIADB_HOST}:"
            f"{services.MARIADB_PORT}/{name}?charset=utf8mb4"
        )
    finally:
        await admin(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
async def redis_url() -> str:
    """The Redis server; the test must namespace its keys (see ``redis_prefix``)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(services.REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:  # any connection failure means the same thing here
        await client.aclose()
        services.unavailable("Redis", str(exc))
    await client.aclose()
    return services.REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    return f"engineroom-test-{services.random_suffix()}:"


@pytest.fixture
async def rabbitmq_url() -> str:
    import aio_pika

    try:
        connection = await aio_pika.connect(services.RABBITMQ_URL, timeout=5)
    except Exception as exc:
        services.unavailable("RabbitMQ", str(exc))
    await connection.close()
    return services.RABBITMQ_URL
