"""Article slugs: readable, unique, and never one of the words the routes reserve."""

from __future__ import annotations

import re
import secrets
import string
import unicodedata

from engineroom.blog.models import SLUG_LENGTH

RESERVED = frozenset({"feed", "drafts"})
"""``/api/articles/feed`` and ``/api/articles/drafts`` are routes, not articles."""
_BASE_LENGTH = SLUG_LENGTH - 8
_SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)
_ALPHABET = string.ascii_lowercase + string.digits


def slugify(title: str) -> str:
    """``"How to train your Dragon!"`` -> ``"how-to-train-your-dragon"``; letters of any
    script are kept (URLs carry them percent-encoded)."""
    text = unicodedata.normalize("NFKC", title).lower()
    slug = _SEPARATORS.sub("-", text).strip("-")[:_BASE_LENGTH].strip("-")
    return slug or "article"


def candidates(title: str, attempts: int) -> list[str]:
    """The plain slug first (unless reserved), then variants with a random suffix."""
    base = slugify(title)
    first = [] if base in RESERVED else [base]
    suffixed = [
        f"{base}-{''.join(secrets.choice(_ALPHABET) for _ in range(6))}"
        for _ in range(attempts - len(first))
    ]
    return first + suffixed
