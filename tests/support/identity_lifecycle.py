"""Support for the account lifecycle, protection, audit and GraphQL tests.

``lifecycle_app`` starts the identity app with its background machinery (the jobs that
mail links run in process and write ``.eml`` files under ``<data dir>/mail``), a public
URL for the links, cheap password hashing, and identity settings the test chooses.
``client_at(env, ip)`` gives a client whose requests come from another address;
``identity_settings(...)`` builds such settings (cheap hashing, the given overrides).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select

from engineroom.app import create_app
from engineroom.core.cache import create_cache
from engineroom.core.migrations.runner import upgrade
from engineroom.core.platform import Platform
from engineroom.core.ratelimit import RateLimiter
from engineroom.identity import audit, rbac
from engineroom.identity import module as identity_module
from engineroom.identity.config import IdentitySettings, configure
from engineroom.identity.models import AuditEvent
from engineroom.identity.schemas_lifecycle import AuditEventRead
from engineroom.identity.session_store import (
    RedisSessionStore,
    close_session_store,
    use_session_store,
)
from engineroom.settings import Settings
from tests.support.identity import PASSWORD, bearer, fast_identity_settings, login, register

PUBLIC_URL = "http://test"
MAIL_WAIT = 15.0
POLL_INTERVAL = 0.05
_TOKEN_LINE = re.compile(r"^\s+([A-Za-z0-9_-]{40,})\s*$", re.MULTILINE)

__all__ = ["PASSWORD", "bearer", "login", "register"]


def identity_settings(**overrides: Any) -> IdentitySettings:
    """Identity settings with cheap hashing and ``overrides`` (limits, link lifetimes)."""
    return fast_identity_settings(**overrides)


@dataclass
class LifecycleApp:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def platform(self) -> Platform:
        platform: Platform = self.app.state.platform
        return platform


@asynccontextmanager
async def lifecycle_app(
    settings: Settings,
    *,
    identity: IdentitySettings | None = None,
    database_url: str | None = None,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    public_url: str | None = PUBLIC_URL,
) -> AsyncIterator[LifecycleApp]:
    """The migrated identity app, started with jobs and relay, and a client for it.

    With ``redis_url``, rate limits, the cache and sessions live in Redis, under
    ``redis_prefix`` (the test's own namespace, deleted afterwards).
    """
    updates: dict[str, Any] = {"public_url": public_url}
    if database_url is not None:
        updates["database_url"] = database_url
    if redis_url is not None:
        updates["redis_url"] = redis_url
    settings = settings.model_copy(update=updates)
    configure(settings, identity or fast_identity_settings())
    await upgrade(settings, [identity_module])
    app = create_app(settings, modules=[identity_module], run_background=True)
    async with LifespanManager(app):
        if redis_url is not None and redis_prefix is not None:
            await _namespace_redis(app.state.platform, redis_url, redis_prefix)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
            env = LifecycleApp(app=app, client=client, settings=settings)
            try:
                yield env
            finally:
                for other in env.clients:
                    await other.aclose()
                await audit.flush(env.platform)


async def _namespace_redis(platform: Platform, redis_url: str, prefix: str) -> None:
    """Move the platform's Redis-backed limits, cache and sessions under ``prefix``."""
    await platform.rate_limiter.close()
    platform.rate_limiter = RateLimiter(platform.settings, key_prefix=prefix.rstrip(":"))
    await platform.cache.close()
    platform.cache = create_cache(platform.settings, key_prefix=prefix)
    await close_session_store(platform)
    use_session_store(platform, RedisSessionStore.from_url(redis_url, key_prefix=prefix))


async def clear_redis(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def client_at(env: LifecycleApp, ip: str) -> httpx.AsyncClient:
    """A client of the same app whose requests come from ``ip``."""
    transport = httpx.ASGITransport(app=env.app, client=(ip, 40000))
    client = httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL)
    env.clients.append(client)
    return client


def _mail_files(settings: Settings) -> list[Path]:
    directory = settings.mail_dir
    if not directory.exists():
        return []
    return sorted(directory.glob("*.eml"))


def read_mail(path: Path) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


async def wait_for_mails(env: LifecycleApp, count: int) -> list[EmailMessage]:
    """The first ``count`` mails written (oldest first), waiting for the jobs."""
    await _poll(lambda: len(_mail_files(env.settings)) >= count, f"{count} mails")
    return [read_mail(path) for path in _mail_files(env.settings)[:count]]


async def _poll(done: Callable[[], bool], what: str) -> None:
    for _ in range(int(MAIL_WAIT / POLL_INTERVAL)):
        if done():
            return
        await asyncio.sleep(POLL_INTERVAL)
    raise TimeoutError(f"waited {MAIL_WAIT} s for {what}")


async def settle(env: LifecycleApp) -> None:
    """Let queued jobs (and the mails they queue) and pending audit writes finish."""
    await _poll(lambda: env.platform.jobs.queue_depth() == 0, "the jobs")
    await audit.flush(env.platform)


def mail_count(env: LifecycleApp) -> int:
    return len(_mail_files(env.settings))


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def token_in(message: EmailMessage) -> str:
    found = _TOKEN_LINE.findall(body_of(message))
    assert found, body_of(message)
    token: str = found[-1]
    return token


async def user_with_tokens(
    env: LifecycleApp, username: str, client: httpx.AsyncClient | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register ``username`` and log in; returns (user, tokens)."""
    client = client or env.client
    user = await register(client, username)
    tokens = await login(client, email=f"{username}@example.com")
    return user, tokens


async def grant_role(env: LifecycleApp, user_id: str, role: str) -> None:
    async with env.platform.database.unit_of_work() as session:
        await rbac.assign_role(session, uuid.UUID(user_id), role)


async def staff(env: LifecycleApp, username: str, role: str) -> dict[str, str]:
    """A user with ``role``, logged in after the grant; returns bearer headers."""
    user = await register(env.client, username)
    await grant_role(env, user["id"], role)
    tokens = await login(env.client, email=f"{username}@example.com")
    return bearer(tokens["access_token"])


async def audit_entries(
    env: LifecycleApp, action: str | None = None, user_id: str | None = None
) -> list[AuditEventRead]:
    """The audit log (oldest first), once pending writes are done."""
    await audit.flush(env.platform)
    async with env.platform.database.read_only() as session:
        query = select(AuditEvent)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        if user_id is not None:
            query = query.where(AuditEvent.user_id == uuid.UUID(user_id))
        rows = await session.scalars(query.order_by(AuditEvent.occurred_at, AuditEvent.id))
        return [AuditEventRead.of(row) for row in rows]
