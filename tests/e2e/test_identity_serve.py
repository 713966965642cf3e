"""Identity end to end on a real ``engineroom serve``: accounts, tokens, key rotation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.e2e.conftest import StartServer
from tests.support.identity import PASSWORD
from tests.support.server import server_env

pytestmark = pytest.mark.xdist_group("e2e")

IDENTITY_ENV = {
    "ENGINEROOM_MODULES": "identity",
    "ENGINEROOM_IDENTITY_SIGNING_KEY_CACHE_SECONDS": "0.5",
}


def _engineroom(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engineroom", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=server_env(data_dir, IDENTITY_ENV),
        cwd=data_dir.parent,
        timeout=60,
        check=False,
    )


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _wait_for_kid(client: httpx.Client, kid: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        token = client.post(
            "/api/v1/identity/token", json={"email": "jake@jake.jake", "password": PASSWORD}
        ).json()["access_token"]
        if _kid(token) == kid:
            return str(token)
        time.sleep(0.2)
    raise AssertionError(f"the server never signed with {kid}")


def test_accounts_tokens_and_key_rotation(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "shared-data"
    server = start_server(env=IDENTITY_ENV, data_dir=data_dir)
    with server.client() as client:
        created = client.post(
            "/api/users",
            json={"user": {"username": "jake", "email": "jake@jake.jake", "password": PASSWORD}},
        )
        assert created.status_code == 201, created.text
        rw_token = created.json()["user"]["token"]
        current = client.get("/api/user", headers={"Authorization": f"Token {rw_token}"})
        assert current.json()["user"]["username"] == "jake"

        pair = client.post(
            "/api/v1/identity/token", json={"email": "jake@jake.jake", "password": PASSWORD}
        ).json()
        refreshed = client.post(
            "/api/v1/identity/token/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert refreshed.status_code == 200
        old_kid = _kid(pair["access_token"])
        assert [key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]] == [
            old_kid
        ]

        rotated = _engineroom(data_dir, "identity", "rotate-keys")
        assert rotated.returncode == 0, rotated.stderr
        new_kid = rotated.stdout.split()[3].rstrip(";")
        assert new_kid != old_kid

        new_token = _wait_for_kid(client, new_kid)
        jwks = {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]}
        assert jwks == {old_kid, new_kid}
        for token in (pair["access_token"], rw_token, new_token):
            me = client.get("/api/v1/identity/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200, me.text

        logout = client.post(
            "/api/v1/identity/logout", json={"refresh_token": refreshed.json()["refresh_token"]}
        )
        assert logout.status_code == 204
        again = client.post(
            "/api/v1/identity/token/refresh",
            json={"refresh_token": refreshed.json()["refresh_token"]},
        )
        assert again.status_code == 401


def test_create_admin_then_manage_roles(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "shared-data"
    server = start_server(env=IDENTITY_ENV, data_dir=data_dir)
    made = _engineroom(
        data_dir,
        "identity",
        "create-admin",
        "--email",
        "root@example.com",
        "--username",
        "root",
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    assert PASSWORD not in " ".join(os.environ.values())
    with server.client() as client:
        token = client.post(
            "/api/v1/identity/token", json={"email": "root@example.com", "password": PASSWORD}
        ).json()["access_token"]
        roles = client.get("/api/v1/identity/roles", headers={"Authorization": f"Bearer {token}"})
    assert roles.status_code == 200
    assert {role["name"] for role in roles.json()["roles"]} >= {"admin", "moderator", "member"}
