"""Responses: orjson-encoded JSON (the default response class of the app), and answers
encoded once and sent many times (``Prepared``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
JSON = "application/json"
RawHeaders = list[tuple[bytes, bytes]]


class ORJSONResponse(JSONResponse):
    media_type = JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


class PreparedResponse(Response):
    """A response whose body and header block are already encoded.

    ``Response.__init__`` would render the body and encode every header again; this takes
    them as they are sent. ``raw_headers`` must be a list of its own (middleware may
    append to it).
    """

    def __init__(self, body: bytes, raw_headers: RawHeaders, status_code: int = 200) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = raw_headers


def encoded_json(body: bytes, status_code: int = 200) -> PreparedResponse:
    """A JSON answer whose body is already encoded (``orjson.dumps``)."""
    headers = [
        (b"content-length", str(len(body)).encode("latin-1")),
        (b"content-type", b"application/json"),
    ]
    return PreparedResponse(body, headers, status_code)


def encode_headers(headers: Mapping[str, str]) -> RawHeaders:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]


@dataclass(frozen=True, slots=True)
class Prepared:
    """An answer encoded once (body, Content-Length, Content-Type and ``headers``)."""

    body: bytes
    raw_headers: tuple[tuple[bytes, bytes], ...]
    status_code: int = 200

    @classmethod
    def of(
        cls,
        body: bytes,
        *,
        media_type: str = JSON,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> Prepared:
        raw = encode_headers(headers or {})
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
        raw.append((b"content-type", media_type.encode("latin-1")))
        return cls(body=body, raw_headers=tuple(raw), status_code=status_code)

    def response(self) -> PreparedResponse:
        return PreparedResponse(self.body, list(self.raw_headers), self.status_code)
