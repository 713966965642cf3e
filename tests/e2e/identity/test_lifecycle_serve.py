"""Password reset, lockout and the audit log on a real ``engineroom serve`` (SQLite)."""

from __future__ import annotations

import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import StartServer
from tests.support.identity import PASSWORD
from tests.support.identity_lifecycle import read_mail, token_in
from tests.support.server import server_env

pytestmark = pytest.mark.xdist_group("e2e")

ENV = {
    "ENGINEROOM_MODULES": "identity",
    "ENGINEROOM_PUBLIC_URL": "http://app.example",
    "ENGINEROOM_IDENTITY_LOGIN_LIMIT_PER_ACCOUNT_ADDRESS": "3/15 minutes",
}
NEW_PASSWORD = "a brand new passphrase"


def _wait_for_mail(data_dir: Path, timeout: float = 20) -> EmailMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted((data_dir / "mail").glob("*.eml")) if (data_dir / "mail").exists() else []
        if files:
            return read_mail(files[0])
        time.sleep(0.1)
    raise AssertionError("no mail was written")


def _login(client: httpx.Client, password: str) -> httpx.Response:
    return client.post(
        "/api/v1/identity/token", json={"email": "jake@example.com", "password": password}
    )


def test_reset_lockout_and_audit_on_a_running_server(
    start_server: StartServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(env=ENV, data_dir=data_dir)
    with server.client() as client:
        created = client.post(
            "/api/v1/identity/users",
            json={"email": "jake@example.com", "username": "jake", "password": PASSWORD},
        )
        assert created.status_code == 201
        session_tokens = _login(client, PASSWORD).json()

        assert (
            client.post(
                "/api/v1/identity/password/forgot", json={"email": "jake@example.com"}
            ).status_code
            == 202
        )
        mail = _wait_for_mail(data_dir)
        token = token_in(mail)
        assert f"http://app.example/account/reset-password?token={token}" in mail.get_content()
        reset = client.post(
            "/api/v1/identity/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert reset.status_code == 204
        assert (
            client.post(
                "/api/v1/identity/token/refresh",
                json={"refresh_token": session_tokens["refresh_token"]},
            ).status_code
            == 401
        )
        assert (
            client.post(
                "/api/v1/identity/password/reset", json={"token": token, "new_password": "x" * 20}
            ).status_code
            == 400
        )

        assert [_login(client, "wrong password").status_code for _ in range(4)] == [
            401,
            401,
            401,
            429,
        ]
        locked = _login(client, NEW_PASSWORD)
        assert locked.status_code == 429
        assert int(locked.headers["Retry-After"]) > 0

    admin = _engineroom(
        data_dir, "identity", "create-admin", "--email", "root@example.com", "--username", "root"
    )
    assert admin.returncode == 0, admin.stderr
    with server.client() as client:
        root = client.post(
            "/api/v1/identity/token", json={"email": "root@example.com", "password": PASSWORD}
        ).json()["access_token"]
        page = client.get(
            "/api/v1/identity/audit-events",
            params={"action": "login", "limit": 10},
            headers={"Authorization": f"Bearer {root}"},
        )
        assert page.status_code == 200, page.text
        outcomes = [event["outcome"] for event in page.json()["events"]]
        # Newest first: root's login, the two refused, the three wrong, jake's first login.
        assert outcomes[:6] == ["success", "blocked", "blocked", "failure", "failure", "failure"]


def _engineroom(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engineroom", *args],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=server_env(data_dir, ENV),
        cwd=data_dir.parent,
        timeout=60,
        check=False,
    )
