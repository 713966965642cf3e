"""The RealWorld (Conduit) user endpoints, to that spec's shapes and status codes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import delete, select, update

from engineroom.core.clock import utcnow
from engineroom.identity import accounts, profile_cache, repository
from engineroom.identity.config import identity_settings
from engineroom.identity.models import User
from engineroom.settings import Settings
from tests.support.identity import PASSWORD, bearer, identity_app, login, register

USER_KEYS = {"email", "token", "username", "bio", "image"}


def token_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def rw_register(
    client: httpx.AsyncClient, username: str = "jake", **extra: Any
) -> httpx.Response:
    user = {"username": username, "email": f"{username}@jake.jake", "password": PASSWORD} | extra
    return await client.post("/api/users", json={"user": user})


async def test_register_login_and_current_user(settings: Settings) -> None:
    async with identity_app(settings) as env:
        created = await rw_register(env.client)
        assert created.status_code == 201
        user = created.json()["user"]
        assert set(user) == USER_KEYS
        assert user["username"] == "jake"
        assert user["email"] == "jake@jake.jake"
        assert user["bio"] is None
        assert user["image"] is None

        logged_in = await env.client.post(
            "/api/users/login", json={"user": {"email": "JAKE@jake.jake", "password": PASSWORD}}
        )
        assert logged_in.status_code == 200
        token = logged_in.json()["user"]["token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["username"] == "jake"
        assert claims["exp"] - claims["iat"] == 24 * 3600

        for header in (token_header(token), {"Authorization": f"Bearer {token}"}):
            current = await env.client.get("/api/user", headers=header)
            assert current.status_code == 200
            assert current.json() == {
                "user": {
                    "email": "jake@jake.jake",
                    "token": token,
                    "username": "jake",
                    "bio": None,
                    "image": None,
                }
            }


async def test_native_tokens_work_on_realworld_routes(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        native = await login(env.client)
        current = await env.client.get("/api/user", headers=token_header(native["access_token"]))
    assert current.status_code == 200
    assert current.json()["user"]["username"] == "alice"


async def test_update_user(settings: Settings) -> None:
    async with identity_app(settings) as env:
        token = (await rw_register(env.client)).json()["user"]["token"]
        await rw_register(env.client, "taken")
        updated = await env.client.put(
            "/api/user",
            json={
                "user": {
                    "email": "New@Jake.jake",
                    "username": "jacob",
                    "bio": "I like to skateboard",
                    "image": "https://i.stack.imgur.com/xHWG8.jpg",
                    "password": "a different passphrase",
                }
            },
            headers=token_header(token),
        )
        assert updated.status_code == 200, updated.text
        user = updated.json()["user"]
        assert user["email"] == "new@jake.jake"
        assert user["username"] == "jacob"
        assert user["bio"] == "I like to skateboard"
        # A new token naming the new username.
        assert jwt.decode(user["token"], options={"verify_signature": False})["username"] == "jacob"
        cleared = await env.client.put(
            "/api/user", json={"user": {"bio": None, "image": ""}}, headers=token_header(token)
        )
        assert cleared.json()["user"]["bio"] is None
        assert cleared.json()["user"]["image"] is None
        old_password = await env.client.post(
            "/api/users/login", json={"user": {"email": "new@jake.jake", "password": PASSWORD}}
        )
        new_password = await env.client.post(
            "/api/users/login",
            json={"user": {"email": "new@jake.jake", "password": "a different passphrase"}},
        )
        taken = await env.client.put(
            "/api/user", json={"user": {"username": "TAKEN"}}, headers=token_header(token)
        )
        taken_email = await env.client.put(
            "/api/user", json={"user": {"email": "taken@jake.jake"}}, headers=token_header(token)
        )
        blank = await env.client.put(
            "/api/user", json={"user": {"email": ""}}, headers=token_header(token)
        )
        weak = await env.client.put(
            "/api/user", json={"user": {"password": "12345678"}}, headers=token_header(token)
        )
    assert old_password.status_code == 401
    assert new_password.status_code == 200
    assert taken.status_code == 422
    assert taken.json() == {"errors": {"username": ["has already been taken"]}}
    assert taken_email.json() == {"errors": {"email": ["has already been taken"]}}
    assert blank.status_code == 422
    assert blank.json() == {"errors": {"email": ["can't be blank"]}}
    assert weak.status_code == 422
    assert list(weak.json()["errors"]) == ["password"]


@pytest.mark.parametrize(
    ("extra", "errors"),
    [
        ({"email": ""}, {"email": ["can't be blank"]}),
        ({"username": None}, {"username": ["can't be blank"]}),
        ({"password": "  "}, {"password": ["can't be blank"]}),
        ({"email": "nope"}, {"email": ["is invalid"]}),
        ({"password": "short"}, {"password": ["is too short (minimum is 8 characters)"]}),
    ],
)
async def test_register_errors_use_the_errors_object(
    settings: Settings, extra: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    async with identity_app(settings) as env:
        response = await rw_register(env.client, **extra)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"errors": errors}


async def test_register_taken_and_malformed(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await rw_register(env.client)
        taken = await rw_register(env.client)
        name_taken = await rw_register(env.client, email="other@jake.jake")
        no_wrapper = await env.client.post("/api/users", json={"username": "x"})
        not_json = await env.client.post(
            "/api/users", content=b"{", headers={"content-type": "application/json"}
        )
    assert taken.status_code == 422
    assert taken.json() == {"errors": {"email": ["has already been taken"]}}
    assert name_taken.json() == {"errors": {"username": ["has already been taken"]}}
    assert no_wrapper.status_code == 422
    assert "errors" in no_wrapper.json()
    assert not_json.status_code == 422
    assert "errors" in not_json.json()


async def test_login_failures(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await rw_register(env.client)
        wrong = await env.client.post(
            "/api/users/login", json={"user": {"email": "jake@jake.jake", "password": "wrong!!!"}}
        )
        unknown = await env.client.post(
            "/api/users/login", json={"user": {"email": "nobody@jake.jake", "password": "wrong!!!"}}
        )
        blank = await env.client.post("/api/users/login", json={"user": {"email": "a@b.c"}})
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json() == {"errors": {"email or password": ["is invalid"]}}
    assert blank.status_code == 422
    assert blank.json() == {"errors": {"password": ["can't be blank"]}}


async def test_current_user_needs_a_valid_token(settings: Settings) -> None:
    async with identity_app(settings) as env:
        missing = await env.client.get("/api/user")
        bad = await env.client.get("/api/user", headers=token_header("garbage"))
        scheme = await env.client.get("/api/user", headers={"Authorization": "Basic x"})
        put = await env.client.put("/api/user", json={"user": {"bio": "x"}})
    for response in (missing, bad, scheme, put):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/json"
        assert list(response.json()["errors"]) == ["body"]


async def test_native_api_keeps_problem_documents(settings: Settings) -> None:
    async with identity_app(settings) as env:
        response = await env.client.get("/api/v1/identity/me")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_current_user_reflects_changes_at_once(settings: Settings) -> None:
    async with identity_app(settings) as env:
        token = (await rw_register(env.client)).json()["user"]["token"]
        before = await env.client.get("/api/user", headers=token_header(token))
        await env.client.put(
            "/api/user", json={"user": {"bio": "new bio"}}, headers=token_header(token)
        )
        native = await env.client.patch(
            "/api/v1/identity/me", json={"image": "https://x.io/a.png"}, headers=bearer(token)
        )
        after = await env.client.get("/api/user", headers=token_header(token))
    assert before.json()["user"]["bio"] is None
    assert native.status_code == 200
    assert after.json()["user"]["bio"] == "new bio"
    assert after.json()["user"]["image"] == "https://x.io/a.png"


async def test_current_user_of_a_deleted_or_disabled_account(settings: Settings) -> None:
    async with identity_app(settings) as env:
        token = (await rw_register(env.client)).json()["user"]["token"]
        async with env.platform.database.unit_of_work() as session:
            await session.execute(update(User).values(disabled_at=utcnow()))
        disabled = await env.client.get("/api/user", headers=token_header(token))
        async with env.platform.database.unit_of_work() as session:
            await session.execute(delete(User))
        await env.platform.cache.clear()
        deleted = await env.client.get("/api/user", headers=token_header(token))
    assert disabled.status_code == 403
    assert deleted.status_code == 401


async def test_profile_changes_from_any_caller_reach_current_user(settings: Settings) -> None:
    async with identity_app(settings) as env:
        token = (await rw_register(env.client)).json()["user"]["token"]
        assert (await env.client.get("/api/user", headers=token_header(token))).status_code == 200
        async with env.platform.database.unit_of_work() as session:
            user = (await session.scalars(select(User))).one()
            await accounts.update_profile(
                session,
                identity_settings(env.settings),
                user,
                accounts.ProfileChanges(bio="changed elsewhere"),
            )
        for _ in range(5):
            await asyncio.sleep(0)
        after = await env.client.get("/api/user", headers=token_header(token))
    assert after.json()["user"]["bio"] == "changed elsewhere"


async def test_concurrent_misses_of_one_profile_share_one_read(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with identity_app(settings) as env:
        token = (await rw_register(env.client)).json()["user"]["token"]
        user_id = uuid.UUID(jwt.decode(token, options={"verify_signature": False})["sub"])
        await profile_cache.forget(env.platform, user_id)
        reads: list[uuid.UUID] = []
        original = repository.user_by_id

        async def counting(session: Any, wanted: uuid.UUID) -> Any:
            reads.append(wanted)
            await asyncio.sleep(0.02)  # the other requests miss meanwhile
            return await original(session, wanted)

        monkeypatch.setattr(repository, "user_by_id", counting)
        answers = await asyncio.gather(
            *(env.client.get("/api/user", headers=token_header(token)) for _ in range(12))
        )
        assert [answer.status_code for answer in answers] == [200] * 12
        assert {answer.json()["user"]["username"] for answer in answers} == {"jake"}
        assert reads == [user_id]

        # A caller that goes away does not cancel the read the others wait for.
        await profile_cache.forget(env.platform, user_id)
        first = asyncio.ensure_future(profile_cache.profile(env.platform, user_id))
        second = asyncio.ensure_future(profile_cache.profile(env.platform, user_id))
        await asyncio.sleep(0.005)
        first.cancel()
        found = await second
        assert found is not None
        assert found.username == "jake"
        assert reads == [user_id, user_id]
