"""TOTP MFA over HTTP (SQLite, PostgreSQL, MariaDB): enrollment, two-step login, recovery."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engineroom.core.clock import utcnow
from engineroom.identity import mfa, sessions
from engineroom.identity.crypto import TOTP_PURPOSE, decrypt
from engineroom.identity.models import RecoveryCode, Totp, User
from engineroom.settings import Settings
from tests.support.identity_credentials import (
    PASSWORD,
    IdentityApp,
    bearer,
    identity_app,
    register,
    set_user_columns,
)

MFA = "/api/v1/identity/mfa"
LOGIN = {"email": "ann@example.com", "password": PASSWORD}


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def running(tmp_path: Path, database_url: str | None) -> AsyncIterator[IdentityApp]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        allowed_hosts=["*"],
        log_format="console",
    )
    async with identity_app(settings) as app:
        yield app


@pytest.fixture
async def ann(running: IdentityApp) -> dict[str, Any]:
    user = await register(running.client, "ann")
    return {"user": user, "headers": await bearer(running.client, "ann")}


def code(secret: str, steps_ahead: int = 0) -> str:
    return mfa.code_at(secret, time.time() + steps_ahead * mfa.TOTP_PERIOD)


def not_a_code(secret: str) -> str:
    """Six digits that no step near now produces."""
    valid = {code(secret, d) for d in (-2, -1, 0, 1, 2)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)


async def enable_mfa(running: IdentityApp, headers: dict[str, str]) -> dict[str, Any]:
    """Enroll and confirm (burning the current step); the secret and recovery codes."""
    enrolled = await running.client.post(f"{MFA}/totp", headers=headers)
    assert enrolled.status_code == 201, enrolled.text
    secret = enrolled.json()["secret"]
    first_code = code(secret)
    confirmed = await running.client.post(
        f"{MFA}/totp/confirm", json={"code": first_code}, headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    return {
        "secret": secret,
        "confirm_code": first_code,
        "recovery_codes": confirmed.json()["recovery_codes"],
    }


async def password_step(running: IdentityApp) -> str:
    response = await running.client.post("/api/v1/identity/token", json=LOGIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mfa_required"] is True
    assert "access_token" not in body
    assert body["methods"] == ["totp", "recovery_code"]
    challenge: str = body["challenge"]
    return challenge


async def code_step(running: IdentityApp, challenge: str, value: str) -> Any:
    return await running.client.post(
        "/api/v1/identity/token/mfa", json={"challenge": challenge, "code": value}
    )


async def test_enrollment_and_confirmation(running: IdentityApp, ann: dict[str, Any]) -> None:
    headers = ann["headers"]
    assert (await running.client.get(MFA, headers=headers)).json()["enabled"] is False
    enrolled = await running.client.post(f"{MFA}/totp", headers=headers)
    body = enrolled.json()
    assert body["provisioning_uri"].startswith("otpauth://totp/")
    assert f"secret={body['secret']}" in body["provisioning_uri"]
    status = (await running.client.get(MFA, headers=headers)).json()
    assert status == {
        "enabled": False,
        "pending": True,
        "confirmed_at": None,
        "recovery_codes_remaining": 0,
    }
    wrong = await running.client.post(
        f"{MFA}/totp/confirm", json={"code": not_a_code(body["secret"])}, headers=headers
    )
    assert wrong.status_code == 403
    assert wrong.json()["code"] == "mfa_code_invalid"
    right = await running.client.post(
        f"{MFA}/totp/confirm", json={"code": code(body["secret"])}, headers=headers
    )
    assert right.status_code == 200
    codes = right.json()["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    status = (await running.client.get(MFA, headers=headers)).json()
    assert status["enabled"] is True
    assert status["recovery_codes_remaining"] == 10
    me = await running.client.get("/api/v1/identity/me", headers=headers)
    assert me.json()["mfa_enabled"] is True
    again = await running.client.post(f"{MFA}/totp", headers=headers)
    assert again.status_code == 409
    assert again.json()["code"] == "mfa_already_enabled"


async def test_secrets_are_encrypted_and_codes_hashed_at_rest(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    enabled = await enable_mfa(running, ann["headers"])
    user_id = uuid.UUID(ann["user"]["id"])
    async with running.platform.database.read_only() as session:
        totp = await session.get(Totp, user_id)
        assert totp is not None
        stored_secret = totp.secret
        hashes = list(
            await session.scalars(
                select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user_id)
            )
        )
    assert enabled["secret"] not in stored_secret
    assert (
        decrypt(running.platform.settings, TOTP_PURPOSE, stored_secret).decode()
        == (enabled["secret"])
    )
    assert len(hashes) == 10
    for recovery in enabled["recovery_codes"]:
        compact = recovery.replace("-", "")
        assert all(compact not in digest and recovery not in digest for digest in hashes)


async def test_confirm_needs_an_enrollment(running: IdentityApp, ann: dict[str, Any]) -> None:
    response = await running.client.post(
        f"{MFA}/totp/confirm", json={"code": "123456"}, headers=ann["headers"]
    )
    assert response.status_code == 409
    assert response.json()["code"] == "mfa_not_enrolled"


async def test_two_step_token_login(running: IdentityApp, ann: dict[str, Any]) -> None:
    enabled = await enable_mfa(running, ann["headers"])
    secret = enabled["secret"]
    challenge = await password_step(running)
    wrong = await code_step(running, challenge, "12345x")
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "mfa_code_invalid"
    replayed = await code_step(running, challenge, enabled["confirm_code"])
    assert replayed.status_code == 401, "a code is never accepted twice"
    next_code = code(secret, 1)
    ok = await code_step(running, challenge, next_code)
    assert ok.status_code == 200, ok.text
    tokens = ok.json()
    me = await running.client.get(
        "/api/v1/identity/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    # The same code for another login, a moment later: refused.
    second = await password_step(running)
    assert (await code_step(running, second, next_code)).status_code == 401


async def test_expired_codes_are_refused(running: IdentityApp, ann: dict[str, Any]) -> None:
    secret = (await enable_mfa(running, ann["headers"]))["secret"]
    challenge = await password_step(running)
    for steps in (-3, -2, 3):
        stale = code(secret, steps)
        if stale in {code(secret, d) for d in (-1, 0, 1)}:
            continue  # the same six digits as a valid code: nothing to learn
        assert (await code_step(running, challenge, stale)).status_code == 401


async def test_recovery_codes_work_once(running: IdentityApp, ann: dict[str, Any]) -> None:
    recovery = (await enable_mfa(running, ann["headers"]))["recovery_codes"]
    first = await code_step(running, await password_step(running), recovery[0].upper())
    assert first.status_code == 200
    reused = await code_step(running, await password_step(running), recovery[0])
    assert reused.status_code == 401
    status = (await running.client.get(MFA, headers=ann["headers"])).json()
    assert status["recovery_codes_remaining"] == 9


async def test_challenges_cannot_be_forged_or_moved(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    secret = (await enable_mfa(running, ann["headers"]))["secret"]
    token_challenge = await password_step(running)
    moved = await running.client.post(
        "/api/v1/identity/sessions/mfa",
        json={"challenge": token_challenge, "code": code(secret, 1)},
    )
    assert moved.status_code == 401
    assert moved.json()["code"] == "mfa_challenge_invalid"
    for forged in ("", "v1.AAAA", "x" * 300):
        response = await code_step(running, forged, code(secret, 1))
        assert response.status_code == 401
        assert response.json()["code"] == "mfa_challenge_invalid"
    async with running.platform.database.read_only() as session:
        user = await session.get(User, uuid.UUID(ann["user"]["id"]))
        assert user is not None
        expired = mfa.issue_challenge(
            running.platform.settings,
            user,
            purpose=mfa.TOKENS_PURPOSE,
            ttl=timedelta(seconds=-1),
        )
    response = await code_step(running, expired, code(secret, 1))
    assert response.status_code == 401
    assert response.json()["code"] == "mfa_challenge_invalid"


async def test_a_password_change_voids_pending_challenges(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    secret = (await enable_mfa(running, ann["headers"]))["secret"]
    challenge = await password_step(running)
    await set_user_columns(running.platform, ann["user"]["id"], password_changed_at=utcnow())
    response = await code_step(running, challenge, code(secret, 1))
    assert response.status_code == 401
    assert response.json()["code"] == "mfa_challenge_invalid"


async def test_code_attempts_are_rate_limited(running: IdentityApp, ann: dict[str, Any]) -> None:
    secret = (await enable_mfa(running, ann["headers"]))["secret"]
    challenge = await password_step(running)
    wrong = not_a_code(secret)
    for _ in range(5):
        assert (await code_step(running, challenge, wrong)).status_code == 401
    limited = await code_step(running, challenge, code(secret, 1))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


async def test_the_same_code_twice_at_once_wins_once(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    secret = (await enable_mfa(running, ann["headers"]))["secret"]
    first, second = await password_step(running), await password_step(running)
    value = code(secret, 1)
    answers = await asyncio.gather(
        code_step(running, first, value), code_step(running, second, value)
    )
    assert sorted(a.status_code for a in answers) == [200, 401]


async def test_session_sign_in_with_mfa(running: IdentityApp, ann: dict[str, Any]) -> None:
    secret = (await enable_mfa(running, ann["headers"]))["secret"]
    async with running.new_client() as browser:
        step_one = await browser.post("/api/v1/identity/sessions", json=LOGIN)
        assert step_one.status_code == 200
        assert step_one.json()["mfa_required"] is True
        assert "set-cookie" not in step_one.headers
        assert (await browser.get("/api/v1/probe/whoami")).status_code == 401
        step_two = await browser.post(
            "/api/v1/identity/sessions/mfa",
            json={"challenge": step_one.json()["challenge"], "code": code(secret, 1)},
        )
        assert step_two.status_code == 201, step_two.text
        assert sessions.PLAIN_COOKIE_NAME in browser.cookies
        whoami = await browser.get("/api/v1/probe/whoami")
        assert whoami.json()["via"] == "session"
        # A token-login challenge does not open a session, and vice versa.
        token_step = await code_step(running, step_one.json()["challenge"], code(secret, 1))
        assert token_step.status_code == 401


async def test_disable(running: IdentityApp, ann: dict[str, Any]) -> None:
    headers = ann["headers"]
    recovery = (await enable_mfa(running, headers))["recovery_codes"]
    for body in ({}, {"code": "123456", "password": PASSWORD}):
        assert (
            await running.client.post(f"{MFA}/disable", json=body, headers=headers)
        ).status_code == 422
    wrong_password = await running.client.post(
        f"{MFA}/disable", json={"password": "not it at all"}, headers=headers
    )
    assert wrong_password.status_code == 403
    assert wrong_password.json()["code"] == "wrong_password"
    off = await running.client.post(f"{MFA}/disable", json={"code": recovery[3]}, headers=headers)
    assert off.status_code == 204
    assert (await running.client.get(MFA, headers=headers)).json()["enabled"] is False
    plain = await running.client.post("/api/v1/identity/token", json=LOGIN)
    assert "access_token" in plain.json()
    again = await running.client.post(
        f"{MFA}/disable", json={"password": PASSWORD}, headers=headers
    )
    assert again.status_code == 409
    assert again.json()["code"] == "mfa_not_enabled"


async def test_disable_with_the_password(running: IdentityApp, ann: dict[str, Any]) -> None:
    await enable_mfa(running, ann["headers"])
    off = await running.client.post(
        f"{MFA}/disable", json={"password": PASSWORD}, headers=ann["headers"]
    )
    assert off.status_code == 204
    async with running.platform.database.read_only() as session:
        user_id = uuid.UUID(ann["user"]["id"])
        assert await session.get(Totp, user_id) is None
        assert (
            list(await session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user_id)))
            == []
        )


async def test_regenerate_recovery_codes(running: IdentityApp, ann: dict[str, Any]) -> None:
    headers = ann["headers"]
    enabled = await enable_mfa(running, headers)
    by_recovery = await running.client.post(
        f"{MFA}/recovery-codes", json={"code": enabled["recovery_codes"][0]}, headers=headers
    )
    assert by_recovery.status_code == 403, "new codes need the authenticator itself"
    fresh = await running.client.post(
        f"{MFA}/recovery-codes", json={"code": code(enabled["secret"], 1)}, headers=headers
    )
    assert fresh.status_code == 200
    new_codes = fresh.json()["recovery_codes"]
    assert not set(new_codes) & set(enabled["recovery_codes"])
    old = await code_step(running, await password_step(running), enabled["recovery_codes"][1])
    assert old.status_code == 401
    new = await code_step(running, await password_step(running), new_codes[0])
    assert new.status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/totp/confirm", {}),
        ("/totp/confirm", {"code": 123456}),
        ("/totp/confirm", {"code": "1" * 65}),
        ("/recovery-codes", {"code": "123456", "extra": True}),
    ],
)
async def test_bad_input_is_422(
    running: IdentityApp, ann: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    response = await running.client.post(f"{MFA}{path}", json=body, headers=ann["headers"])
    assert response.status_code == 422


async def test_mfa_routes_need_a_signed_in_user(running: IdentityApp) -> None:
    assert (await running.client.get(MFA)).status_code == 401
    assert (await running.client.post(f"{MFA}/totp")).status_code == 401


async def test_an_undecryptable_secret_is_a_503_not_a_500(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    secret = (await enable_mfa(running, ann["headers"]))["secret"]
    async with running.platform.database.unit_of_work() as session:
        totp = await session.get(Totp, uuid.UUID(ann["user"]["id"]))
        assert totp is not None
        totp.secret = "v1.c2VhbGVkIHVuZGVyIGFub3RoZXIga2V5IGVudGlyZWx5"
    response = await code_step(running, await password_step(running), code(secret, 1))
    assert response.status_code == 503
    assert response.json()["code"] == "mfa_unavailable"


def access_claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


async def test_a_narrowed_login_stays_narrow_through_the_code_step(
    running: IdentityApp, ann: dict[str, Any]
) -> None:
    secret = (await enable_mfa(running, ann["headers"]))["secret"]
    asked = await running.client.post(
        "/api/v1/identity/token", json={**LOGIN, "scope": "blog:article:create"}
    )
    assert asked.status_code == 200, asked.text
    assert asked.json()["mfa_required"] is True
    ok = await code_step(running, asked.json()["challenge"], code(secret, 1))
    assert ok.status_code == 200, ok.text
    tokens = ok.json()
    assert tokens["scope"] == "blog:article:create"
    assert access_claims(tokens["access_token"])["scope"] == "blog:article:create"
    # The refreshed pair keeps the narrowing too.
    refreshed = await running.client.post(
        "/api/v1/identity/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    assert access_claims(refreshed.json()["access_token"])["scope"] == "blog:article:create"
