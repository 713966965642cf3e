"""Browser and machine credentials on a real ``engineroom serve`` over TLS.

The cookie must come back ``Secure`` with the ``__Host-`` prefix, CSRF must hold, and an
API key and a TOTP second factor must work through the real server.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from engineroom.identity import mfa
from tests.e2e.conftest import StartServer
from tests.support.identity import PASSWORD
from tests.support.server import make_self_signed_certificate

pytestmark = pytest.mark.xdist_group("e2e")

LOGIN = {"email": "ann@example.com", "password": PASSWORD}
SESSIONS = "/api/v1/identity/sessions"


def _code(secret: str, steps_ahead: int = 0) -> str:
    return mfa.code_at(secret, time.time() + steps_ahead * mfa.TOTP_PERIOD)


def _sign_in_and_check_cookie(client: httpx.Client, origin: str) -> str:
    created = client.post(SESSIONS, json=LOGIN, headers={"Origin": origin})
    assert created.status_code == 201, created.text
    cookie = created.headers["set-cookie"]
    assert cookie.startswith("__Host-engineroom_session=")
    lowered = cookie.lower()
    for attribute in ("; secure", "; httponly", "; path=/", "; samesite=lax"):
        assert attribute in lowered, attribute
    assert "domain=" not in lowered
    csrf: str = created.json()["csrf_token"]
    return csrf


def test_sessions_api_keys_and_mfa_over_tls(start_server: StartServer, tmp_path: Path) -> None:
    certificate = make_self_signed_certificate(tmp_path / "tls")
    server = start_server(
        args=[
            "--ssl-certfile",
            str(certificate.certfile),
            "--ssl-keyfile",
            str(certificate.keyfile),
        ],
        env={"ENGINEROOM_MODULES": "identity"},
        scheme="https",
        verify=certificate.client_context(),
    )
    origin = server.base_url
    with server.client() as browser:
        registered = browser.post(
            "/api/v1/identity/users",
            json={"email": LOGIN["email"], "username": "ann", "password": PASSWORD},
        )
        assert registered.status_code == 201, registered.text
        csrf = _sign_in_and_check_cookie(browser, origin)
        assert browser.get("/api/v1/identity/me").json()["username"] == "ann"

        # Unsafe requests need the token; with it, the browser creates an API key.
        refused = browser.post("/api/v1/identity/api-keys", json={"name": "ci"})
        assert refused.status_code == 403
        assert refused.json()["code"] == "csrf_failed"
        headers = {"X-CSRF-Token": csrf, "Origin": origin}
        created = browser.post("/api/v1/identity/api-keys", json={"name": "ci"}, headers=headers)
        assert created.status_code == 201, created.text
        key = created.json()["key"]

        # MFA on, through the cookie session.
        secret = browser.post("/api/v1/identity/mfa/totp", headers=headers).json()["secret"]
        confirm_code = _code(secret)
        confirmed = browser.post(
            "/api/v1/identity/mfa/totp/confirm", json={"code": confirm_code}, headers=headers
        )
        assert confirmed.status_code == 200, confirmed.text
        assert browser.delete(f"{SESSIONS}/current", headers=headers).status_code == 204
        assert browser.get("/api/v1/identity/me").status_code == 401

    with server.client() as machine:
        refused = machine.get("/api/v1/identity/mfa", headers={"X-API-Key": key})
        assert refused.status_code == 403, "a key authenticates but manages no credentials"
        assert refused.json()["code"] == "api_key_forbidden"

    with server.client() as browser:
        challenge = browser.post(SESSIONS, json=LOGIN, headers={"Origin": origin})
        assert challenge.status_code == 200
        assert challenge.json()["mfa_required"] is True
        assert "set-cookie" not in challenge.headers
        wrong = browser.post(
            f"{SESSIONS}/mfa",
            json={"challenge": challenge.json()["challenge"], "code": confirm_code},
        )
        assert wrong.status_code == 401, "the code that confirmed enrollment is spent"
        signed_in = browser.post(
            f"{SESSIONS}/mfa",
            json={"challenge": challenge.json()["challenge"], "code": _code(secret, 1)},
            headers={"Origin": origin},
        )
        assert signed_in.status_code == 201, signed_in.text
        assert signed_in.headers["set-cookie"].startswith("__Host-engineroom_session=")
        listed = browser.get(SESSIONS).json()["sessions"]
        assert [s["current"] for s in listed] == [True]
