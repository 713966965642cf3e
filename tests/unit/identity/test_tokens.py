"""Access tokens: claims, verification, the classic JWT attacks, key rotation and JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from engineroom.core.auth import Principal
from engineroom.identity import keys, public
from engineroom.identity.errors import TokenExpired, TokenInvalid
from engineroom.identity.keys import key_ring
from engineroom.identity.models import SigningKey
from engineroom.identity.tokens import issue_access_token
from engineroom.settings import Settings
from tests.support.identity import (
    PASSWORD,
    IdentityApp,
    bearer,
    fast_identity_settings,
    identity_app,
    login,
    register,
)

ME = "/api/v1/identity/me"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _signing_key(env: IdentityApp) -> tuple[str, Ed25519PrivateKey]:
    return await key_ring(env.platform).signer()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "engineroom",
        "aud": "engineroom",
        "sub": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j1",
        "username": "mallory",
        "roles": ["admin"],
        "perms": ["*"],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def _forge(env: IdentityApp, **overrides: Any) -> str:
    kid, private_key = await _signing_key(env)
    return jwt.encode(_claims(**overrides), private_key, algorithm="EdDSA", headers={"kid": kid})


async def test_issued_token_carries_the_contract_claims(settings: Settings) -> None:
    async with identity_app(settings) as env:
        user = await register(env.client, "alice")
        tokens = await login(env.client, scope="blog:article:create")
        header = jwt.get_unverified_header(tokens["access_token"])
        claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
        principal = await public.verify_access_token(env.platform, tokens["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["kid"]
    assert claims["iss"] == "engineroom"
    assert claims["aud"] == "engineroom"
    assert claims["sub"] == user["id"]
    assert claims["username"] == "alice"
    assert claims["roles"] == ["member"]
    assert claims["perms"] == []
    assert claims["scope"] == "blog:article:create"
    assert claims["exp"] - claims["iat"] == 900
    assert principal == Principal(
        subject=user["id"],
        kind="user",
        username="alice",
        roles=frozenset({"member"}),
        permissions=frozenset(),
        scopes=frozenset({"blog:article:create"}),
        credential_id=claims["jti"],
        via="bearer",
    )


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"exp": int(time.time()) - 120}, TokenExpired),
        ({"nbf": int(time.time()) + 600}, TokenInvalid),
        ({"iat": int(time.time()) + 600}, TokenInvalid),
        ({"aud": "someone-else"}, TokenInvalid),
        ({"iss": "https://evil.example"}, TokenInvalid),
        ({"exp": None}, TokenInvalid),
        ({"sub": None}, TokenInvalid),
        ({"jti": None}, TokenInvalid),
        ({"sub": "not-a-uuid"}, TokenInvalid),
        ({"roles": "admin"}, TokenInvalid),
        ({"perms": [1]}, TokenInvalid),
        ({"username": None}, TokenInvalid),
        ({"scope": ["a"]}, TokenInvalid),
    ],
)
async def test_bad_claims_are_refused(
    settings: Settings, overrides: dict[str, Any], error: type[Exception]
) -> None:
    async with identity_app(settings) as env:
        token = await _forge(env, **overrides)
        with pytest.raises(error):
            await public.verify_access_token(env.platform, token)
        response = await env.client.get(ME, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["code"] == error.code  # type: ignore[attr-defined]


async def test_alg_none_is_refused(settings: Settings) -> None:
    async with identity_app(settings) as env:
        kid, _ = await _signing_key(env)
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
        token = f"{header}.{_b64(json.dumps(_claims()).encode())}."
        with pytest.raises(TokenInvalid):
            await public.verify_access_token(env.platform, token)
        response = await env.client.get(ME, headers=bearer(token))
    assert response.status_code == 401


async def test_hs256_signed_with_the_public_key_is_refused(settings: Settings) -> None:
    async with identity_app(settings) as env:
        kid, private_key = await _signing_key(env)
        public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        raw_public = base64.urlsafe_b64decode(
            (await env.client.get("/.well-known/jwks.json")).json()["keys"][0]["x"] + "=="
        )
        for secret in (public_pem, raw_public):
            header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
            body = _b64(json.dumps(_claims()).encode())
            signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
            token = f"{header}.{body}.{_b64(signature)}"
            with pytest.raises(TokenInvalid):
                await public.verify_access_token(env.platform, token)


async def test_foreign_keys_and_tampering_are_refused(settings: Settings) -> None:
    async with identity_app(settings) as env:
        kid, _ = await _signing_key(env)
        stranger = Ed25519PrivateKey.generate()
        same_kid = jwt.encode(_claims(), stranger, algorithm="EdDSA", headers={"kid": kid})
        unknown_kid = jwt.encode(_claims(), stranger, algorithm="EdDSA", headers={"kid": "nope"})
        no_kid = jwt.encode(_claims(), stranger, algorithm="EdDSA")
        genuine = await _forge(env)
        head, _, signature = genuine.split(".")
        claims = _claims(perms=["*", "more"])
        tampered = f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"
        for token in (same_kid, unknown_kid, no_kid, tampered, "a.b", "", "a.b.c"):
            with pytest.raises(TokenInvalid):
                await public.verify_access_token(env.platform, token)
        assert (await public.verify_access_token(env.platform, genuine)).username == "mallory"


async def test_verification_does_not_query_the_database(settings: Settings) -> None:
    async with identity_app(settings) as env:
        token = await _forge(env)
        await public.verify_access_token(env.platform, token)
        await env.platform.database.dispose()  # any query would now reconnect; forbid it

        def refuse(*_args: Any, **_kwargs: Any) -> None:
            raise AssertionError("verification queried the database")

        env.platform.database.unit_of_work = refuse  # type: ignore[method-assign]
        env.platform.database.read_only = refuse  # type: ignore[method-assign]
        principal = await public.verify_access_token(env.platform, token)
    assert principal.permissions == frozenset({"*"})


async def test_rotation_keeps_old_tokens_valid_until_they_expire(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        old_token = (await login(env.client))["access_token"]
        old_kid = jwt.get_unverified_header(old_token)["kid"]
        async with env.platform.database.unit_of_work() as session:
            fresh = await keys.rotate(session, env.settings)
        await key_ring(env.platform).reload()
        new_token = (await login(env.client))["access_token"]
        jwks = (await env.client.get("/.well-known/jwks.json")).json()
        assert jwt.get_unverified_header(new_token)["kid"] == fresh.kid != old_kid
        assert {key["kid"] for key in jwks["keys"]} == {old_kid, fresh.kid}
        for token in (old_token, new_token):
            assert (await env.client.get(ME, headers=bearer(token))).status_code == 200

        # Past the retired key's expiry it neither verifies nor is published.
        async with env.platform.database.unit_of_work() as session:
            row = await session.get(SigningKey, old_kid)
            assert row is not None
            assert row.retired_at is not None
            assert row.expires_at is not None
            assert row.expires_at - row.retired_at >= keys.EXPIRY_MARGIN
            row.expires_at = row.retired_at
        await key_ring(env.platform).reload()
        refused = await env.client.get(ME, headers=bearer(old_token))
        jwks = (await env.client.get("/.well-known/jwks.json")).json()
    assert refused.status_code == 401
    assert [key["kid"] for key in jwks["keys"]] == [fresh.kid]


async def test_a_key_made_by_another_process_is_found(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with identity_app(settings) as env:
        ring = key_ring(env.platform)
        await ring.signer()
        reloads: list[bool] = []
        original = ring.reload

        async def counting(*, create: bool = False) -> None:
            reloads.append(create)
            await original(create=create)

        monkeypatch.setattr(ring, "reload", counting)
        async with env.platform.database.unit_of_work() as session:
            fresh = await keys.rotate(session, env.settings)
        private_key = keys._load(env.settings, fresh).private_key
        assert private_key is not None
        token = jwt.encode(_claims(), private_key, algorithm="EdDSA", headers={"kid": fresh.kid})

        # Unknown kids right after a load do not reach the database (forged kids cannot
        # flood it); once the short interval has passed, an unknown kid makes it look.
        for _ in range(5):
            with pytest.raises(TokenInvalid):
                await public.verify_access_token(env.platform, token)
        assert reloads == []
        monkeypatch.setattr(keys, "MISS_RELOAD_INTERVAL", 0.0)
        principal = await public.verify_access_token(env.platform, token)
        assert reloads == [False]
    assert principal.username == "mallory"


async def test_first_start_creates_exactly_one_key_and_restarts_keep_it(settings: Settings) -> None:
    async with identity_app(settings) as env:
        token = await issue_access_token(
            env.platform, user_id=uuid.uuid4(), username="x", roles=[], permissions=[]
        )
    async with identity_app(settings) as env:
        async with env.platform.database.read_only() as session:
            stored = [row.private_key for row in await session.scalars(select(SigningKey))]
        principal = await public.verify_access_token(env.platform, token.token)
    assert len(stored) == 1
    assert stored[0].startswith("v1.")
    assert "PRIVATE KEY" not in stored[0]
    assert principal.username == "x"


async def test_jwks_lists_public_keys_only(settings: Settings) -> None:
    async with identity_app(settings) as env:
        response = await env.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert set(key) == {"kty", "crv", "x", "kid", "alg"}
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert "max-age" in response.headers["cache-control"]


async def test_reloading_keys_inside_a_write_transaction_does_not_deadlock(
    settings: Settings,
) -> None:
    # RealWorld registration signs its token while the request holds the SQLite write lock;
    # a stale key cache must reload without needing that lock.
    config = fast_identity_settings(signing_key_cache_seconds=0.01)
    async with identity_app(settings, config) as env:
        for name in ("jake", "jane", "jim"):
            await asyncio.sleep(0.02)
            response = await env.client.post(
                "/api/users",
                json={"user": {"username": name, "email": f"{name}@x.io", "password": PASSWORD}},
            )
            assert response.status_code == 201, response.text


async def test_requests_meeting_a_stale_key_cache_share_one_reload(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fast_identity_settings(signing_key_cache_seconds=0.05)
    async with identity_app(settings, config) as env:
        ring = key_ring(env.platform)
        kid, _ = await ring.signer()
        reads: list[str] = []
        original = keys.verifying_rows

        async def counting(session: Any) -> list[SigningKey]:
            reads.append("x")
            await asyncio.sleep(0.01)  # let the other callers queue behind this read
            return await original(session)

        monkeypatch.setattr(keys, "verifying_rows", counting)
        await asyncio.sleep(0.06)  # the cache is stale now
        found = await asyncio.gather(*(ring.verifier(kid) for _ in range(20)))
        assert all(key is not None and key.kid == kid for key in found)
        assert reads == ["x"]
        # A later staleness reads again (once).
        await asyncio.sleep(0.06)
        await asyncio.gather(*(ring.verifier(kid) for _ in range(5)))
        assert reads == ["x", "x"]


async def test_a_verified_token_is_remembered_until_it_expires(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with identity_app(settings) as env:
        token = await _forge(env)
        first = await public.verify_access_token(env.platform, token)
        # Past exp but inside the clock-skew leeway: accepted, never served from memory.
        lenient = await _forge(env, exp=int(time.time()) - 5)
        await public.verify_access_token(env.platform, lenient)
        expired = await _forge(env, exp=int(time.time()) - 60)
        decoded: list[str] = []
        original = jwt.decode

        def counting(*args: Any, **kwargs: Any) -> Any:
            decoded.append("x")
            return original(*args, **kwargs)

        monkeypatch.setattr(jwt, "decode", counting)
        assert await public.verify_access_token(env.platform, token) == first
        assert decoded == []
        await public.verify_access_token(env.platform, lenient)
        assert decoded == ["x"]
        with pytest.raises(TokenExpired):
            await public.verify_access_token(env.platform, expired)
    assert len(decoded) == 2
