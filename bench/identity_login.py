"""Password login throughput against the raw Argon2id rate, and loop responsiveness under it.

What it does:

1. measures the raw Argon2id verify rate of this machine at the production parameters
   (m=19 MiB, t=2, p=1), one thread per core, for ``--duration`` seconds;
2. starts ``engineroom serve --modules identity`` (production settings, embedded SQLite or
   ``--database postgresql`` on the local server) on a free loopback port and registers
   one account;
3. runs ``--clients`` concurrent password logins (``POST /api/v1/identity/token``) for
   ``--duration`` seconds while a probe requests ``GET /healthz`` every 20 ms, and prints
   logins/s, login p50/p99 and the probe's p50/p99 (hashing off the event loop keeps the
   probe fast);
4. compares authenticated ``GET /api/user`` requests/s with unauthenticated ``GET /healthz``
   (same concurrency, ``wrk`` when installed, else an httpx client).

Targets (issue): login throughput within 85% of the raw hash rate on the available cores;
``/healthz`` p99 below 20 ms during the login load; ``GET /api/user`` at least 50% of
``/healthz``. The load generator shares the machine's cores with the server, which lowers
every figure on a small machine.

Needs: PostgreSQL on 127.0.0.1:5432 (user ``postgres``, trust) only with
``--database postgresql``. Run from the repository root:
``.venv/bin/python bench/identity_login.py [--duration 10] [--clients 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
from argon2 import PasswordHasher, Type

PASSWORD = "bench-Correct-Horse-Battery-Staple-42"
EMAIL = "bench@example.com"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
STARTUP_TIMEOUT = 90.0
PROBE_INTERVAL = 0.02


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def raw_hash_rate(duration: float) -> tuple[float, int]:
    """Argon2id verifies per second over every core, at the production parameters."""
    hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)
    encoded = hasher.hash(PASSWORD)
    cores = os.cpu_count() or 1
    counts = [0] * cores
    deadline = time.perf_counter() + duration

    def work(slot: int) -> None:
        while time.perf_counter() < deadline:
            hasher.verify(encoded, PASSWORD)
            counts[slot] += 1

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(cores)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started), cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"engineroom_bench_{secrets.token_hex(4)}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=10
        )
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def server(workdir: Path, database_url: str | None) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINEROOM_")}
    env.update(
        ENGINEROOM_ENVIRONMENT="production",
        ENGINEROOM_SECRET_KEY=secrets.token_urlsafe(48),
        ENGINEROOM_DATA_DIR=str(workdir / "data"),
        ENGINEROOM_MODULES="identity",
        ENGINEROOM_LOG_LEVEL="WARNING",
        ENGINEROOM_ALLOWED_HOSTS="127.0.0.1",
    )
    if database_url:
        env["ENGINEROOM_DATABASE_URL"] = database_url
        subprocess.run(
            [sys.executable, "-m", "engineroom", "migrate"], env=env, check=True, cwd=workdir
        )
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "engineroom", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the server did not start; see {workdir / 'server.log'}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


async def login_load(base_url: str, clients: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    probes: list[float] = []
    failures = 0
    stop = time.perf_counter() + duration
    body = {"email": EMAIL, "password": PASSWORD}
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def user() -> None:
            nonlocal failures
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = await client.post("/api/v1/identity/token", json=body)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    failures += 1

        async def probe() -> None:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                await client.get("/healthz")
                probes.append(time.perf_counter() - started)
                await asyncio.sleep(PROBE_INTERVAL)

        started = time.perf_counter()
        await asyncio.gather(probe(), *(user() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "logins_per_second": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "failures": failures,
        "probe_p50": percentile(probes, 0.5),
        "probe_p99": percentile(probes, 0.99),
        "probes": len(probes),
    }


def wrk_rate(wrk: str, url: str, duration: float, clients: int, token: str | None) -> float:
    command = [wrk, "-t2", f"-c{clients}", f"-d{max(1, int(duration))}s", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Token {token}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    return float(match.group(1)) if match else float("nan")


async def httpx_rate(
    base_url: str, path: str, duration: float, clients: int, token: str | None
) -> float:
    headers = {"Authorization": f"Token {token}"} if token else {}
    done = 0
    stop = time.perf_counter() + duration
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                response = await client.get(path)
                if response.status_code == 200:
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return done / (time.perf_counter() - started)


def read_rates(base_url: str, token: str, duration: float, clients: int) -> tuple[float, float]:
    wrk = shutil.which("wrk")
    if wrk:
        return (
            wrk_rate(wrk, f"{base_url}/api/user", duration, clients, token),
            wrk_rate(wrk, f"{base_url}/healthz", duration, clients, None),
        )
    return (
        asyncio.run(httpx_rate(base_url, "/api/user", duration, clients, token)),
        asyncio.run(httpx_rate(base_url, "/healthz", duration, clients, None)),
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()

    rate, cores = raw_hash_rate(args.duration)
    print(f"raw Argon2id verify (m=19456 KiB, t=2, p=1), {cores} threads: {rate:.1f}/s")
    with tempfile.TemporaryDirectory(prefix="engineroom-bench-") as directory:
        workdir = Path(directory)
        with (
            postgres_database() if args.database == "postgresql" else nullcontext_str() as url,
            server(workdir, url) as base_url,
        ):
            registered = httpx.post(
                f"{base_url}/api/users",
                json={"user": {"username": "bench", "email": EMAIL, "password": PASSWORD}},
                timeout=30,
            )
            registered.raise_for_status()
            token = registered.json()["user"]["token"]
            result = asyncio.run(login_load(base_url, args.clients, args.duration))
            user_rate, health_rate = read_rates(base_url, token, args.duration, args.clients)

    logins = result["logins_per_second"]
    print(f"database: {args.database}; {args.clients} concurrent clients, {args.duration:g} s")
    print(
        f"logins: {logins:.1f}/s ({logins / rate:.0%} of the raw hash rate), "
        f"p50 {ms(result['p50'])}, p99 {ms(result['p99'])}, failures {result['failures']:.0f}"
    )
    print(
        f"GET /healthz during the login load: p50 {ms(result['probe_p50'])}, "
        f"p99 {ms(result['probe_p99'])} over {result['probes']:.0f} probes"
    )
    print(
        f"GET /api/user (authenticated): {user_rate:.0f} req/s; GET /healthz: "
        f"{health_rate:.0f} req/s ({user_rate / health_rate:.0%})"
    )


@contextmanager
def nullcontext_str() -> Iterator[str | None]:
    yield None


if __name__ == "__main__":
    main()
