"""Problem responses sent by middleware, outside the app's exception handlers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from engineroom.core.errors import ErrorDetail, ErrorRenderers, problem_response


async def send_problem(scope: Scope, receive: Receive, send: Send, error: ErrorDetail) -> None:
    """Answer with the app's renderer for the path when it published one, else RFC 9457."""
    request = Request(scope, receive)
    app = scope.get("app")
    renderers = getattr(getattr(app, "state", None), "error_renderers", None)
    if isinstance(renderers, ErrorRenderers):
        response = renderers.render(request, error)
    else:
        response = problem_response(request, error)
    await response(scope, receive, send)
