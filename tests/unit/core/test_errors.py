"""Error rendering: problem+json, per-prefix renderers, no stack traces."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from engineroom.core.errors import (
    AppError,
    Conflict,
    ErrorDetail,
    ErrorRenderers,
    NotFound,
    error_responses,
    errors_object_response,
    install_error_handlers,
)
from engineroom.core.responses import ORJSONResponse


class WidgetMissing(NotFound):
    code = "widget_not_found"


class WidgetIn(BaseModel):
    name: str = Field(min_length=2)
    size: int = Field(ge=1)


def realworld_renderer(request: Request, error: ErrorDetail) -> Response:
    body = error.field_errors or {"body": [error.message]}
    return ORJSONResponse({"errors": body}, status_code=error.status)


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = FastAPI()
    renderers = ErrorRenderers()
    renderers.register("/api/", realworld_renderer)
    install_error_handlers(app, renderers)

    @app.get("/api/v1/widgets/{name}", responses=error_responses(WidgetMissing))
    async def get_widget(name: str) -> dict[str, str]:
        raise WidgetMissing(f"No widget named {name}.")

    @app.post("/api/v1/widgets")
    async def create_widget(widget: WidgetIn) -> dict[str, str]:
        return {"name": widget.name}

    @app.post("/api/widgets")
    async def create_realworld(widget: WidgetIn) -> dict[str, str]:
        return {"name": widget.name}

    @app.get("/api/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
    )


async def test_app_error_is_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/widgets/blue")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "widget_not_found"
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert body["detail"] == "No widget named blue."
    assert body["instance"] == "/api/v1/widgets/blue"


async def test_validation_lists_each_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/widgets", json={"name": "x", "size": 0})
    assert response.status_code == 422
    fields = {item["field"] for item in response.json()["errors"]}
    assert fields == {"name", "size"}


async def test_malformed_json_is_422_not_500(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/widgets", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_prefix_renderer_keeps_its_own_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/widgets", json={"name": "x", "size": 3})
    assert response.status_code == 422
    assert response.json() == {"errors": {"name": ["String should have at least 2 characters"]}}


async def test_unknown_route_is_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_unexpected_error_never_leaks(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/boom")
    assert response.status_code == 500
    text = response.text
    assert "hunter2" not in text
    assert "Traceback" not in text
    assert response.json()["code"] == "internal_error"


def test_error_responses_document_codes() -> None:
    responses = error_responses(WidgetMissing)
    assert responses[404]["x-error-codes"] == ["widget_not_found"]
    assert 422 in responses


def test_app_error_carries_status_and_headers() -> None:
    error = AppError("nope", headers={"Retry-After": "3"})
    assert error.status == 400
    assert error.headers == {"Retry-After": "3"}


async def test_errors_object_renderer_uses_the_realworld_shape() -> None:
    app = FastAPI()
    renderers = ErrorRenderers()
    renderers.register("/api/", errors_object_response)
    install_error_handlers(app, renderers)

    @app.get("/api/thing")
    async def thing() -> None:
        raise NotFound("No such thing.")

    @app.get("/api/v1/thing")
    async def native_thing() -> None:
        raise NotFound("No such thing.")

    @app.post("/api/things")
    async def create(payload: dict[str, int]) -> None:
        raise Conflict("taken", field_errors={"name": ["has already been taken"]})

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/api/thing")
        taken = await client.post("/api/things", json={"a": 1})
        invalid = await client.post("/api/things", json={"a": "x"})
        native = await client.get("/api/v1/thing")
    assert response.status_code == 404
    assert response.json() == {"errors": {"body": ["No such thing."]}}
    assert taken.status_code == 409
    assert taken.json() == {"errors": {"name": ["has already been taken"]}}
    assert invalid.status_code == 422
    assert list(invalid.json()["errors"]) == ["a"]
    # The native API keeps problem documents even under a registered "/api/" prefix.
    assert native.headers["content-type"].startswith("application/problem+json")
