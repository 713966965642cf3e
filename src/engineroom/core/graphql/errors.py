"""GraphQL errors: ``AppError`` becomes ``extensions.code``, anything else is masked.

A resolver's ``AppError`` reaches the client with its message and stable code (and the
field errors, if any). An unexpected exception is logged with its traceback and the
request id, and the client sees only "Unexpected error." with code ``internal_error``.
Validation errors (syntax, unknown fields, the depth, alias, token and cost limits)
pass through unchanged: they describe the client's query, not the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import strawberry
import structlog
from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.types import ExecutionContext

from engineroom.core.errors import AppError
from engineroom.core.graphql.context import GraphQLContext

INTERNAL_ERROR_CODE = "internal_error"
INTERNAL_ERROR_MESSAGE = "Unexpected error."

logger = structlog.get_logger("engineroom.graphql")


def is_unexpected(error: GraphQLError) -> bool:
    """A server-side failure: the resolver raised something other than an AppError."""
    original = error.original_error
    return original is not None and not isinstance(original, (AppError, GraphQLError))


def _should_rewrite(error: GraphQLError) -> bool:
    return isinstance(error.original_error, AppError) or is_unexpected(error)


class ErrorPolicy(MaskErrors):
    """Rewrites resolver errors for the client and flags the operation as failed."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_should_rewrite, error_message=INTERNAL_ERROR_MESSAGE)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        extensions: dict[str, Any] = {"code": INTERNAL_ERROR_CODE}
        message = self.error_message
        if isinstance(original, AppError):
            message = original.message
            extensions = {"code": original.code}
            if original.field_errors:
                extensions["fieldErrors"] = {k: list(v) for k, v in original.field_errors.items()}
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions=extensions,
        )

    def on_operation(self) -> Iterator[None]:
        yield from super().on_operation()
        context = self.execution_context.context
        errors = getattr(self.execution_context.result, "errors", None)
        if errors and isinstance(context, GraphQLContext):
            context.failed = True


class Schema(strawberry.Schema):
    """Logs unexpected resolver errors once (strawberry would log every error)."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if is_unexpected(error):
                logger.error(
                    "graphql_resolver_failed",
                    path=list(error.path or ()),
                    error_type=type(error.original_error).__name__,
                    exc_info=error.original_error,
                )
