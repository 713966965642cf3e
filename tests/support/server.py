"""Start the real ``engineroom serve`` process for end-to-end tests.

``serve_process(tmp_dir)`` runs ``python -m engineroom serve`` on a free loopback port with
its own data dir and environment (``HOST``/``PORT`` variables, the way ``make run`` passes
them), waits until ``/healthz`` answers, yields a ``ServerProcess`` and stops it by PID
at the end. Output goes to a file so a chatty server can never block on a full pipe;
``ServerProcess.output()`` reads it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

STARTUP_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
_BIND_ATTEMPTS = 3
# Variables of the caller's shell that would change what the server does.
_SCRUBBED_PREFIXES = ("ENGINEROOM_",)
_SCRUBBED_NAMES = ("HOST", "PORT")


class ServerFailedError(RuntimeError):
    """The server exited or never became healthy; the message carries its output."""

    def __init__(self, message: str, *, exit_code: int | None, output: str) -> None:
        super().__init__(f"{message}:\n{output}")
        self.exit_code = exit_code
        self.output = output


def free_port() -> int:
    """A port the kernel just handed out; another process may still take it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment minus engineroom settings, plus a test data dir."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SCRUBBED_PREFIXES) and name not in _SCRUBBED_NAMES
    }
    env.update(
        ENGINEROOM_ENVIRONMENT="test",
        ENGINEROOM_DATA_DIR=str(data_dir),
        ENGINEROOM_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    data_dir: Path
    log_path: Path
    verify: ssl.SSLContext | bool = True
    exit_code: int | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.verify, timeout=30)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait for a graceful exit; SIGKILL (and fail) past ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise ServerFailedError(
                    f"server {self.pid} ignored SIGTERM for {timeout}s",
                    exit_code=self.process.returncode,
                    output=self.output(),
                ) from None
        self.exit_code = self.process.returncode
        return self.exit_code


def _wait_healthy(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=server.verify, timeout=5) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServerFailedError(
                    f"server exited with {server.process.returncode}",
                    exit_code=server.process.returncode,
                    output=server.output(),
                )
            try:
                if client.get(f"{server.base_url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise ServerFailedError(
        f"server not healthy after {timeout}s", exit_code=None, output=server.output()
    )


def _start(
    workdir: Path,
    data_dir: Path,
    args: Sequence[str],
    env: Mapping[str, str] | None,
    verify: ssl.SSLContext | bool,
    scheme: str,
) -> ServerProcess:
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engineroom", "serve", *args],
            cwd=workdir,
            env=server_env(data_dir, {"HOST": "127.0.0.1", "PORT": str(port), **(env or {})}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(
        process=process,
        base_url=f"{scheme}://127.0.0.1:{port}",
        data_dir=data_dir,
        log_path=log_path,
        verify=verify,
    )


@contextmanager
def serve_process(
    workdir: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    data_dir: Path | None = None,
    verify: ssl.SSLContext | bool = True,
    scheme: str = "http",
    timeout: float = STARTUP_TIMEOUT,
) -> Iterator[ServerProcess]:
    """Run ``engineroom serve`` until the block ends (``data_dir`` defaults to workdir/data)."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or workdir / "data"
    for attempt in range(_BIND_ATTEMPTS):
        server = _start(workdir, data_dir, args, env, verify, scheme)
        try:
            _wait_healthy(server, timeout)
            break
        except ServerFailedError:
            server.stop()
            # The free port was taken between our probe and the server's bind: retry.
            if "address already in use" not in server.output() or attempt == _BIND_ATTEMPTS - 1:
                raise
    try:
        yield server
    finally:
        server.stop()


# ---- TLS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfSignedCertificate:
    certfile: Path
    keyfile: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this certificate."""
        return ssl.create_default_context(cafile=str(self.certfile))


def make_self_signed_certificate(directory: Path) -> SelfSignedCertificate:
    """A certificate for 127.0.0.1 and localhost (CN and SAN), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        # Self-signed and trusted directly: it is its own CA, and says what it is for so
        # that strict verification (Python 3.13+ defaults) accepts it too.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    certfile = directory / "cert.pem"
    keyfile = directory / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return SelfSignedCertificate(certfile=certfile, keyfile=keyfile)
