"""GraphQL lists of rooms and messages cost a constant number of SQL statements: the
same for 5 items as for 25 (unread counts, peers, authors and reactions are batched)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chat_domain import (
    POSTGRES,
    SQLITE,
    ChatApp,
    ChatUser,
    StatementCounter,
    chat_app,
    database_url_for,
    settings_for,
)

ROOMS = """
query {
  chatRooms(first: 100) {
    nodes {
      id kind name myRole memberCount lastSeq unreadCount mentionCount lastReadSeq
      peer { id username }
    }
  }
}
"""
MESSAGES = """
query($roomId: ID!) {
  chatMessages(roomId: $roomId, first: 100) {
    edges { cursor node {
      id seq body author { id username } mentions { username }
      reactions { emoji count me } attachments { url }
    } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
SIZES = (5, 25)


@pytest.fixture(params=[SQLITE, POSTGRES])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url_for(request, tmp_path)


@pytest.fixture
async def chat(database_url: str, tmp_path: Path) -> AsyncIterator[ChatApp]:
    async with chat_app(settings_for(database_url, tmp_path)) as app:
        yield app


async def gql(chat: ChatApp, user: ChatUser, query: str, **variables: Any) -> dict[str, Any]:
    response = await chat.client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=user.auth
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


async def counted(chat: ChatApp, user: ChatUser, query: str, **variables: Any) -> tuple[int, Any]:
    """The statements one GraphQL request ran, and its data."""
    with StatementCounter(chat.platform) as counter:
        counter.counting = True
        body = await gql(chat, user, query, **variables)
        counter.counting = False
    return len(counter.statements), body["data"]


async def test_my_rooms_with_unread_counts_and_peers(chat: ChatApp) -> None:
    alice = await chat.user("alice")
    counts: list[int] = []
    for size in SIZES:
        while len((await gql(chat, alice, ROOMS))["data"]["chatRooms"]["nodes"]) < size:
            peer = await chat.user()
            opened = await gql(chat, peer, 'mutation { chatOpenDirect(username: "alice") { id } }')
            room = uuid.UUID(opened["data"]["chatOpenDirect"]["id"])
            await chat.send(peer, room, "hi")
            await chat.send(peer, room, "are you there @alice?")
        statements, data = await counted(chat, alice, ROOMS)
        nodes = data["chatRooms"]["nodes"]
        assert len(nodes) == size
        assert {(n["kind"], n["unreadCount"], n["mentionCount"]) for n in nodes} == {
            ("DIRECT", 2, 1)
        }
        assert all(n["peer"]["username"].startswith("user") for n in nodes)
        assert len({n["peer"]["id"] for n in nodes}) == size
        counts.append(statements)
    # The page, the unread summary, the peers and their roles: whatever the number of rooms.
    assert counts[0] == counts[1], counts
    assert counts[0] <= 4, counts


async def test_a_message_page_with_authors_and_reactions(chat: ChatApp) -> None:
    alice, bob, carol = await chat.user("alice"), await chat.user("bob"), await chat.user("carol")
    room = await chat.room(alice, members=[bob, carol])
    react = "mutation($id: ID!, $e: String!) { chatReact(messageId: $id, emoji: $e) { id } }"
    authors = (alice, bob, carol)
    sent = 0
    counts: list[int] = []
    for size in SIZES:
        while sent < size:
            author = authors[sent % 3]
            message = await chat.send(
                author,
                room,
                f"note {sent} for @bob and @carol",
                attachments=[{"url": "https://x.io/a"}],
            )
            for user, emoji in ((bob, "👍"), (carol, "👍"), (carol, "🎉")):
                await gql(chat, user, react, id=message["id"], e=emoji)
            sent += 1
        statements, data = await counted(chat, carol, MESSAGES, roomId=str(room))
        edges = data["chatMessages"]["edges"]
        assert len(edges) == size
        assert data["chatMessages"]["pageInfo"]["hasNextPage"] is False
        newest = edges[0]["node"]
        assert newest["author"]["username"] == authors[(size - 1) % 3].username
        assert {u["username"] for u in newest["mentions"]} == {"bob", "carol"}
        assert newest["reactions"] == [
            {"emoji": "👍", "count": 2, "me": True},
            {"emoji": "🎉", "count": 1, "me": True},
        ]
        assert {e["node"]["author"]["username"] for e in edges} == {"alice", "bob", "carol"}
        counts.append(statements)
    # Room, membership, page, reactions, users and their roles: the same for 5 or 25.
    assert counts[0] == counts[1], counts
    assert counts[0] <= 6, counts
