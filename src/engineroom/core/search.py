"""What every module's full-text index shares, whatever the database.

Each module keeps its own index table (``<module>_<thing>_fts``, built by its migration
with the dialect's DDL: an SQLite FTS5 virtual table, a PostgreSQL ``tsvector`` column with
a GIN index, a MariaDB/MySQL ``FULLTEXT`` index) and its own ranking. The pieces here turn
a user's query into plain words and then into each engine's query syntax, so that no
operator typed by a user ever reaches an engine's parser: a query can find nothing, but it
never fails.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence

from sqlalchemy import Float, Subquery, column, text

MAX_QUERY_LENGTH = 200
"""Characters of a query that are read; the rest is ignored."""
MAX_TERMS = 12
"""Words of a query that are used; more only cost time."""
_WORD = re.compile(r"\w+", re.UNICODE)


def terms_of(query: str) -> list[str]:
    """The words of a user's query (punctuation and operators dropped)."""
    return _WORD.findall(query[:MAX_QUERY_LENGTH])[:MAX_TERMS]


def sqlite_rowid(key: uuid.UUID) -> int:
    """A stable integer key for an FTS5 row indexing the row ``key``.

    FTS5 rows need an integer key, and the implicit rowid of the indexed row is not
    stable across VACUUM: 63 bits of a hash of its UUID are (collisions: ~n**2 / 2**64).
    """
    return int.from_bytes(hashlib.blake2b(key.bytes, digest_size=8).digest(), "big") >> 1


def fts5_all_terms(terms: Sequence[str]) -> str:
    """An FTS5 ``MATCH`` expression: every term required, the last one as a prefix (so
    results follow the user while they type). Each term is quoted, so FTS5 syntax cannot
    leak in."""
    return " ".join(f'"{term}"' for term in terms) + "*"


def boolean_mode_all_terms(terms: Sequence[str]) -> str:
    """A MariaDB/MySQL ``IN BOOLEAN MODE`` expression: every term required, each as a
    prefix (InnoDB does not stem, so ``dragon*`` is how "dragon" finds "dragons")."""
    return " ".join(f"+{term}*" for term in terms)


def tsquery_all_terms(terms: Sequence[str]) -> str:
    """A PostgreSQL ``to_tsquery`` expression: every term required, the last one as a
    prefix. Terms are words only (no quotes, no operators), each quoted as a lexeme."""
    quoted = [f"'{term}'" for term in terms]
    if quoted:
        quoted[-1] += ":*"
    return " & ".join(quoted)


def hits(sql: str, key: str, **params: str) -> Subquery:
    """A text query yielding ``(<key>, score)`` rows, as a subquery to join on ``key``."""
    return (
        text(sql)
        .bindparams(**params)
        .columns(column(key), column("score", Float()))
        .subquery("search_hits")
    )
