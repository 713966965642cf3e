"""Full-text search over message bodies: one interface, each database's own engine.

- SQLite: an FTS5 virtual table (``porter unicode61`` tokenizer), ranked with BM25.
- PostgreSQL: a ``tsvector`` table with a GIN index, ranked with ``ts_rank_cd``.
- MariaDB/MySQL: an InnoDB ``FULLTEXT`` index in boolean mode. InnoDB indexes a change
  when its transaction commits, so a message is found from the next transaction on.

Every word of the query is required and the last one may be a prefix; words are taken
from the query with ``engineroom.core.search.terms_of``, so operators typed by a user
never reach the engine. The table (``chat_message_fts``) is built by the migration and
has no model. The message services keep it in step with ``chat_message`` in the same
transaction: a message is indexed when sent, indexed again when edited and removed when
deleted, so deleted text is never found.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from sqlalchemy import Subquery, text
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.events import Event
from engineroom.core.search import (
    boolean_mode_all_terms,
    fts5_all_terms,
    hits,
    sqlite_rowid,
    terms_of,
    tsquery_all_terms,
)

KEY = "message_id"


def _terms(query: str) -> list[str]:
    # Underscores are word characters to the regex but separators to every engine: a
    # term made of them alone would be a word nothing contains.
    return [term for term in terms_of(query) if term.strip("_")]


class MessageSearch(Protocol):
    async def put(
        self, session: AsyncSession, message_id: uuid.UUID, room_id: uuid.UUID, body: str
    ) -> None: ...

    async def remove(self, session: AsyncSession, message_id: uuid.UUID) -> None: ...

    async def forget_room(self, session: AsyncSession, room_id: uuid.UUID) -> None:
        """Remove what is left of a deleted room's messages."""

    def matches(self, query: str) -> Subquery | None:
        """``(message_id, score)`` of the matching messages, a higher score for a better
        match; ``None`` when the query has no searchable word."""


class SqliteMessageSearch:
    async def put(
        self, session: AsyncSession, message_id: uuid.UUID, room_id: uuid.UUID, body: str
    ) -> None:
        rowid = sqlite_rowid(message_id)
        await session.execute(text("DELETE FROM chat_message_fts WHERE rowid = :r"), {"r": rowid})
        await session.execute(
            text(
                "INSERT INTO chat_message_fts (rowid, message_id, room_id, body) "
                "VALUES (:r, :id, :room, :body)"
            ),
            {"r": rowid, "id": message_id.hex, "room": room_id.hex, "body": body},
        )

    async def remove(self, session: AsyncSession, message_id: uuid.UUID) -> None:
        await session.execute(
            text("DELETE FROM chat_message_fts WHERE rowid = :r"),
            {"r": sqlite_rowid(message_id)},
        )

    async def forget_room(self, session: AsyncSession, room_id: uuid.UUID) -> None:
        await session.execute(
            text("DELETE FROM chat_message_fts WHERE room_id = :room"), {"room": room_id.hex}
        )

    def matches(self, query: str) -> Subquery | None:
        terms = _terms(query)
        if not terms:
            return None
        return hits(
            "SELECT message_id, -bm25(chat_message_fts) AS score "
            "FROM chat_message_fts WHERE chat_message_fts MATCH :q",
            KEY,
            q=fts5_all_terms(terms),
        )


class PostgresMessageSearch:
    async def put(
        self, session: AsyncSession, message_id: uuid.UUID, room_id: uuid.UUID, body: str
    ) -> None:
        await session.execute(
            text(
                "INSERT INTO chat_message_fts (message_id, document) "
                "VALUES (:id, to_tsvector('english', :body)) "
                "ON CONFLICT (message_id) DO UPDATE SET document = EXCLUDED.document"
            ),
            {"id": message_id, "body": body},
        )

    async def remove(self, session: AsyncSession, message_id: uuid.UUID) -> None:
        await session.execute(
            text("DELETE FROM chat_message_fts WHERE message_id = :id"), {"id": message_id}
        )

    async def forget_room(self, session: AsyncSession, room_id: uuid.UUID) -> None:
        """Nothing to do: the rows went with their messages (a foreign key cascade)."""

    def matches(self, query: str) -> Subquery | None:
        terms = _terms(query)
        if not terms:
            return None
        return hits(
            "SELECT message_id, ts_rank_cd(document, query) AS score "
            "FROM chat_message_fts, to_tsquery('english', :q) AS query "
            "WHERE document @@ query",
            KEY,
            q=tsquery_all_terms(terms),
        )


class MysqlMessageSearch:
    async def put(
        self, session: AsyncSession, message_id: uuid.UUID, room_id: uuid.UUID, body: str
    ) -> None:
        await session.execute(
            text(
                "REPLACE INTO chat_message_fts (message_id, room_id, body) "
                "VALUES (:id, :room, :body)"
            ),
            {"id": message_id.hex, "room": room_id.hex, "body": body},
        )

    async def remove(self, session: AsyncSession, message_id: uuid.UUID) -> None:
        await session.execute(
            text("DELETE FROM chat_message_fts WHERE message_id = :id"), {"id": message_id.hex}
        )

    async def forget_room(self, session: AsyncSession, room_id: uuid.UUID) -> None:
        await session.execute(
            text("DELETE FROM chat_message_fts WHERE room_id = :room"), {"room": room_id.hex}
        )

    def matches(self, query: str) -> Subquery | None:
        terms = _terms(query)
        if not terms:
            return None
        match = "MATCH(body) AGAINST (:q IN BOOLEAN MODE)"
        return hits(
            f"SELECT message_id, {match} AS score FROM chat_message_fts WHERE {match}",
            KEY,
            q=boolean_mode_all_terms(terms),
        )


async def forget_deleted_room(event: Event, session: AsyncSession) -> None:
    """``chat.room.deleted``: drop the index rows of the room's messages (they cascaded
    away with the room, but SQLite's and MariaDB's index tables have no foreign key)."""
    room_id = uuid.UUID(str(event.payload["room_id"]))
    bind = session.get_bind()
    await message_search(bind.dialect.name).forget_room(session, room_id)


def message_search(dialect: str) -> MessageSearch:
    """The search implementation for a SQLAlchemy dialect name."""
    if dialect == "sqlite":
        return SqliteMessageSearch()
    if dialect == "postgresql":
        return PostgresMessageSearch()
    return MysqlMessageSearch()
