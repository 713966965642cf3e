"""Full-text search over articles: one interface, each database's own engine.

- SQLite: an FTS5 virtual table (``porter unicode61`` tokenizer), ranked with BM25.
- PostgreSQL: a ``tsvector`` table with a GIN index, ``websearch_to_tsquery`` and
  ``ts_rank_cd``; title, description and body weigh A, B and D.
- MariaDB/MySQL: InnoDB ``FULLTEXT`` indexes in boolean mode (all words, as prefixes).

The table (``blog_article_fts``) is built by the migration and has no model (see
``core/migrations/runner.is_search_index_table``). The service keeps it in step with
``blog_article`` in the same transaction as every write.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from sqlalchemy import Subquery, text
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.search import (
    boolean_mode_all_terms,
    fts5_all_terms,
    hits,
    sqlite_rowid,
    terms_of,
)


class SearchIndex(Protocol):
    async def put(
        self, session: AsyncSession, article_id: uuid.UUID, title: str, description: str, body: str
    ) -> None: ...

    async def remove(self, session: AsyncSession, article_ids: list[uuid.UUID]) -> None: ...

    def matches(self, query: str) -> Subquery | None:
        """``(article_id, score)`` of the matching articles, higher score first; ``None``
        when the query has no searchable word."""


def _hits(sql: str, **params: str) -> Subquery:
    return hits(sql, "article_id", **params)


class SqliteSearch:
    async def put(
        self, session: AsyncSession, article_id: uuid.UUID, title: str, description: str, body: str
    ) -> None:
        rowid = sqlite_rowid(article_id)
        await session.execute(text("DELETE FROM blog_article_fts WHERE rowid = :r"), {"r": rowid})
        await session.execute(
            text(
                "INSERT INTO blog_article_fts (rowid, article_id, title, description, body) "
                "VALUES (:r, :id, :title, :description, :body)"
            ),
            {
                "r": rowid,
                "id": article_id.hex,
                "title": title,
                "description": description,
                "body": body,
            },
        )

    async def remove(self, session: AsyncSession, article_ids: list[uuid.UUID]) -> None:
        for article_id in article_ids:
            await session.execute(
                text("DELETE FROM blog_article_fts WHERE rowid = :r"),
                {"r": sqlite_rowid(article_id)},
            )

    def matches(self, query: str) -> Subquery | None:
        terms = terms_of(query)
        if not terms:
            return None
        return _hits(
            "SELECT article_id, -bm25(blog_article_fts, 0.0, 10.0, 4.0, 1.0) AS score "
            "FROM blog_article_fts WHERE blog_article_fts MATCH :q",
            q=fts5_all_terms(terms),
        )


_PG_DOCUMENT = (
    "setweight(to_tsvector('english', :title), 'A') || "
    "setweight(to_tsvector('english', :description), 'B') || "
    "setweight(to_tsvector('english', :body), 'D')"
)


class PostgresSearch:
    async def put(
        self, session: AsyncSession, article_id: uuid.UUID, title: str, description: str, body: str
    ) -> None:
        await session.execute(
            text(
                "INSERT INTO blog_article_fts (article_id, document) "
                f"VALUES (:id, {_PG_DOCUMENT}) "
                "ON CONFLICT (article_id) DO UPDATE SET document = EXCLUDED.document"
            ),
            {"id": article_id, "title": title, "description": description, "body": body},
        )

    async def remove(self, session: AsyncSession, article_ids: list[uuid.UUID]) -> None:
        # The rows cascade with their article; an explicit delete keeps the contract the
        # same as on the other databases.
        if article_ids:
            await session.execute(
                text("DELETE FROM blog_article_fts WHERE article_id = ANY(:ids)"),
                {"ids": article_ids},
            )

    def matches(self, query: str) -> Subquery | None:
        terms = terms_of(query)
        if not terms:
            return None
        return _hits(
            "SELECT article_id, ts_rank_cd(document, query) AS score "
            "FROM blog_article_fts, websearch_to_tsquery('english', :q) AS query "
            "WHERE document @@ query",
            q=" ".join(terms),
        )


class MysqlSearch:
    async def put(
        self, session: AsyncSession, article_id: uuid.UUID, title: str, description: str, body: str
    ) -> None:
        await session.execute(
            text(
                "REPLACE INTO blog_article_fts (article_id, title, description, body) "
                "VALUES (:id, :title, :description, :body)"
            ),
            {"id": article_id.hex, "title": title, "description": description, "body": body},
        )

    async def remove(self, session: AsyncSession, article_ids: list[uuid.UUID]) -> None:
        for article_id in article_ids:
            await session.execute(
                text("DELETE FROM blog_article_fts WHERE article_id = :id"), {"id": article_id.hex}
            )

    def matches(self, query: str) -> Subquery | None:
        terms = terms_of(query)
        if not terms:
            return None
        # Every word required, each as a prefix; a title match weighs ten times more.
        expression = boolean_mode_all_terms(terms)
        everywhere = "MATCH(title, description, body) AGAINST (:q IN BOOLEAN MODE)"
        in_title = "MATCH(title) AGAINST (:q IN BOOLEAN MODE)"
        return _hits(
            f"SELECT article_id, 10 * {in_title} + {everywhere} AS score "
            f"FROM blog_article_fts WHERE {everywhere}",
            q=expression,
        )


def search_index(dialect: str) -> SearchIndex:
    """The search implementation for a SQLAlchemy dialect name."""
    if dialect == "sqlite":
        return SqliteSearch()
    if dialect == "postgresql":
        return PostgresSearch()
    return MysqlSearch()
