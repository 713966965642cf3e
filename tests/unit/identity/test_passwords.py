"""Password hashing (parameters, threads, rehash) and the password policy."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from engineroom.identity import passwords
from engineroom.identity.config import IdentitySettings, configure
from engineroom.identity.models import User
from engineroom.settings import Settings
from tests.support.identity import PASSWORD, fast_identity_settings, identity_app, login, register


def test_defaults_are_the_owasp_argon2id_parameters() -> None:
    config = IdentitySettings(_env_file=None)  # type: ignore[call-arg]
    assert (config.password_memory_cost, config.password_time_cost) == (19456, 2)
    assert config.password_parallelism == 1


async def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    config = IdentitySettings(_env_file=None)  # type: ignore[call-arg]
    encoded = await passwords.hash_password(config, PASSWORD)
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (await passwords.verify_password(config, encoded, PASSWORD)).valid
    assert not (await passwords.verify_password(config, encoded, PASSWORD + "x")).valid
    assert not (await passwords.verify_password(config, "not a hash", PASSWORD)).valid


async def test_hashing_runs_in_worker_threads_with_bounded_concurrency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = fast_identity_settings(password_hash_concurrency=2, password_memory_cost=8200)
    loop_thread = threading.get_ident()
    running = 0
    peak = 0
    threads: set[int] = set()
    lock = threading.Lock()
    original = PasswordHasher.hash

    def observed(self: PasswordHasher, password: str | bytes, **kwargs: object) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            threads.add(threading.get_ident())
        time.sleep(0.05)  # long enough for the others to pile up
        try:
            return original(self, password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(PasswordHasher, "hash", observed)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(passwords.hash_password(config, f"pw {i}") for i in range(6)))
    finally:
        task.cancel()
    assert loop_thread not in threads
    assert peak == 2
    assert ticks > 6  # the loop kept running while the hashes did


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
async def test_hashing_threads_run_nicer_than_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Parameters of its own, so this test gets fresh threads.
    config = fast_identity_settings(password_hash_concurrency=1, password_memory_cost=8300)
    seen: list[int] = []
    original = PasswordHasher.hash

    def observed(self: PasswordHasher, password: str | bytes, **kwargs: object) -> str:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return original(self, password)

    monkeypatch.setattr(PasswordHasher, "hash", observed)
    await passwords.hash_password(config, PASSWORD)
    loop_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    expected = min(19, loop_niceness + passwords.HASH_THREAD_NICENESS)
    assert seen == [expected]
    assert expected > loop_niceness


async def test_login_rehashes_when_the_parameters_change(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        configure(settings, fast_identity_settings(password_memory_cost=9216, password_time_cost=2))
        await login(env.client)
        async with env.platform.database.read_only() as session:
            stored = (await session.scalars(select(User.password_hash))).one()
        # The new hash still verifies: the next login works.
        await login(env.client)
    assert stored.startswith("$argon2id$v=19$m=9216,t=2,p=1$")


async def test_failed_login_does_not_rehash(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        async with env.platform.database.read_only() as session:
            before = (await session.scalars(select(User.password_hash))).one()
        configure(settings, fast_identity_settings(password_memory_cost=9216))
        response = await env.client.post(
            "/api/v1/identity/token", json={"email": "alice@example.com", "password": "nope nope"}
        )
        async with env.platform.database.read_only() as session:
            after = (await session.scalars(select(User.password_hash))).one()
    assert response.status_code == 401
    assert after == before


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("1234567", "is too short (minimum is 8 characters)"),
        ("x" * 257, "is too long (maximum is 256 characters)"),
        ("password", "is too common; choose a less guessable password"),
        ("PASSWORD", "is too common; choose a less guessable password"),
        ("iloveyou", "is too common; choose a less guessable password"),
        ("trustno1", "is too common; choose a less guessable password"),
        ("aaaaaaaaaaaa", "must not repeat a single character"),
        ("alice_the_great", "must not be your username or email"),
        ("Alice@Example.com", "must not be your username or email"),
        ("alice", "is too short (minimum is 8 characters)"),
    ],
)
def test_policy_refusals(password: str, problem: str) -> None:
    found = passwords.password_problems(
        password, username="alice_the_great", email="alice@example.com"
    )
    assert found == [problem]


@pytest.mark.parametrize(
    "password",
    [
        "8 chars!",
        "x" * 255 + "y",
        "correct horse battery staple",
        "пароль-надежный-42",
        "🔑🔑🔑🔑🔑🔑🔑🔑x",
    ],
)
def test_policy_accepts(password: str) -> None:
    assert passwords.password_problems(password, username="alice", email="a@example.com") == []


def test_the_block_list_is_the_shipped_one() -> None:
    common = passwords.common_passwords()
    assert len(common) >= 29000
    assert {"123456", "password", "qwerty", "letmein"} <= common
