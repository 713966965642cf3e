"""Password login throughput against the raw Argon2id rate, and loop responsiveness under it.

What it does:

1. measures the raw Argon2id verify rate of this machine at the production parameters
   (m=19 MiB, t=2, p=1), one thread per core, for half of ``--duration`` before the login
   load and half after it, and compares the logins with the mean of the two (the machine
   may be shared, and its spare capacity drifts);
2. starts ``engineroom serve --modules identity`` (production settings, embedded SQLite or
   ``--database postgresql`` on the local server) on a free loopback port and registers
   one account;
3. runs ``--clients`` concurrent password logins (``POST /api/v1/identity/token``, or the
   RealWorld ``POST /api/users/login`` with ``--endpoint realworld``) for ``--duration``
   seconds, and prints logins/s and the login p50/p99. The load comes from ``wrk`` with a
   Lua script when ``wrk`` is installed (``apt-get install -y wrk``), which leaves the
   cores to the server; otherwise from an httpx client in this process, which takes a
   good share of them. Meanwhile a separate light client requests ``GET /healthz``
   every 20 ms and its p50/p99 are printed (hashing off the event loop, in threads that
   yield to it, keeps the probe fast);
4. compares authenticated ``GET /api/user`` requests/s with unauthenticated ``GET /healthz``
   (same concurrency, ``wrk`` when installed, else an httpx client).

Rates swing with whatever else runs on the machine, so it also prints CPU time per login
(Linux): the server process's (every thread: hashing, event loop, database driver) and the
load generator's, against the CPU time of one raw verify. Their ratio is the share of the
raw rate that logins reach on an otherwise idle machine, and it barely moves under load.
The server's CPU beyond one raw verify (HTTP, limits, queries, tokens, audit, events) is
printed too, with the event loop thread's share of it.

Targets (issue): login throughput within 85% of the raw hash rate on the available cores;
``/healthz`` p99 below 20 ms during the login load; ``GET /api/user`` at least 50% of
``/healthz``. The load generator and (with ``--database postgresql``) the database share
the machine's cores with the server, which lowers every figure on a small machine.

Needs: PostgreSQL on 127.0.0.1:5432 (user ``postgres``, trust) only with
``--database postgresql``; ``wrk`` is used when present and never installed from here.
Run from the repository root:
``.venv/bin/python bench/identity_login.py [--duration 10] [--clients 16] [--database ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
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
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from argon2 import PasswordHasher, Type

PASSWORD = "bench-Correct-Horse-Battery-Staple-42"
EMAIL = "bench@example.com"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
STARTUP_TIMEOUT = 90.0
PROBE_INTERVAL = 0.02
ENDPOINTS = {
    "native": ("/api/v1/identity/token", {"email": EMAIL, "password": PASSWORD}),
    "realworld": ("/api/users/login", {"user": {"email": EMAIL, "password": PASSWORD}}),
}
# wrk calls done() once per run: print what the bench needs on one parseable line
# (latencies in microseconds; non-2xx answers and socket errors counted apart).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%%d duration=%%d status=%%d socket=%%d p50=%%d p99=%%d\\n",
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoginResult:
    logins: int
    logins_per_second: float
    p50: float
    p99: float
    failures: int
    generator: str


@dataclass(frozen=True)
class RawRate:
    per_second: float
    cpu_per_verify: float
    """Seconds of CPU time one verify costs."""


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int


@dataclass(frozen=True)
class CpuPerLogin:
    server: float
    generator: float
    loop: float | None
    """The server's main thread (its event loop)."""


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def raw_hash_rate(duration: float) -> RawRate:
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
    started, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = max(1, sum(counts))
    return RawRate(
        per_second=sum(counts) / (time.perf_counter() - started),
        cpu_per_verify=(time.process_time() - cpu) / done,
    )


def process_cpu(pid: int, thread: int | None = None) -> float | None:
    """Seconds of CPU time (user + system) of a running process, every thread, or only
    ``thread`` of it; Linux."""
    where = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        fields = Path(where).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of the file, 12 and 13 after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
def nullcontext_str() -> Iterator[str | None]:
    yield None


@contextmanager
def server(workdir: Path, database_url: str | None) -> Iterator[Server]:
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
        wait_until_up(process, base_url, workdir)
        yield Server(base_url=base_url, pid=process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def wait_until_up(process: subprocess.Popen[bytes], base_url: str, workdir: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the server did not start; see {workdir / 'server.log'}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)


class HealthProbe:
    """``GET /healthz`` every ``PROBE_INTERVAL`` from a thread of its own, on one
    connection, until stopped: a light client beside the login load."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-probe")

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(PROBE_INTERVAL)


def wrk_logins(
    wrk: str, base_url: str, endpoint: str, clients: int, duration: float
) -> LoginResult:
    path, body = ENDPOINTS[endpoint]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        # A Lua long string holds the JSON as it is.
        script.write(WRK_SCRIPT % {"body": "[[" + json.dumps(body) + "]]"})
    try:
        command = [wrk, "-t2", f"-c{clients}", f"-d{max(1, round(duration))}s"]
        command += ["--timeout", "60s", "-s", script.name, base_url + path]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    found = re.search(r"^BENCH (.*)$", output, re.MULTILINE)
    if found is None:
        sys.exit(f"unexpected wrk output:\n{output}")
    values = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", found.group(1))}
    failures = values["status"] + values["socket"]
    return LoginResult(
        logins=values["requests"] - failures,
        logins_per_second=(values["requests"] - failures) / (values["duration"] / 1e6),
        p50=values["p50"] / 1e6,
        p99=values["p99"] / 1e6,
        failures=failures,
        generator="wrk",
    )


async def httpx_logins(base_url: str, endpoint: str, clients: int, duration: float) -> LoginResult:
    path, body = ENDPOINTS[endpoint]
    latencies: list[float] = []
    failures = 0
    stop = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def user() -> None:
            nonlocal failures
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = await client.post(path, json=body)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return LoginResult(
        logins=len(latencies),
        logins_per_second=len(latencies) / elapsed,
        p50=percentile(latencies, 0.5),
        p99=percentile(latencies, 0.99),
        failures=failures,
        generator="httpx (in the bench process)",
    )


def login_load(
    running: Server, args: argparse.Namespace
) -> tuple[LoginResult, list[float], CpuPerLogin | None]:
    wrk = shutil.which("wrk")
    server_before, generator_before = process_cpu(running.pid), children_cpu()
    # The main thread's id is the process id: that thread runs the event loop.
    loop_before = process_cpu(running.pid, running.pid)
    own_before = time.process_time()
    with HealthProbe(running.base_url) as probe:
        if wrk:
            result = wrk_logins(wrk, running.base_url, args.endpoint, args.clients, args.duration)
        else:
            result = asyncio.run(
                httpx_logins(running.base_url, args.endpoint, args.clients, args.duration)
            )
    server_after, loop_after = process_cpu(running.pid), process_cpu(running.pid, running.pid)
    if server_before is None or server_after is None or not result.logins:
        return result, probe.latencies, None
    # wrk is a child that has exited; the httpx client (and the probe) run in this process.
    generator = children_cpu() - generator_before if wrk else time.process_time() - own_before
    loop = None
    if loop_before is not None and loop_after is not None:
        loop = (loop_after - loop_before) / result.logins
    cpu = CpuPerLogin(
        server=(server_after - server_before) / result.logins,
        generator=generator / result.logins,
        loop=loop,
    )
    return result, probe.latencies, cpu


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


def register(base_url: str) -> str:
    registered = httpx.post(
        f"{base_url}/api/users",
        json={"user": {"username": "bench", "email": EMAIL, "password": PASSWORD}},
        timeout=30,
    )
    registered.raise_for_status()
    token: str = registered.json()["user"]["token"]
    return token


def report(
    args: argparse.Namespace,
    rates: tuple[RawRate, RawRate],
    load: tuple[LoginResult, list[float], CpuPerLogin | None],
    reads: tuple[float, float],
) -> None:
    result, probes, cpu = load
    rate = (rates[0].per_second + rates[1].per_second) / 2
    logins = result.logins_per_second
    print(f"database: {args.database}; {args.clients} concurrent clients, {args.duration:g} s")
    print(f"login load: POST {ENDPOINTS[args.endpoint][0]} from {result.generator}")
    print(
        f"logins: {logins:.1f}/s ({logins / rate:.0%} of the raw hash rate {rate:.1f}/s, "
        f"measured {rates[0].per_second:.1f}/s before and {rates[1].per_second:.1f}/s "
        f"after), p50 {ms(result.p50)}, p99 {ms(result.p99)}, failures {result.failures}"
    )
    if cpu is not None:
        verify = (rates[0].cpu_per_verify + rates[1].cpu_per_verify) / 2
        total = cpu.server + cpu.generator
        print(
            f"CPU per login: server {ms(cpu.server)}, load generator {ms(cpu.generator)}; "
            f"one raw verify {ms(verify)}: on an idle machine logins would reach about "
            f"{verify / total:.0%} of the raw rate ({verify / cpu.server:.0%} with a load "
            "generator elsewhere)"
        )
        loop = f" (event loop thread {ms(cpu.loop)})" if cpu.loop is not None else ""
        print(f"server CPU per login beyond one raw verify: {ms(cpu.server - verify)}{loop}")
    print(
        f"GET /healthz during the login load: p50 {ms(percentile(probes, 0.5))}, "
        f"p99 {ms(percentile(probes, 0.99))} over {len(probes)} probes"
    )
    user_rate, health_rate = reads
    print(
        f"GET /api/user (authenticated): {user_rate:.0f} req/s; GET /healthz: "
        f"{health_rate:.0f} req/s ({user_rate / health_rate:.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--endpoint", choices=tuple(ENDPOINTS), default="native")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: the load comes from httpx (install wrk: apt-get install -y wrk)")

    before = raw_hash_rate(args.duration / 2)
    print(
        f"raw Argon2id verify (m=19456 KiB, t=2, p=1), {os.cpu_count() or 1} threads: "
        f"{before.per_second:.1f}/s"
    )
    with tempfile.TemporaryDirectory(prefix="engineroom-bench-") as directory:
        workdir = Path(directory)
        with (
            postgres_database() if args.database == "postgresql" else nullcontext_str() as url,
            server(workdir, url) as running,
        ):
            token = register(running.base_url)
            load = login_load(running, args)
            after = raw_hash_rate(args.duration / 2)
            reads = read_rates(running.base_url, token, args.duration, args.clients)
    report(args, (before, after), load, reads)


if __name__ == "__main__":
    main()
