"""A password login reads the account before hashing and confirms it in its transaction.

The statement that records the successful ``login`` also checks that the account is as
the check read it; when something changed during the hash, the login is refused and
nothing of it is written (no tokens, no success entry, no event).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from engineroom.core.clock import utcnow
from engineroom.core.events.models import OutboxEvent
from engineroom.identity import audit, passwords
from engineroom.identity.config import IdentitySettings, configure
from engineroom.identity.models import AuditEvent, RefreshToken, User
from engineroom.settings import Settings
from tests.support.identity import (
    PASSWORD,
    IdentityApp,
    fast_identity_settings,
    identity_app,
    login,
    register,
)

TOKEN = "/api/v1/identity/token"
REALWORLD_LOGIN = "/api/users/login"

Change = Callable[[IdentityApp, uuid.UUID], Awaitable[None]]


async def _set(env: IdentityApp, user_id: uuid.UUID, **values: Any) -> None:
    async with env.platform.database.unit_of_work() as session:
        await session.execute(update(User).where(User.id == user_id).values(**values))


async def new_password(env: IdentityApp, user_id: uuid.UUID) -> None:
    await _set(env, user_id, password_changed_at=utcnow())


async def disabled(env: IdentityApp, user_id: uuid.UUID) -> None:
    await _set(env, user_id, disabled_at=utcnow())


async def mfa_turned_on(env: IdentityApp, user_id: uuid.UUID) -> None:
    await _set(env, user_id, mfa_enabled=True)


async def deleted(env: IdentityApp, user_id: uuid.UUID) -> None:
    async with env.platform.database.unit_of_work() as session:
        await session.execute(delete(User).where(User.id == user_id))


def change_during_the_check(
    env: IdentityApp, user_id: uuid.UUID, change: Change, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = passwords.verify_password

    async def changed_meanwhile(
        config: IdentitySettings, encoded: str, password: str
    ) -> passwords.Verification:
        # Another request commits its change while this one hashes.
        await change(env, user_id)
        return await original(config, encoded, password)

    monkeypatch.setattr(passwords, "verify_password", changed_meanwhile)


async def _count(env: IdentityApp, model: Any, *conditions: Any) -> int:
    async with env.platform.database.read_only() as session:
        found = await session.scalar(select(func.count()).select_from(model).where(*conditions))
    return int(found or 0)


async def written_by_logins(env: IdentityApp) -> tuple[int, int, int]:
    """Refresh tokens, successful ``login`` entries and ``logged_in`` events."""
    return (
        await _count(env, RefreshToken),
        await _count(
            env, AuditEvent, AuditEvent.action == "login", AuditEvent.outcome == "success"
        ),
        await _count(env, OutboxEvent, OutboxEvent.type == "identity.user.logged_in"),
    )


@pytest.mark.parametrize("change", [new_password, disabled, mfa_turned_on, deleted])
@pytest.mark.parametrize("route", ["native", "realworld"])
async def test_an_account_changed_during_the_check_is_refused_and_nothing_is_written(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, change: Change, route: str
) -> None:
    async with identity_app(settings) as env:
        user_id = uuid.UUID((await register(env.client, "alice"))["id"])
        change_during_the_check(env, user_id, change, monkeypatch)
        if route == "native":
            response = await env.client.post(
                TOKEN, json={"email": "alice@example.com", "password": PASSWORD}
            )
        else:
            response = await env.client.post(
                REALWORLD_LOGIN,
                json={"user": {"email": "alice@example.com", "password": PASSWORD}},
            )
        await audit.flush(env.platform)
        assert response.status_code == 401, response.text
        assert await written_by_logins(env) == (0, 0, 0)
        failures = await _count(
            env, AuditEvent, AuditEvent.action == "login", AuditEvent.outcome == "failure"
        )
        assert failures == 1


async def test_a_login_writes_its_entry_token_and_event(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        assert await written_by_logins(env) == (0, 0, 0)
        await login(env.client)
        assert await written_by_logins(env) == (1, 1, 1)
        response = await env.client.post(
            REALWORLD_LOGIN, json={"user": {"email": "alice@example.com", "password": PASSWORD}}
        )
        assert response.status_code == 200, response.text
        # RealWorld logins get no refresh token.
        assert await written_by_logins(env) == (1, 2, 2)


async def test_a_rehash_does_not_overwrite_a_password_set_during_the_check(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with identity_app(settings) as env:
        user_id = uuid.UUID((await register(env.client, "alice"))["id"])
        # The hash on file now uses other parameters: a right password rehashes it.
        configure(settings, fast_identity_settings(password_memory_cost=9216))
        replacement = await passwords.hash_password(
            fast_identity_settings(), "a brand new passphrase"
        )

        async def set_a_new_password(env: IdentityApp, user_id: uuid.UUID) -> None:
            await _set(env, user_id, password_hash=replacement, password_changed_at=utcnow())

        change_during_the_check(env, user_id, set_a_new_password, monkeypatch)
        response = await env.client.post(
            TOKEN, json={"email": "alice@example.com", "password": PASSWORD}
        )
        async with env.platform.database.read_only() as session:
            stored = await session.scalar(select(User.password_hash))
        assert response.status_code == 401, response.text
        assert stored == replacement
