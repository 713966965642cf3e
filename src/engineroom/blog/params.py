"""Request parsing for the hottest public reads, without FastAPI's per-parameter machinery.

FastAPI resolves each declared parameter and dependency per request, which on a cached
read costs more than the read itself; these routes take the ``Request`` and parse the
few things they need here, with the same rules (and the same 422s) as the declared
parameters of the other routes. Their OpenAPI parameters are declared by hand below.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from engineroom.blog.errors import InvalidInput
from engineroom.core.platform import Platform

MAX_PAGE_SIZE = 100
MAX_OFFSET = 1_000_000
MAX_SEARCH_LENGTH = 200


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def _integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidInput(
            f"'{name}' must be an integer from {low} to {high}.",
            field_errors={name: [f"must be an integer from {low} to {high}"]},
        )
    return value


def page_of(request: Request) -> tuple[int, int]:
    """``(limit, offset)`` from the query string (20 and 0 by default)."""
    limit = _integer(request, "limit", 20, 1, MAX_PAGE_SIZE)
    offset = _integer(request, "offset", 0, 0, MAX_OFFSET)
    return limit, offset


def text_of(request: Request, name: str, max_length: int = MAX_SEARCH_LENGTH) -> str | None:
    """A text parameter; absent or empty is ``None``."""
    value = request.query_params.get(name) or None
    if value is not None and len(value) > max_length:
        raise InvalidInput(
            f"'{name}' is too long.",
            field_errors={name: [f"is too long (maximum is {max_length} characters)"]},
        )
    return value


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


LIST_PARAMETERS: list[dict[str, Any]] = [
    _query("tag", "Only articles with this tag.", {"type": "string"}),
    _query("author", "Only articles by this username.", {"type": "string"}),
    _query("favorited", "Only articles this username favorited.", {"type": "string"}),
    _query(
        "search",
        "Extension: full-text query over title, description and body.",
        {"type": "string", "maxLength": MAX_SEARCH_LENGTH},
    ),
    _query(
        "limit",
        "Page size.",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 20},
    ),
    _query(
        "offset",
        "Articles to skip.",
        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
    ),
]
