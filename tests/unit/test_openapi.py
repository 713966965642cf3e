"""The OpenAPI document of the whole application: every route is documented.

Built from every module in the catalog, so a module that lands with an undocumented route
(no summary, no tag, no error responses) fails here.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engineroom.app import create_app
from engineroom.settings import Settings

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
# Auto-generated summaries are the function name in title case; ours are sentences.
GENERATED_PREFIXES = ("Handle ",)


@pytest.fixture
def document(settings: Settings) -> dict[str, Any]:
    schema: dict[str, Any] = create_app(settings, run_background=False).openapi()
    return schema


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_every_operation_has_a_summary_and_a_tag(document: dict[str, Any]) -> None:
    undocumented = [
        f"{method} {path}"
        for method, path, operation in _operations(document)
        if not operation.get("summary")
        or operation["summary"].startswith(GENERATED_PREFIXES)
        or not operation.get("tags")
    ]
    assert undocumented == []


def test_every_operation_documents_its_errors(document: dict[str, Any]) -> None:
    # Liveness and metrics cannot fail short of the process being gone.
    exempt = {("GET", "/healthz"), ("GET", "/metrics")}
    silent = [
        f"{method} {path}"
        for method, path, operation in _operations(document)
        if (method, path) not in exempt
        and not any(str(status)[0] in "45" for status in operation.get("responses", {}))
    ]
    assert silent == []


def test_native_api_errors_point_at_the_problem_schema(document: dict[str, Any]) -> None:
    assert "Problem" in document["components"]["schemas"]
    for method, path, operation in _operations(document):
        if not path.startswith("/api/v1/"):
            continue
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and status != "422":
                content = response.get("content", {})
                assert "application/problem+json" in content, f"{method} {path} {status}"


async def test_graphql_documented_errors_are_the_real_ones(settings: Settings) -> None:
    app = create_app(settings, run_background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        not_graphql = await client.post(
            "/graphql", content=b"{", headers={"content-type": "application/json"}
        )
        mutation_over_get = await client.get(
            "/graphql", params={"query": "mutation { __typename }"}
        )
    assert not_graphql.status_code == 400
    assert mutation_over_get.status_code == 400
