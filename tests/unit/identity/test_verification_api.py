"""Password reset and email verification: mailed single-use tokens, end to end."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from engineroom.core.clock import utcnow
from engineroom.identity.models import OneTimeToken, RefreshToken
from engineroom.settings import Settings
from tests.support.identity_lifecycle import (
    PASSWORD,
    LifecycleApp,
    audit_entries,
    bearer,
    body_of,
    client_at,
    identity_settings,
    lifecycle_app,
    login,
    mail_count,
    register,
    settle,
    token_in,
    user_with_tokens,
    wait_for_mails,
)

FORGOT = "/api/v1/identity/password/forgot"
RESET = "/api/v1/identity/password/reset"
VERIFICATION = "/api/v1/identity/email/verification"
VERIFY = "/api/v1/identity/email/verify"
NEW_PASSWORD = "a brand new passphrase"


async def browser_session(env: LifecycleApp, email: str) -> httpx.AsyncClient:
    browser = client_at(env, "127.0.0.1")
    signed_in = await browser.post(
        "/api/v1/identity/sessions", json={"email": email, "password": PASSWORD}
    )
    assert signed_in.status_code == 201, signed_in.text
    assert (await browser.get("/api/v1/identity/sessions")).status_code == 200
    return browser


async def reset_token(env: LifecycleApp, email: str, *, mails_before: int = 0) -> str:
    response = await env.client.post(FORGOT, json={"email": email})
    assert response.status_code == 202, response.text
    mails = await wait_for_mails(env, mails_before + 1)
    return token_in(mails[-1])


async def test_password_reset_ends_every_sign_in_and_works_once(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        user, tokens = await user_with_tokens(env, "alice")
        browser = await browser_session(env, "alice@example.com")

        response = await env.client.post(FORGOT, json={"email": "  ALICE@example.com "})
        assert response.status_code == 202
        [mail] = await wait_for_mails(env, 1)
        assert mail["To"] == "alice@example.com"
        assert mail["Subject"] == "Reset your password"
        token = token_in(mail)
        assert f"http://test/account/reset-password?token={token}" in body_of(mail)

        # Stored hashed only.
        async with env.platform.database.read_only() as session:
            stored = await session.scalar(select(OneTimeToken.token_hash))
        assert stored == hashlib.sha256(token.encode()).hexdigest()

        reset = await env.client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
        assert reset.status_code == 204, reset.text

        # Every refresh token and session of the account has ended.
        refused = await env.client.post(
            "/api/v1/identity/token/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refused.status_code == 401
        assert (await browser.get("/api/v1/identity/sessions")).status_code == 401
        async with env.platform.database.read_only() as session:
            live = await session.scalars(
                select(RefreshToken).where(RefreshToken.revoked_at.is_(None))
            )
            assert list(live) == []

        old = await env.client.post(
            "/api/v1/identity/token", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert old.status_code == 401
        await login(env.client, email="alice@example.com", password=NEW_PASSWORD)

        again = await env.client.post(RESET, json={"token": token, "new_password": "x" * 20})
        assert again.status_code == 400
        assert again.json()["code"] == "one_time_token_invalid"
        assert "already been used" in again.json()["detail"]

        # The reset proved the mailbox.
        me = await env.client.get(
            "/api/v1/identity/me",
            headers=bearer(
                (await login(env.client, "alice@example.com", NEW_PASSWORD))["access_token"]
            ),
        )
        assert me.json()["email_verified"] is True
        actions = [e.action for e in await audit_entries(env, user_id=user["id"])]
        assert "password.reset_request" in actions
        assert "password.reset" in actions


def _comparable(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    varying = {"date", "x-request-id", "ratelimit-reset", "traceparent"}
    headers = {k: v for k, v in response.headers.items() if k.lower() not in varying}
    return response.status_code, response.content, headers


async def test_reset_for_an_unknown_email_answers_exactly_like_a_known_one(
    settings: Settings,
) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        known = await env.client.post(FORGOT, json={"email": "alice@example.com"})
        unknown = await env.client.post(FORGOT, json={"email": "nobody@example.com"})
        assert _comparable(known) == _comparable(unknown)
        assert known.status_code == 202
        await settle(env)
        assert mail_count(env) == 1
        entries = await audit_entries(env, action="password.reset_request")
        outcomes = sorted((e.outcome, (e.details or {}).get("email")) for e in entries)
        assert outcomes == [("failure", "nobody@example.com"), ("success", None)]


async def test_the_mail_limit_treats_unknown_emails_like_known_ones(settings: Settings) -> None:
    limits = identity_settings(mail_limit_per_recipient="2/hour")
    async with lifecycle_app(settings, identity=limits) as env:
        await register(env.client, "alice")
        for email in ("alice@example.com", "ghost@example.com"):
            statuses = [
                (await env.client.post(FORGOT, json={"email": email})).status_code for _ in range(3)
            ]
            assert statuses == [202, 202, 429]
        refused = await env.client.post(FORGOT, json={"email": "ghost@example.com"})
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["code"] == "rate_limited"


async def test_an_expired_reset_link_is_refused(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        token = await reset_token(env, "alice@example.com")
        async with env.platform.database.unit_of_work() as session:
            await session.execute(
                update(OneTimeToken).values(expires_at=utcnow() - timedelta(seconds=1))
            )
        expired = await env.client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
        assert expired.status_code == 400
        assert expired.json()["code"] == "one_time_token_expired"
        await login(env.client, email="alice@example.com")


async def test_a_refused_password_keeps_the_link_working(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        token = await reset_token(env, "alice@example.com")
        weak = await env.client.post(RESET, json={"token": token, "new_password": "password1"})
        assert weak.status_code == 422
        [error] = weak.json()["errors"]
        assert error["field"] == "new_password"
        assert error["message"].startswith("is too common")
        done = await env.client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
        assert done.status_code == 204


async def test_only_the_newest_reset_link_works(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        first = await reset_token(env, "alice@example.com")
        second = await reset_token(env, "alice@example.com", mails_before=1)
        assert first != second
        stale = await env.client.post(RESET, json={"token": first, "new_password": NEW_PASSWORD})
        assert stale.status_code == 400
        fresh = await env.client.post(RESET, json={"token": second, "new_password": NEW_PASSWORD})
        assert fresh.status_code == 204


async def test_a_disabled_account_gets_no_reset_mail(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        user = await register(env.client, "alice")
        async with env.platform.database.unit_of_work() as session:
            from engineroom.identity.models import User

            await session.execute(
                update(User).where(User.id == uuid.UUID(user["id"])).values(disabled_at=utcnow())
            )
        response = await env.client.post(FORGOT, json={"email": "alice@example.com"})
        assert response.status_code == 202
        await settle(env)
        assert mail_count(env) == 0


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        (FORGOT, {}),
        (FORGOT, {"email": ""}),
        (FORGOT, {"email": "not an email"}),
        (FORGOT, {"email": "a@example.com", "extra": 1}),
        (FORGOT, {"email": "a" * 400 + "@example.com"}),
        (RESET, {"token": "t"}),
        (RESET, {"new_password": NEW_PASSWORD}),
        (RESET, {"token": "t" * 201, "new_password": NEW_PASSWORD}),
        (RESET, {"token": "", "new_password": NEW_PASSWORD}),
        (VERIFY, {}),
        (VERIFY, {"token": ["a"]}),
    ],
)
async def test_bad_input_is_a_422(settings: Settings, path: str, payload: object) -> None:
    async with lifecycle_app(settings) as env:
        response = await env.client.post(path, json=payload)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("token", ["nonsense", "x" * 200, "ert_" + "a" * 43])
async def test_unknown_tokens_are_a_400(settings: Settings, token: str) -> None:
    async with lifecycle_app(settings) as env:
        reset = await env.client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
        verify = await env.client.post(VERIFY, json={"token": token})
        for response in (reset, verify):
            assert response.status_code == 400
            assert response.json()["code"] == "one_time_token_invalid"
        failures = await audit_entries(env, action="password.reset")
        assert [e.outcome for e in failures] == ["failure"]


async def test_token_redemption_is_rate_limited(settings: Settings) -> None:
    limits = identity_settings(token_limit_per_address="3/hour")
    async with lifecycle_app(settings, identity=limits) as env:
        statuses = [
            (await env.client.post(VERIFY, json={"token": f"guess-{n}"})).status_code
            for n in range(4)
        ]
        assert statuses == [400, 400, 400, 429]


async def test_email_verification(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        user, tokens = await user_with_tokens(env, "alice")
        headers = bearer(tokens["access_token"])
        assert (await env.client.post(VERIFICATION)).status_code == 401

        asked = await env.client.post(VERIFICATION, headers=headers)
        assert asked.status_code == 202, asked.text
        [mail] = await wait_for_mails(env, 1)
        assert mail["To"] == "alice@example.com"
        assert mail["Subject"] == "Verify your email address"
        token = token_in(mail)
        assert f"http://test/account/verify-email?token={token}" in body_of(mail)

        verified = await env.client.post(VERIFY, json={"token": token})
        assert verified.status_code == 200
        assert verified.json() == {"email": "alice@example.com", "email_verified": True}
        me = await env.client.get("/api/v1/identity/me", headers=headers)
        assert me.json()["email_verified"] is True

        twice = await env.client.post(VERIFY, json={"token": token})
        assert twice.status_code == 400
        already = await env.client.post(VERIFICATION, headers=headers)
        assert already.status_code == 409
        assert already.json()["code"] == "email_already_verified"
        actions = [e.action for e in await audit_entries(env, user_id=user["id"])]
        assert actions.count("email.verify") == 1
        assert "email.verification_request" in actions


async def test_a_reset_token_does_not_verify_an_email(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        token = await reset_token(env, "alice@example.com")
        response = await env.client.post(VERIFY, json={"token": token})
        assert response.status_code == 400
        # ... and is not used up by the attempt.
        done = await env.client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
        assert done.status_code == 204


async def test_without_a_public_url_the_mail_carries_the_token_only(settings: Settings) -> None:
    async with lifecycle_app(settings, public_url=None) as env:
        await register(env.client, "alice")
        token = await reset_token(env, "alice@example.com")
        [mail] = await wait_for_mails(env, 1)
        assert token in body_of(mail)
        assert "http" not in body_of(mail)
