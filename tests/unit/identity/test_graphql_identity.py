"""Identity in GraphQL: me, my sessions and API keys, and the admin queries."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import event

from engineroom.settings import Settings
from tests.support.identity_lifecycle import (
    PASSWORD,
    LifecycleApp,
    bearer,
    client_at,
    lifecycle_app,
    login,
    register,
    staff,
    user_with_tokens,
)

ME = "query { me { id email username roles emailVerified mfaEnabled disabled createdAt } }"


async def gql(
    client: httpx.AsyncClient,
    query: str,
    headers: dict[str, str] | None = None,
    **variables: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers or {}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def test_me(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        anonymous = await gql(env.client, ME)
        assert anonymous == {"data": {"me": None}}
        user, tokens = await user_with_tokens(env, "alice")
        body = await gql(env.client, ME, bearer(tokens["access_token"]))
        me = body["data"]["me"]
        assert me["id"] == user["id"]
        assert me["email"] == "alice@example.com"
        assert me["roles"] == ["member"]
        assert me["emailVerified"] is False
        assert me["disabled"] is False
        bad = await env.client.post("/graphql", json={"query": ME}, headers=bearer("not-a-token"))
        assert bad.status_code == 200
        assert error_codes(bad.json()) == ["token_invalid"]


async def _browser(env: LifecycleApp, ip: str) -> tuple[httpx.AsyncClient, dict[str, str]]:
    browser = client_at(env, ip)
    signed_in = await browser.post(
        "/api/v1/identity/sessions", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert signed_in.status_code == 201
    return browser, {"X-CSRF-Token": signed_in.json()["csrf_token"]}


async def test_my_sessions_and_revoking_one(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        await register(env.client, "alice")
        laptop, laptop_csrf = await _browser(env, "198.51.100.1")
        phone, _ = await _browser(env, "198.51.100.2")
        query = "query { mySessions { id ip current } }"
        body = await gql(laptop, query, laptop_csrf)
        sessions = body["data"]["mySessions"]
        assert [s["ip"] for s in sessions] == ["198.51.100.1", "198.51.100.2"]
        assert [s["current"] for s in sessions] == [True, False]

        without_csrf = await gql(laptop, query)
        assert error_codes(without_csrf) == ["csrf_failed"]

        mutation = "mutation($id: ID!) { revokeMySession(id: $id) }"
        revoked = await gql(laptop, mutation, laptop_csrf, id=sessions[1]["id"])
        assert revoked == {"data": {"revokeMySession": True}}
        assert (await phone.get("/api/v1/identity/sessions")).status_code == 401
        again = await gql(laptop, mutation, laptop_csrf, id=sessions[1]["id"])
        assert again == {"data": {"revokeMySession": False}}


async def test_my_api_keys_and_revoking_one(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        _, tokens = await user_with_tokens(env, "alice")
        headers = bearer(tokens["access_token"])
        created = await env.client.post(
            "/api/v1/identity/api-keys", json={"name": "ci"}, headers=headers
        )
        key = created.json()
        body = await gql(env.client, "query { myApiKeys { id name prefix status } }", headers)
        assert body["data"]["myApiKeys"] == [
            {"id": key["id"], "name": "ci", "prefix": key["prefix"], "status": "active"}
        ]
        # A key cannot list keys.
        as_key = await gql(env.client, "query { myApiKeys { id } }", {"X-API-Key": key["key"]})
        assert error_codes(as_key) == ["api_key_forbidden"]

        mutation = "mutation($id: ID!) { revokeMyApiKey(id: $id) { status revokedAt } }"
        revoked = await gql(env.client, mutation, headers, id=key["id"])
        assert revoked["data"]["revokeMyApiKey"]["status"] == "revoked"
        assert (
            await env.client.get("/api/v1/identity/me", headers={"X-API-Key": key["key"]})
        ).status_code == 401
        bad_id = await gql(env.client, mutation, headers, id="nope")
        assert error_codes(bad_id) == ["bad_request"]


async def test_admin_user_pages_load_roles_in_one_query(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        admin = await staff(env, "root", "admin")
        for name in ("ann", "ben", "cat", "dan"):
            await register(env.client, name)
        role_queries: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if "identity_user_role" in statement:
                role_queries.append(statement)

        engines = {env.platform.database.engine, *env.platform.database.read_engines}
        for engine in engines:
            event.listen(engine.sync_engine, "before_cursor_execute", count)
        query = """query($after: String) {
            users(first: 3, after: $after) { nodes { username roles } nextCursor }
        }"""
        first = (await gql(env.client, query, admin))["data"]["users"]
        assert [n["username"] for n in first["nodes"]] == ["root", "ann", "ben"]
        assert first["nodes"][0]["roles"] == ["admin", "member"]
        assert len(role_queries) == 1
        second = (await gql(env.client, query, admin, after=first["nextCursor"]))["data"]["users"]
        assert [n["username"] for n in second["nodes"]] == ["cat", "dan"]
        assert second["nextCursor"] is None
        for engine in engines:
            event.remove(engine.sync_engine, "before_cursor_execute", count)

        searched = await gql(
            env.client, 'query { users(query: "DA", status: ACTIVE) { nodes { username } } }', admin
        )
        assert searched["data"]["users"]["nodes"] == [{"username": "dan"}]
        too_big = await gql(env.client, "query { users(first: 1000) { nextCursor } }", admin)
        assert error_codes(too_big) == ["bad_request"]


async def test_admin_queries_need_their_permissions(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        moderator = await staff(env, "mod", "moderator")
        await register(env.client, "alice")
        member = bearer((await login(env.client))["access_token"])
        users = "query { users { nodes { id } } }"
        audit_log = "query { auditEvents { nodes { id } } }"
        assert error_codes(await gql(env.client, users)) == ["unauthorized"]
        assert error_codes(await gql(env.client, users, member)) == ["forbidden"]
        assert error_codes(await gql(env.client, users, moderator)) == ["forbidden"]
        assert error_codes(await gql(env.client, audit_log, member)) == ["forbidden"]
        assert "errors" not in await gql(env.client, audit_log, moderator)


async def test_the_audit_log_in_graphql(settings: Settings) -> None:
    async with lifecycle_app(settings) as env:
        admin = await staff(env, "root", "admin")
        alice = await register(env.client, "alice")
        await env.client.post(
            "/api/v1/identity/token", json={"email": "alice@example.com", "password": "wrong pw!"}
        )
        from engineroom.identity import audit

        await audit.flush(env.platform)
        query = """query($user: ID, $after: String) {
            auditEvents(userId: $user, outcome: FAILURE, first: 5, after: $after) {
                nodes { action outcome userId details ip } nextCursor
            }
        }"""
        body = await gql(env.client, query, admin, user=alice["id"])
        assert body["data"]["auditEvents"] == {
            "nodes": [
                {
                    "action": "login",
                    "outcome": "failure",
                    "userId": alice["id"],
                    "details": {"error": "invalid_credentials"},
                    "ip": "127.0.0.1",
                }
            ],
            "nextCursor": None,
        }
        bad = await gql(env.client, query, admin, user="not-a-uuid")
        assert error_codes(bad) == ["bad_request"]
        bad_cursor = await gql(env.client, query, admin, after="???")
        assert error_codes(bad_cursor) == ["cursor_invalid"]
