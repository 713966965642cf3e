"""Benchmark of the chat transport against real ``engineroom serve`` processes.

    python bench/chat.py [--connections 10000] [--subscribers 1000] [--rates 25,50,100]

1. Connections: one server process, N WebSocket clients that connect (identity token) and
   subscribe to one of 100 presence-enabled channels; the server's resident memory before
   and after gives the memory per connection (target: 10,000 connections, <= 30 KB each).
2. Fan-out: S subscribers of one channel, a publisher at R publications/s; deliveries per
   second and the delivery latency (publish sent -> push parsed by the subscriber), p50 and
   p99 (target: 50,000 deliveries/s, p99 < 100 ms on 2 cores).
3. The same fan-out through two processes sharing Redis (half the subscribers on each,
   the publisher on the first).

The load generator runs in this process (see ``chat_client.py``); it shares the machine
with the servers, so the figures include its cost. Every request goes to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_client import WsClient, open_client

HOST = "127.0.0.1"
PASSWORD = "correct horse battery staple"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


# ---- servers -----------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(data_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINEROOM_")}
    env.update(
        ENGINEROOM_DATA_DIR=str(data_dir),
        ENGINEROOM_MODULES="identity,chat",
        ENGINEROOM_LOG_LEVEL="WARNING",
        ENGINEROOM_ALLOWED_HOSTS="*",
        # The publisher sends far more than an interactive client may.
        ENGINEROOM_CHAT_COMMAND_RATE="100000",
        ENGINEROOM_CHAT_COMMAND_BURST="100000",
        PYTHONUNBUFFERED="1",
        **(extra_env or {}),
    )
    log = (data_dir.parent / f"server-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "engineroom", "serve", "--host", HOST, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(process, port)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log.name}")
            time.sleep(0.2)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def user_token(server: Server, username: str) -> str:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        email = f"{username}@example.com"
        registered = http.post(
            "/api/v1/identity/users",
            json={"email": email, "username": username, "password": PASSWORD},
        )
        registered.raise_for_status()
        login = http.post("/api/v1/identity/token", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        token: str = login.json()["access_token"]
        return token


# ---- clients -----------------------------------------------------------------------------


@dataclass
class Receiver:
    """Counts deliveries and their latency for every connection of a run."""

    latencies: list[float] = field(default_factory=list)
    delivered: int = 0
    last_at: float = 0.0
    expected: int = 0
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def on_push(self, line: bytes) -> None:
        if b'"pub"' not in line:
            return
        now = time.perf_counter()
        sent = orjson.loads(line)["push"]["pub"]["data"]["t"]
        self.latencies.append(now - sent)
        self.delivered += 1
        self.last_at = now
        if self.delivered >= self.expected:
            self.complete.set()


async def subscriber(port: int, token: str, channel: str, receiver: Receiver | None) -> WsClient:
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(line: bytes) -> None:
        if line.startswith(b'{"id":2,'):
            if b'"error"' in line:
                ready.set_exception(RuntimeError(line.decode()))
            else:
                ready.set_result(None)
        elif line.startswith(b'{"id":1,"error"'):
            ready.set_exception(RuntimeError(line.decode()))
        elif receiver is not None:
            receiver.on_push(line)

    client = await open_client(HOST, port, on_message)
    client.send_text(
        orjson.dumps({"id": 1, "connect": {"token": token}})
        + b"\n"
        + orjson.dumps({"id": 2, "subscribe": {"channel": channel}})
    )
    await asyncio.wait_for(ready, 60)
    return client


async def open_many(
    count: int, ports: list[int], token: str, channel_of: list[str], receiver: Receiver | None
) -> list[WsClient]:
    gate = asyncio.Semaphore(100)

    async def one(index: int) -> WsClient:
        async with gate:
            port = ports[index % len(ports)]
            return await subscriber(port, token, channel_of[index], receiver)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def close_all(clients: list[WsClient]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.close()


# ---- scenarios ---------------------------------------------------------------------------


async def connections_scenario(server: Server, token: str, count: int) -> None:
    # Warm up: the first connections load code and fill caches that are not per connection.
    warm = await open_many(50, [server.port], token, [f"public:warm-{i}" for i in range(50)], None)
    close_all(warm)
    await asyncio.sleep(2)
    before = server.rss_kb()
    started = time.perf_counter()
    channels = [f"public:room-{i % 100}" for i in range(count)]
    clients = await open_many(count, [server.port], token, channels, None)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(3)
    after = server.rss_kb()
    alive = sum(1 for c in clients if not c.closed.done())
    per_connection = (after - before) / count
    print(
        f"connections: {alive}/{count} held by one process (opened in {elapsed:.1f} s); "
        f"server RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB: "
        f"{per_connection:.1f} KB per connection (target <= 30 KB)"
    )
    close_all(clients)
    await asyncio.sleep(1)


async def publish_at(publisher: WsClient, channel: str, rate: float, seconds: float) -> int:
    interval = 1.0 / rate
    start = time.perf_counter()
    sent = 0
    while True:
        due = start + sent * interval
        now = time.perf_counter()
        if now - start >= seconds:
            return sent
        if due > now:
            await asyncio.sleep(due - now)
        sent += 1
        data = {"t": time.perf_counter(), "s": sent}
        publisher.send({"id": sent + 10, "publish": {"channel": channel, "data": data}})


async def measure_rate(
    servers: list[Server],
    publisher: WsClient,
    channel: str,
    receiver: Receiver,
    subscribers: int,
    rate: float,
    seconds: float,
) -> str:
    """Publish at ``rate`` for ``seconds``; what was delivered, how fast, at what cost."""
    receiver.latencies.clear()
    receiver.delivered = 0
    receiver.expected = 2**62
    receiver.complete.clear()
    cpu_before = sum(server.cpu_seconds() for server in servers)
    own_before = sum(os.times()[:2])
    started = time.perf_counter()
    sent = await publish_at(publisher, channel, rate, seconds)
    expected = sent * subscribers
    receiver.expected = expected
    if receiver.delivered >= expected:
        receiver.complete.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receiver.complete.wait(), 10)
    elapsed = max(receiver.last_at, started + seconds) - started
    cpu = sum(server.cpu_seconds() for server in servers) - cpu_before
    per_delivery = cpu / max(1, receiver.delivered) * 1e6
    own = sum(os.times()[:2]) - own_before
    latencies = sorted(receiver.latencies)
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
    return (
        f"{rate:g} pub/s x {seconds:g} s: {receiver.delivered}/{expected} delivered, "
        f"{receiver.delivered / elapsed:,.0f} deliveries/s, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; server CPU {cpu / elapsed:.2f} cores, "
        f"{per_delivery:.1f} us per delivery (~{1e6 / per_delivery:,.0f} deliveries/s "
        f"per core); load generator CPU {own / elapsed:.2f} cores"
    )


async def fanout_scenario(
    label: str,
    servers: list[Server],
    token: str,
    subscribers: int,
    rates: list[float],
    seconds: float,
) -> None:
    ports = [server.port for server in servers]
    channel = f"public:bench-{secrets.token_hex(3)}"
    receiver = Receiver()
    clients = await open_many(subscribers, ports, token, [channel] * subscribers, receiver)
    publisher = await subscriber(ports[0], token, f"public:publisher-{channel}", None)
    # Warm up (first fan-outs allocate what later ones reuse), then measure.
    await publish_at(publisher, channel, 20, 1)
    await asyncio.sleep(1)
    # The load generator's own full garbage collections would show as delivery latency.
    gc.collect()
    gc.freeze()
    for rate in rates:
        print(
            f"fan-out {label}: {subscribers} subscribers, "
            + await measure_rate(servers, publisher, channel, receiver, subscribers, rate, seconds)
        )
        await asyncio.sleep(1)
    close_all([*clients, publisher])
    await asyncio.sleep(1)


async def run(args: argparse.Namespace) -> None:
    rates = [float(rate) for rate in args.rates.split(",")]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="engineroom-bench-") as tmp:
        root = Path(tmp)
        if args.connections:
            (root / "a").mkdir()
            with serve(root / "a" / "data") as server:
                token = user_token(server, "bench")
                await connections_scenario(server, token, args.connections)
        (root / "b").mkdir()
        with serve(root / "b" / "data") as server:
            token = user_token(server, "bench")
            await fanout_scenario(
                "(1 process)", [server], token, args.subscribers, rates, args.seconds
            )
        if args.skip_redis:
            return
        prefix = f"engineroom-bench-{secrets.token_hex(4)}:chat:"
        env = {"ENGINEROOM_REDIS_URL": REDIS_URL, "ENGINEROOM_CHAT_REDIS_PREFIX": prefix}
        (root / "c").mkdir()
        shared = root / "c" / "data"
        try:
            with serve(shared, env) as one, serve(shared, env) as two:
                token = user_token(one, "bench")
                await fanout_scenario(
                    "(2 processes + Redis)",
                    [one, two],
                    token,
                    args.subscribers,
                    rates,
                    args.seconds,
                )
        finally:
            await _drop_keys(prefix)


async def _drop_keys(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rates", default="25,50,100", help="publications per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(run(args))
    except ImportError:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
