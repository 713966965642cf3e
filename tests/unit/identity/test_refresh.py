"""Refresh tokens: rotation, reuse detection, the grace window, logout and expiry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
from sqlalchemy import select, update

from engineroom.core.clock import utcnow
from engineroom.identity import rbac
from engineroom.identity.crypto import hash_token
from engineroom.identity.models import RefreshToken, User
from engineroom.settings import Settings
from tests.support.identity import (
    IdentityApp,
    bearer,
    fast_identity_settings,
    identity_app,
    login,
    register,
)

REFRESH = "/api/v1/identity/token/refresh"
LOGOUT = "/api/v1/identity/logout"
ME = "/api/v1/identity/me"


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


async def _family(env: IdentityApp, token: str) -> list[SimpleNamespace]:
    """The token's family, oldest first, as plain values."""
    async with env.platform.database.read_only() as session:
        row = (
            await session.scalars(
                select(RefreshToken).where(RefreshToken.token_hash == hash_token(token))
            )
        ).one()
        rows = await session.scalars(
            select(RefreshToken)
            .where(RefreshToken.family_id == row.family_id)
            .order_by(RefreshToken.created_at, RefreshToken.id)
        )
        columns = RefreshToken.__table__.columns.keys()
        return [SimpleNamespace(**{name: getattr(r, name) for name in columns}) for r in rows]


async def _age_rotation(env: IdentityApp, seconds: float) -> None:
    """Move every rotation ``seconds`` into the past (leaving the grace window)."""
    async with env.platform.database.unit_of_work() as session:
        for row in await session.scalars(select(RefreshToken)):
            if row.rotated_at is not None:
                row.rotated_at = row.rotated_at - timedelta(seconds=seconds)


async def test_refresh_rotates_and_keeps_the_family(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        first = await login(env.client, scope="blog:article:create")
        second = await _refresh(env.client, first["refresh_token"])
        assert second.status_code == 200, second.text
        pair = second.json()
        assert pair["refresh_token"] != first["refresh_token"]
        assert pair["access_token"] != first["access_token"]
        assert pair["scope"] == "blog:article:create"
        # Rotation does not extend the login: the family keeps its first expiry.
        assert pair["refresh_expires_in"] <= first["refresh_expires_in"]
        me = await env.client.get(ME, headers=bearer(pair["access_token"]))
        assert me.status_code == 200
        family = await _family(env, pair["refresh_token"])
        stored = [row.token_hash for row in family]
    assert len(family) == 2
    assert family[0].rotated_at is not None
    assert family[0].successor_id == family[1].id
    assert family[1].parent_id == family[0].id
    assert family[0].grace_pair is not None
    assert not family[0].grace_pair.startswith("{")  # encrypted, not the tokens in clear
    assert first["refresh_token"] not in stored  # only hashes are stored
    assert stored[0] == hash_token(first["refresh_token"])


async def test_reuse_after_the_grace_window_revokes_the_family(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        first = await login(env.client)
        other_login = await login(env.client)
        second = (await _refresh(env.client, first["refresh_token"])).json()
        await _age_rotation(env, 11)
        reused = await _refresh(env.client, first["refresh_token"])
        assert reused.status_code == 401
        assert reused.json()["code"] == "refresh_token_invalid"
        # The thief's copy and the legitimate newest token are both dead now.
        latest = await _refresh(env.client, second["refresh_token"])
        family = await _family(env, second["refresh_token"])
        unrelated = await _refresh(env.client, other_login["refresh_token"])
    assert latest.status_code == 401
    assert all(row.revoked_at is not None for row in family)
    assert all(row.grace_pair is None for row in family)
    assert unrelated.status_code == 200


async def test_concurrent_refreshes_get_the_same_pair(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        first = await login(env.client)
        responses = await asyncio.gather(
            _refresh(env.client, first["refresh_token"]),
            _refresh(env.client, first["refresh_token"]),
        )
        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        a, b = (r.json() for r in responses)
        assert a["refresh_token"] == b["refresh_token"]
        assert a["access_token"] == b["access_token"]
        # Either tab goes on refreshing normally; the family is intact.
        onwards = await _refresh(env.client, a["refresh_token"])
        family = await _family(env, a["refresh_token"])
    assert onwards.status_code == 200
    assert len(family) == 3
    assert all(row.revoked_at is None for row in family)


async def test_grace_window_is_configurable(settings: Settings) -> None:
    async with identity_app(settings, fast_identity_settings(refresh_grace_seconds=0)) as env:
        await register(env.client, "alice")
        first = await login(env.client)
        assert (await _refresh(env.client, first["refresh_token"])).status_code == 200
        await _age_rotation(env, 0.001)
        again = await _refresh(env.client, first["refresh_token"])
    assert again.status_code == 401


async def test_logout_revokes_the_family(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        first = await login(env.client)
        second = (await _refresh(env.client, first["refresh_token"])).json()
        out = await env.client.post(LOGOUT, json={"refresh_token": second["refresh_token"]})
        again = await env.client.post(LOGOUT, json={"refresh_token": second["refresh_token"]})
        unknown = await env.client.post(LOGOUT, json={"refresh_token": "ert_nothing"})
        refused = await _refresh(env.client, second["refresh_token"])
        grace = await _refresh(env.client, first["refresh_token"])
    assert out.status_code == 204
    assert again.status_code == 204
    assert unknown.status_code == 204
    assert refused.status_code == 401
    assert grace.status_code == 401  # a revoked family has no grace pair either


async def test_expired_unknown_and_malformed_refresh_tokens(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        first = await login(env.client)
        async with env.platform.database.unit_of_work() as session:
            await session.execute(update(RefreshToken).values(expires_at=utcnow()))
        expired = await _refresh(env.client, first["refresh_token"])
        unknown = await _refresh(env.client, "ert_unknown")
        empty = await env.client.post(REFRESH, json={"refresh_token": ""})
        missing = await env.client.post(REFRESH, json={})
        huge = await env.client.post(REFRESH, json={"refresh_token": "x" * 5000})
    assert expired.status_code == 401
    assert unknown.status_code == 401
    assert empty.status_code == 401
    assert missing.status_code == 422
    assert huge.status_code == 422


async def test_a_disabled_user_cannot_refresh(settings: Settings) -> None:
    async with identity_app(settings) as env:
        await register(env.client, "alice")
        first = await login(env.client)
        async with env.platform.database.unit_of_work() as session:
            await session.execute(update(User).values(disabled_at=utcnow()))
        refused = await _refresh(env.client, first["refresh_token"])
        async with env.platform.database.unit_of_work() as session:
            await session.execute(update(User).values(disabled_at=None))
        # Disabling revoked the family: enabling again does not bring it back.
        still = await _refresh(env.client, first["refresh_token"])
    assert refused.status_code == 401
    assert still.status_code == 401


async def test_refresh_picks_up_new_roles(settings: Settings) -> None:
    async with identity_app(settings) as env:
        created: dict[str, Any] = await register(env.client, "alice")
        first = await login(env.client)
        async with env.platform.database.unit_of_work() as session:
            await rbac.assign_role(session, uuid.UUID(created["id"]), "moderator")
        pair = (await _refresh(env.client, first["refresh_token"])).json()
        claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["member", "moderator"]
    assert "blog:article:delete" in claims["perms"]
