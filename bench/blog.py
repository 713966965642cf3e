"""Blog read throughput: the four RealWorld endpoints under wrk, on PostgreSQL and SQLite.

What it does, for each database (``--databases postgresql,sqlite``):

1. starts ``engineroom serve`` (all modules, production settings, log level WARNING) on a
   free loopback port, against a fresh PostgreSQL database (created on the local server
   and dropped at the end) or a fresh embedded SQLite file;
2. seeds through the API: registers one user, then creates 500 articles with 3 tags each
   and 1 KB bodies;
3. runs ``wrk -t2 -c64 -d15s --latency`` on ``GET /api/articles?limit=20``,
   ``GET /api/articles/{slug}``, ``GET /api/tags`` and an authenticated ``GET /api/user``
   (after a short warm-up), and prints requests/s and the p50/p99 latencies; then
   ``GET /healthz`` as a reference: what the platform serves with no work at all, on
   this machine under its current load.

``--workers 1,2`` repeats the whole run with ``engineroom serve --workers 2`` (the
scaled-out topology: the read cache, rate limits and token state in Redis, shared by the
worker processes) and prints the figures side by side. Several workers need a server
database, so SQLite is measured with one worker only. The servers use the Redis database
of ``--redis-url`` (default ``BENCH_REDIS_URL`` or database 12 on 127.0.0.1:6379), whose
``engineroom:`` keys are removed before each run.

Needs: ``wrk`` (installed with apt-get when missing and running as root), PostgreSQL on
127.0.0.1:5432 (user ``postgres``, trust) for the PostgreSQL run, Redis for several workers.

Run from the repository root: ``.venv/bin/python bench/blog.py [--duration 15] [--workers 1,2]``.
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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import redis

ARTICLES = 500
TAGS_PER_ARTICLE = 3
TAG_POOL = [f"tag{index:02d}" for index in range(30)]
BODY_BYTES = 1024
PASSWORD = "bench-Correct-Horse-Battery-Staple-42"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
STARTUP_TIMEOUT = 90.0
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
# The platform's default cache key prefix (``engineroom.core.cache.KEY_PREFIX``).
REDIS_KEYS = "engineroom:*"


@dataclass
class Result:
    name: str
    requests_per_second: float
    p50: str
    p99: str
    errors: str


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("wrk is missing: install it (apt-get install wrk) and run again")
    print("installing wrk with apt-get ...")
    if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"]).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is still missing after apt-get install wrk")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(
    data_dir: Path, database_url: str | None, redis_url: str | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINEROOM_")}
    env.update(
        ENGINEROOM_ENVIRONMENT="production",
        ENGINEROOM_SECRET_KEY=secrets.token_urlsafe(48),
        ENGINEROOM_DATA_DIR=str(data_dir),
        ENGINEROOM_LOG_LEVEL="WARNING",
        # Seeding writes 500 articles in seconds; the default limit is for people.
        ENGINEROOM_BLOG_WRITE_RATE_LIMIT="100000/minute",
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["ENGINEROOM_DATABASE_URL"] = database_url
    if redis_url:
        env["ENGINEROOM_REDIS_URL"] = redis_url
    return env


def clear_redis(url: str) -> None:
    """Remove the platform's keys left in the bench database by an earlier run (they were
    signed with another secret key)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=REDIS_KEYS, count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    except redis.RedisError as exc:
        sys.exit(f"Redis at {url} is needed for several workers: {exc}")
    finally:
        client.close()


@contextmanager
def running_server(
    workdir: Path, database_url: str | None, workers: int, redis_url: str
) -> Iterator[str]:
    """``engineroom serve`` with ``workers`` processes; several share ``redis_url``."""
    shared = redis_url if workers > 1 else None
    if shared:
        clear_redis(shared)
    env = server_env(workdir / "data", database_url, shared)
    subprocess.run(
        [sys.executable, "-m", "engineroom", "migrate"], env=env, cwd=workdir, check=True
    )
    port = free_port()
    log = (workdir / "server.log").open("wb")
    command = [sys.executable, "-m", "engineroom", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                sys.exit(f"server exited: see {workdir / 'server.log'}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit("server did not become healthy")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def seed(base: str) -> tuple[str, str]:
    """Register a user and create the articles; return (token, a slug)."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        name = f"bench{secrets.token_hex(3)}"
        registered = await client.post(
            "/api/users",
            json={"user": {"username": name, "email": f"{name}@example.com", "password": PASSWORD}},
        )
        registered.raise_for_status()
        token = registered.json()["user"]["token"]
        headers = {"Authorization": f"Token {token}"}
        body = ("Lorem ipsum dolor sit amet, *consectetur* adipiscing elit. " * 20)[:BODY_BYTES]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(ARTICLES):
            queue.put_nowait(index)
        slugs: list[str] = []

        async def writer() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                tags = [TAG_POOL[(index + step * 7) % len(TAG_POOL)] for step in range(3)]
                response = await client.post(
                    "/api/articles",
                    json={
                        "article": {
                            "title": f"Benchmark article number {index}",
                            "description": f"Article {index} of the benchmark",
                            "body": body,
                            "tagList": tags,
                        }
                    },
                    headers=headers,
                )
                response.raise_for_status()
                slugs.append(response.json()["article"]["slug"])

        started = time.monotonic()
        await asyncio.gather(*(writer() for _ in range(4)))
        print(f"  seeded {len(slugs)} articles in {time.monotonic() - started:.1f}s")
        return token, slugs[len(slugs) // 2]


_LATENCY = re.compile(r"^\s+(50|99)\.000%\s+(\S+)", re.MULTILINE)
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_ERRORS = re.compile(r"(Non-2xx or 3xx responses: \d+|Socket errors: [^\n]+)")


def run_wrk(wrk: str, name: str, url: str, duration: int, header: str | None) -> Result:
    command = [wrk, "-t2", "-c64", f"-d{duration}s", "--latency", url]
    if header:
        command[1:1] = ["-H", header]
    warmup = [*command]
    warmup[warmup.index(f"-d{duration}s")] = "-d2s"
    subprocess.run(warmup, capture_output=True, check=True)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latencies = dict(_LATENCY.findall(output)) if "50.000%" in output else {}
    if not latencies:  # plain wrk prints "50%" rather than "50.000%"
        latencies = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    rps = _RPS.search(output)
    errors = "; ".join(_ERRORS.findall(output)) or "none"
    return Result(
        name=name,
        requests_per_second=float(rps.group(1)) if rps else 0.0,
        p50=latencies.get("50", "?"),
        p99=latencies.get("99", "?"),
        errors=errors,
    )


@dataclass(frozen=True)
class Run:
    database: str
    workers: int

    @property
    def label(self) -> str:
        return f"{self.database} x{self.workers}"


def measure(wrk: str, run: Run, database_url: str | None, args: argparse.Namespace) -> list[Result]:
    duration: int = args.duration
    with (
        tempfile.TemporaryDirectory(prefix="engineroom-bench-") as tmp,
        running_server(Path(tmp), database_url, run.workers, args.redis_url) as base,
    ):
        token, slug = asyncio.run(seed(base))
        auth = f"Authorization: Token {token}"
        targets = [
            ("GET /api/articles?limit=20", f"{base}/api/articles?limit=20", None),
            ("GET /api/articles/{slug}", f"{base}/api/articles/{slug}", None),
            ("GET /api/tags", f"{base}/api/tags", None),
            ("GET /api/user (token)", f"{base}/api/user", auth),
            # Not a blog route: the platform's floor on this machine right now (no
            # database, no cache), to read the four figures above against.
            ("GET /healthz (reference)", f"{base}/healthz", None),
        ]
        results = []
        for name, url, header in targets:
            results.append(run_wrk(wrk, name, url, duration, header))
            print(f"  {run.label:<14} {_format(results[-1])}")
        return results


def _format(result: Result) -> str:
    return (
        f"{result.name:<28} {result.requests_per_second:>9.0f} req/s"
        f"   p50 {result.p50:>8}   p99 {result.p99:>8}   errors: {result.errors}"
    )


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=10
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"engineroom_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def parse_workers(value: str) -> list[int]:
    try:
        counts = [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of process counts") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("process counts are 1 or more")
    return counts


def plan_runs(databases: list[str], workers: list[int]) -> list[Run]:
    runs = []
    for database in databases:
        if database not in ("postgresql", "sqlite"):
            sys.exit(f"unknown database {database!r} (postgresql or sqlite)")
        for count in workers:
            if database == "sqlite" and count > 1:
                print(f"sqlite: --workers {count} skipped (several workers need PostgreSQL)")
                continue
            runs.append(Run(database, count))
    return runs


def _cell(result: Result | None) -> str:
    if result is None:
        return "-"
    cell = f"{result.requests_per_second:.0f} ({result.p50}/{result.p99})"
    return cell if result.errors == "none" else f"{cell} errors!"


def print_summary(table: dict[Run, list[Result]], duration: int) -> None:
    """One line per endpoint, one column per worker count."""
    print(f"\nsummary (wrk -t2 -c64 -d{duration}s, loopback; req/s (p50/p99)):")
    columns = sorted({run.workers for run in table})
    titles = [f"{count} worker{'s' if count > 1 else ''}" for count in columns]
    for database in dict.fromkeys(run.database for run in table):
        print(f"  {database:<28}" + "".join(f"{title:>30}" for title in titles))
        by_workers = {
            run.workers: results for run, results in table.items() if run.database == database
        }
        names = [result.name for result in next(iter(by_workers.values()))]
        for index, name in enumerate(names):
            cells = [by_workers[count][index] if count in by_workers else None for count in columns]
            print(f"  {name:<28}" + "".join(f"{_cell(cell):>30}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument(
        "--workers",
        type=parse_workers,
        default=[1],
        help="server processes, e.g. 2, or 1,2 for both side by side (default 1)",
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help="Redis shared by several workers")
    args = parser.parse_args()
    wrk = ensure_wrk()
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    table: dict[Run, list[Result]] = {}
    for run in plan_runs(databases, args.workers):
        print(f"{run.database}, {run.workers} worker process(es):")
        if run.database == "postgresql":
            with postgres_database() as url:
                table[run] = measure(wrk, run, url, args)
        else:
            table[run] = measure(wrk, run, None, args)
    print_summary(table, args.duration)


if __name__ == "__main__":
    main()
