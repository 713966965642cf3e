"""Brute-force protection on every password check: lockouts, their scope and their end."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from pydantic import ValidationError

from engineroom.identity import mfa
from engineroom.identity.config import IdentitySettings
from engineroom.identity.models import User
from engineroom.identity.throttle import account_key, address_key
from engineroom.settings import Settings
from tests.support.identity_lifecycle import (
    PASSWORD,
    LifecycleApp,
    audit_entries,
    bearer,
    client_at,
    identity_settings,
    lifecycle_app,
    login,
    register,
)

TOKEN = "/api/v1/identity/token"
WRONG = "not the password at all"


async def attempt(
    client: httpx.AsyncClient, email: str = "alice@example.com", password: str = WRONG
) -> httpx.Response:
    return await client.post(TOKEN, json={"email": email, "password": password})


async def statuses(client: httpx.AsyncClient, count: int, **kwargs: str) -> list[int]:
    return [(await attempt(client, **kwargs)).status_code for _ in range(count)]


async def test_failures_lock_the_account_for_that_address_only(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        attacker = client_at(env, "203.0.113.9")
        assert await statuses(attacker, 6) == [401] * 5 + [429]
        locked = await attempt(attacker, password=PASSWORD)
        assert locked.status_code == 429
        assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60
        assert locked.json()["code"] == "rate_limited"
        # The owner, elsewhere, is not locked out.
        owner = client_at(env, "198.51.100.4")
        assert (await attempt(owner, password=PASSWORD)).status_code == 200


async def test_a_success_clears_the_address_counters(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        assert await statuses(env.client, 4) == [401] * 4
        await login(env.client)
        assert await statuses(env.client, 5) == [401] * 5
        assert (await attempt(env.client)).status_code == 429


async def test_one_address_spraying_many_accounts_is_stopped(settings: Settings) -> None:
    limits = identity_settings(login_limit_per_address="4/15 minutes")
    async with lifecycle_app(settings, identity=limits) as env:
        sprayer = client_at(env, "203.0.113.50")
        emails = [f"user{n}@example.com" for n in range(5)]
        results = [(await attempt(sprayer, email=email)).status_code for email in emails]
        assert results == [401, 401, 401, 401, 429]
        assert (await attempt(env.client, email="user9@example.com")).status_code == 401


async def test_the_daily_address_window_is_not_cleared_by_a_success(settings: Settings) -> None:
    limits = identity_settings(
        login_limit_per_address="3/15 minutes", login_limit_per_address_daily="4/day"
    )
    async with lifecycle_app(settings, identity=limits) as env:
        await register(env.client, "mallory")
        emails = [f"victim{n}@example.com" for n in range(5)]
        assert [(await attempt(env.client, email=e)).status_code for e in emails[:2]] == [401] * 2
        await login(env.client, email="mallory@example.com")  # clears the 15-minute window
        results = [(await attempt(env.client, email=e)).status_code for e in emails[2:]]
        assert results == [401, 401, 429]


async def test_a_distributed_attack_cannot_lock_the_owner_out_of_known_places(
    settings: Settings,
) -> None:
    limits = identity_settings(login_limit_per_account="3/hour")
    async with lifecycle_app(settings, identity=limits) as env:
        await register(env.client, "alice")
        home = client_at(env, "198.51.100.4")
        assert (await attempt(home, password=PASSWORD)).status_code == 200
        bots = [client_at(env, f"203.0.113.{n}") for n in range(1, 5)]
        results = [(await attempt(bot)).status_code for bot in bots]
        assert results == [401, 401, 401, 429]
        # A new place waits for the window to decay; the owner's usual place does not.
        new_place = client_at(env, "192.0.2.77")
        assert (await attempt(new_place, password=PASSWORD)).status_code == 429
        assert (await attempt(home, password=PASSWORD)).status_code == 200


async def test_the_lockout_ends_by_itself(settings: Settings) -> None:
    limits = identity_settings(login_limit_per_account_address="2/2 seconds")
    async with lifecycle_app(settings, identity=limits) as env:
        await register(env.client, "alice")
        assert await statuses(env.client, 3) == [401, 401, 429]
        locked = await attempt(env.client, password=PASSWORD)
        assert locked.status_code == 429
        assert int(locked.headers["Retry-After"]) <= 2
        await asyncio.sleep(2.2)
        assert (await attempt(env.client, password=PASSWORD)).status_code == 200


async def test_unknown_accounts_are_limited_exactly_like_known_ones(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        known = await statuses(client_at(env, "203.0.113.1"), 7)
        unknown = await statuses(client_at(env, "203.0.113.2"), 7, email="ghost@example.com")
        assert known == unknown == [401] * 5 + [429, 429]


async def test_a_parallel_burst_learns_no_more_than_the_limit(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        attacker = client_at(env, "203.0.113.9")
        guesses = [WRONG + str(n) for n in range(20)]
        answers = await asyncio.gather(*(attempt(attacker, password=g) for g in guesses))
        codes = [a.status_code for a in answers]
        # All 20 passed the first check at once; only 5 answers say "wrong password".
        assert codes.count(401) == 5
        assert codes.count(429) == 15
        assert (await attempt(attacker, password=PASSWORD)).status_code == 429


async def test_parallel_correct_logins_are_never_refused(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        answers = await asyncio.gather(*(attempt(env.client, password=PASSWORD) for _ in range(16)))
        assert [a.status_code for a in answers] == [200] * 16


async def test_realworld_and_cookie_logins_share_the_limits(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        attacker = client_at(env, "203.0.113.9")
        realworld = "/api/users/login"
        wrong = {"user": {"email": "alice@example.com", "password": WRONG}}
        assert [(await attacker.post(realworld, json=wrong)).status_code for _ in range(3)] == [
            401
        ] * 3
        session_login = {"email": "alice@example.com", "password": WRONG}
        answers = [
            await attacker.post("/api/v1/identity/sessions", json=session_login) for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [401, 401, 429]
        refused = await attacker.post(
            realworld, json={"user": {"email": "alice@example.com", "password": PASSWORD}}
        )
        assert refused.status_code == 429
        assert refused.json() == {"errors": {"body": [refused.json()["errors"]["body"][0]]}}
        assert "Retry-After" in refused.headers


async def test_password_confirmations_count_like_logins(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        _, tokens = await login_user(env)
        headers = bearer(tokens["access_token"])
        answers = [
            await env.client.post(
                "/api/v1/identity/me/delete", json={"password": WRONG}, headers=headers
            )
            for _ in range(6)
        ]
        assert [a.status_code for a in answers] == [403] * 5 + [429]


async def login_user(env: LifecycleApp) -> tuple[dict[str, object], dict[str, str]]:
    user = await register(env.client, "alice")
    return user, await login(env.client)


async def _enable_mfa(env: LifecycleApp, user_id: str) -> str:
    async with env.platform.database.unit_of_work() as session:
        user = await session.get(User, uuid.UUID(user_id))
        assert user is not None
        enrollment = await mfa.begin_enrollment(session, env.platform.settings, user)
        code = mfa.code_at(enrollment.secret, time.time())
        await mfa.confirm_enrollment(session, env.platform, user, code)
    return enrollment.secret


async def test_second_factor_codes_are_limited_per_address(settings: Settings) -> None:
    limits = identity_settings(code_limit_per_address="2/hour")
    async with lifecycle_app(settings, identity=limits) as env:
        user = await register(env.client, "alice")
        secret = await _enable_mfa(env, user["id"])
        challenge = (await attempt(env.client, password=PASSWORD)).json()["challenge"]
        step = "/api/v1/identity/token/mfa"
        answers = [
            await env.client.post(step, json={"challenge": challenge, "code": "000000"})
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [401, 401, 429]
        # Even the right code waits: the address used up its attempts.
        right = mfa.code_at(secret, time.time() + 30)
        refused = await env.client.post(step, json={"challenge": challenge, "code": right})
        assert refused.status_code == 429
        elsewhere = client_at(env, "198.51.100.4")
        ok = await elsewhere.post(step, json={"challenge": challenge, "code": right})
        assert ok.status_code == 200, ok.text
        outcomes = [e.outcome for e in await audit_entries(env, action="mfa.challenge")]
        assert outcomes.count("failure") == 2
        assert outcomes.count("blocked") == 2
        assert outcomes.count("success") == 1


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("", "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_addresses_group_ipv6_networks(host: str, key: str) -> None:
    assert address_key(host) == key


def test_account_keys_ignore_case_and_spaces() -> None:
    assert account_key(" Alice@Example.com ") == account_key("alice@example.com")
    assert account_key("alice@example.com") != account_key("bob@example.com")
    assert "alice" not in account_key("alice@example.com")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("login_limit_per_account", "lots"),
        ("mail_limit_per_address", "0/hour"),
        ("account_links_url", "ftp://example.com"),
        ("reset_password_ttl", "0"),
    ],
)
def test_bad_identity_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValidationError):
        identity_settings(**{name: value})


def test_one_class_reads_every_identity_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Token, lifecycle and limit settings share the prefix and the class.
    monkeypatch.setenv("ENGINEROOM_IDENTITY_ACCESS_TOKEN_TTL", "PT5M")
    monkeypatch.setenv("ENGINEROOM_IDENTITY_RESET_PASSWORD_TTL", "120")
    monkeypatch.setenv("ENGINEROOM_IDENTITY_KNOWN_ADDRESS_TTL", "90.5")
    monkeypatch.setenv("ENGINEROOM_IDENTITY_LOGIN_LIMIT_PER_ADDRESS", "7/hour")
    loaded = IdentitySettings(_env_file=None)  # type: ignore[call-arg]
    assert loaded.access_token_ttl == timedelta(minutes=5)
    assert loaded.reset_password_ttl == timedelta(seconds=120)
    assert loaded.known_address_ttl == timedelta(seconds=90.5)
    assert loaded.login_limit_per_address == "7/hour"
    assert loaded.login_limit_per_account == "50/hour"
    monkeypatch.setenv("ENGINEROOM_IDENTITY_MAIL_LIMIT_PER_ADDRESS", "often")
    monkeypatch.setenv("ENGINEROOM_IDENTITY_VERIFY_EMAIL_TTL", "-5")
    with pytest.raises(ValidationError) as refused:
        IdentitySettings(_env_file=None)  # type: ignore[call-arg]
    assert {error["loc"][0] for error in refused.value.errors()} == {
        "mail_limit_per_address",
        "verify_email_ttl",
    }


def test_links_come_from_configuration_only(settings: Settings) -> None:
    assert identity_settings().links_base(settings) is None
    public = settings.model_copy(update={"public_url": "https://app.example/"})
    assert identity_settings().links_base(public) == "https://app.example/account"
    own = identity_settings(account_links_url="https://accounts.example/x/")
    assert own.links_base(public) == "https://accounts.example/x"
