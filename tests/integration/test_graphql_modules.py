"""One GraphQL operation across modules: sibling root fields of identity, blog and chat
resolve concurrently on the operation's one session, and must take turns on it
(``GraphQLContext.exclusive``) instead of failing with a concurrent-use error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from engineroom.app import create_app
from engineroom.blog import module as blog_module
from engineroom.chat import build_module
from engineroom.core.migrations.runner import upgrade
from engineroom.identity import module as identity_module
from engineroom.identity.config import configure
from tests.support.chat_domain import (
    POSTGRES,
    SQLITE,
    database_url_for,
    messages_settings,
    settings_for,
)
from tests.support.identity import PASSWORD, fast_identity_settings

MIXED = """
{
  me { id username }
  chatRooms { nodes { id name unreadCount } }
  articles(first: 5) { totalCount edges { node { slug author { username } } } }
  popularTags
  mine: chatRooms { nodes { id } }
}
"""


@pytest.fixture(params=[SQLITE, POSTGRES])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url_for(request, tmp_path)


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(database_url, tmp_path)
    configure(settings, fast_identity_settings())
    modules = [identity_module, blog_module, build_module(settings=messages_settings())]
    await upgrade(settings, modules)
    app = create_app(settings, modules=modules, run_background=False)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def _token(client: httpx.AsyncClient) -> dict[str, str]:
    registered = await client.post(
        "/api/users",
        json={"user": {"email": "mixed@example.com", "username": "mixed", "password": PASSWORD}},
    )
    assert registered.status_code == 201, registered.text
    return {"Authorization": f"Token {registered.json()['user']['token']}"}


async def test_identity_blog_and_chat_fields_share_one_operation(
    client: httpx.AsyncClient,
) -> None:
    auth = await _token(client)
    for title in ("First", "Second"):
        article = {"title": title, "description": "d", "body": "b", "tagList": ["x", "y"]}
        created = await client.post("/api/articles", json={"article": article}, headers=auth)
        assert created.status_code == 201, created.text
    for name in ("lobby", "random"):
        room = await client.post(
            "/api/v1/chat/rooms", json={"name": name, "kind": "public"}, headers=auth
        )
        assert room.status_code == 201, room.text

    for _ in range(5):  # the interleaving varies; every run must come out whole
        response = await client.post("/graphql", json={"query": MIXED}, headers=auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body["errors"]
        data = body["data"]
        assert data["me"]["username"] == "mixed"
        assert sorted(room["name"] for room in data["chatRooms"]["nodes"]) == ["lobby", "random"]
        assert len(data["mine"]["nodes"]) == 2
        assert data["articles"]["totalCount"] == 2
        assert {edge["node"]["author"]["username"] for edge in data["articles"]["edges"]} == {
            "mixed"
        }
        assert sorted(data["popularTags"]) == ["x", "y"]
