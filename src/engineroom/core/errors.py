"""Application errors and their rendering.

Services raise ``AppError`` subclasses (a stable ``code``, a message and an HTTP status);
the handlers here turn them into RFC 9457 ``application/problem+json`` for ``/api/v1/...``.
Modules whose public contract has another error shape (the RealWorld routes) register an
``ErrorRenderer`` for their path prefix. No stack trace ever reaches a client: an
unexpected exception is logged with the request id and answered with a bare 500.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from engineroom.core.responses import ORJSONResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"
logger = structlog.get_logger("engineroom.errors")


class AppError(Exception):
    """Base of every error a service raises on purpose."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    title: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        field_errors: Mapping[str, Sequence[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field_errors = dict(field_errors or {})
        self.headers = dict(headers or {})


class BadRequest(AppError):
    code = "bad_request"
    status = 400


class Unauthorized(AppError):
    code = "unauthorized"
    status = 401


class Forbidden(AppError):
    code = "forbidden"
    status = 403


class NotFound(AppError):
    code = "not_found"
    status = 404


class Conflict(AppError):
    code = "conflict"
    status = 409


class PayloadTooLarge(AppError):
    code = "payload_too_large"
    status = 413


class RateLimited(AppError):
    code = "rate_limited"
    status = 429


class ServiceUnavailable(AppError):
    code = "service_unavailable"
    status = 503


@dataclass(frozen=True)
class ErrorDetail:
    """One error about to be rendered, whatever its origin."""

    status: int
    code: str
    message: str
    field_errors: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


ErrorRenderer = Callable[[Request, ErrorDetail], Response]


def problem_response(request: Request, error: ErrorDetail) -> Response:
    """Render an RFC 9457 problem document."""
    body: dict[str, Any] = {
        "type": f"https://engineroom.dev/problems/{error.code}",
        "title": _title(error.status),
        "status": error.status,
        "detail": error.message,
        "code": error.code,
        "instance": request.url.path,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    if error.field_errors:
        body["errors"] = [
            {"field": name, "message": message}
            for name, messages in error.field_errors.items()
            for message in messages
        ]
    return ORJSONResponse(
        body, status_code=error.status, headers=error.headers, media_type=PROBLEM_CONTENT_TYPE
    )


def errors_object_response(request: Request, error: ErrorDetail) -> Response:
    """Render the RealWorld (Conduit) shape: ``{"errors": {"field": ["message", ...]}}``.

    Errors that are not about one field go under ``"body"``, as that spec's examples do.
    Modules serving RealWorld routes register this for their path prefix.
    """
    errors = error.field_errors or {"body": [error.message]}
    return ORJSONResponse({"errors": errors}, status_code=error.status, headers=error.headers)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class ErrorRenderers:
    """Chooses the renderer for a path: the longest registered prefix wins."""

    def __init__(self) -> None:
        # The native API always answers with problem documents, whatever a module
        # registers for a shorter prefix such as "/api/".
        self._by_prefix: list[tuple[str, ErrorRenderer]] = [("/api/v1/", problem_response)]

    def register(self, prefix: str, renderer: ErrorRenderer) -> None:
        self._by_prefix.append((prefix, renderer))
        self._by_prefix.sort(key=lambda item: len(item[0]), reverse=True)

    def render(self, request: Request, error: ErrorDetail) -> Response:
        path = request.url.path
        for prefix, renderer in self._by_prefix:
            if path.startswith(prefix):
                return renderer(request, error)
        return problem_response(request, error)


def _validation_field_errors(exc: RequestValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for item in exc.errors():
        location = [str(part) for part in item.get("loc", ()) if part not in ("body",)]
        name = ".".join(location) or "body"
        errors.setdefault(name, []).append(str(item.get("msg", "invalid")))
    return errors


def install_error_handlers(app: FastAPI, renderers: ErrorRenderers) -> None:
    async def on_app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        detail = ErrorDetail(
            status=exc.status,
            code=exc.code,
            message=exc.message,
            field_errors={k: list(v) for k, v in exc.field_errors.items()},
            headers=exc.headers,
        )
        return renderers.render(request, detail)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        detail = ErrorDetail(
            status=422,
            code="validation_failed",
            message="The request is not valid; see errors for each field.",
            field_errors=_validation_field_errors(exc),
        )
        return renderers.render(request, detail)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
        detail = ErrorDetail(
            status=exc.status_code,
            code=_code_for_status(exc.status_code),
            message=message,
            headers=dict(exc.headers or {}),
        )
        return renderers.render(request, detail)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception(
            "unhandled_error",
            request_id=getattr(request.state, "request_id", None),
            path=request.url.path,
            error_type=type(exc).__name__,
        )
        detail = ErrorDetail(
            status=500, code="internal_error", message="An unexpected error occurred."
        )
        return renderers.render(request, detail)

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _code_for_status(status: int) -> str:
    return _STATUS_CODES.get(status, "error" if status < 500 else "internal_error")


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the errors a route may raise."""
    responses: dict[int | str, dict[str, Any]] = {}
    documented: tuple[type[AppError], ...] = (*errors, _ValidationFailed)
    for error in documented:
        entry = responses.setdefault(
            error.status,
            {
                "description": _title(error.status),
                "content": {
                    PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            },
        )
        codes = entry.setdefault("x-error-codes", [])
        if error.code not in codes:
            codes.append(error.code)
    return responses


class _ValidationFailed(AppError):
    code = "validation_failed"
    status = 422
