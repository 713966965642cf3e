"""Password hashing (Argon2id) off the event loop, and the password policy.

Hashing costs about 19 MiB and tens of milliseconds of CPU per call, so it runs in a small
thread pool (argon2's C code releases the GIL) whose size bounds how many hashes run at
once; requests beyond that wait in the pool's queue while the event loop keeps serving.
The hashing threads run at a lower scheduling priority than the rest of the process (see
``_yield_to_the_event_loop``), so that a loop with work to do is not queued behind them.
An unknown account still pays for one verification against a dummy hash, so a login
answers in about the same time whether or not the email exists.

The policy follows NIST SP 800-63B: a length range and a block list, no composition
rules. The block list is the 30,000 most common passwords that zxcvbn ships.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from engineroom.identity.config import IdentitySettings

MIN_LENGTH = 8
MAX_LENGTH = 256
HASH_THREAD_NICENESS = 10
"""How much nicer than the event loop the hashing threads run (Linux nice, added)."""
_DUMMY_PASSWORD = "engineroom dummy password for unknown accounts"


def _yield_to_the_event_loop() -> None:
    """Lower the scheduling priority of the calling (hashing) thread.

    With as many hashing threads as cores, a burst of logins keeps every core busy, and
    the event loop thread then waits its turn like any other: every request, a health
    check included, queues behind hashes for tens of milliseconds. A nicer hashing thread
    still gets every cycle the loop does not want (login throughput is unchanged), but
    the loop thread is scheduled first when it has work. Linux sets the nice value per
    thread; elsewhere this is a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        # Relative to the thread's current value: a server started with ``nice`` keeps
        # its hashing threads below its loop too.
        niceness = min(19, os.getpriority(os.PRIO_PROCESS, thread) + HASH_THREAD_NICENESS)
        os.setpriority(os.PRIO_PROCESS, thread, niceness)
    except OSError:
        # A container that forbids it still hashes, only without the priority.
        return


@dataclass(frozen=True)
class Verification:
    valid: bool
    needs_rehash: bool = False


class _Pool:
    """A hasher with fixed parameters and the threads that run it."""

    def __init__(self, config: IdentitySettings) -> None:
        self.hasher = PasswordHasher(
            time_cost=config.password_time_cost,
            memory_cost=config.password_memory_cost,
            parallelism=config.password_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self.executor = ThreadPoolExecutor(
            max_workers=config.password_hash_concurrency,
            thread_name_prefix="argon2",
            initializer=_yield_to_the_event_loop,
        )
        self._dummy: str | None = None
        self._dummy_lock = threading.Lock()

    def dummy_hash(self) -> str:
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = self.hasher.hash(_DUMMY_PASSWORD)
            return self._dummy

    def verify(self, encoded: str, password: str) -> Verification:
        try:
            self.hasher.verify(encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verification(valid=False)
        return Verification(valid=True, needs_rehash=self.hasher.check_needs_rehash(encoded))

    def verify_dummy(self, password: str) -> Verification:
        self.verify(self.dummy_hash(), password)
        return Verification(valid=False)


_POOLS: dict[tuple[int, int, int, int], _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(config: IdentitySettings) -> _Pool:
    key = (
        config.password_memory_cost,
        config.password_time_cost,
        config.password_parallelism,
        config.password_hash_concurrency,
    )
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = _Pool(config)
        return pool


async def hash_password(config: IdentitySettings, password: str) -> str:
    """The Argon2id encoding of ``password`` (computed in the hashing threads)."""
    pool = _pool(config)
    return await asyncio.get_running_loop().run_in_executor(
        pool.executor, pool.hasher.hash, password
    )


async def verify_password(config: IdentitySettings, encoded: str, password: str) -> Verification:
    """Check ``password``; ``needs_rehash`` when ``encoded`` used other parameters."""
    pool = _pool(config)
    return await asyncio.get_running_loop().run_in_executor(
        pool.executor, pool.verify, encoded, password
    )


async def dummy_verify(config: IdentitySettings, password: str) -> Verification:
    """Spend the time of a real verification, for an account that does not exist."""
    pool = _pool(config)
    return await asyncio.get_running_loop().run_in_executor(
        pool.executor, pool.verify_dummy, password
    )


# ---- policy -----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The block list, loaded on first use (the module holding it is large)."""
    lists = importlib.import_module("zxcvbn.frequency_lists").FREQUENCY_LISTS
    return frozenset(str(password) for password in lists["passwords"])


def password_problems(password: str, *, username: str = "", email: str = "") -> list[str]:
    """Why ``password`` is refused (empty list: accepted)."""
    if len(password) < MIN_LENGTH:
        return [f"is too short (minimum is {MIN_LENGTH} characters)"]
    if len(password) > MAX_LENGTH:
        return [f"is too long (maximum is {MAX_LENGTH} characters)"]
    lowered = password.casefold()
    if lowered in common_passwords():
        return ["is too common; choose a less guessable password"]
    if len(set(password)) == 1:
        return ["must not repeat a single character"]
    personal = {username.casefold(), email.casefold(), email.casefold().partition("@")[0]}
    if lowered in personal - {""}:
        return ["must not be your username or email"]
    return []
