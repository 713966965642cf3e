"""Direct routes: served ahead of FastAPI's router, exactly where the router would go."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from starlette.routing import Host

from engineroom.core.errors import ErrorRenderers, NotFound, install_error_handlers
from engineroom.core.http import direct, install_direct_routes
from engineroom.core.http.direct import ROUTE_TEMPLATE_KEY, RouteIndex
from engineroom.core.responses import ORJSONResponse

# FastAPI's request handler opens this exit stack for every route it serves itself.
_FASTAPI_STACK = "fastapi_inner_astack"


def served_by(request: Request, name: str) -> Response:
    """Who answered, and whether FastAPI's handler ran on the way."""
    return ORJSONResponse(
        {
            "route": name,
            "direct": _FASTAPI_STACK not in request.scope,
            "template": request.scope.get(ROUTE_TEMPLATE_KEY),
        }
    )


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, ErrorRenderers())
    early = APIRouter(prefix="/api")

    @early.get("/things/special")
    async def special(request: Request) -> Response:
        return served_by(request, "special")

    @early.get("/docs/{number:int}")
    async def numbered_doc(request: Request) -> Response:
        return served_by(request, "numbered_doc")

    @early.get("/items/{item_id}")
    async def item(item_id: str, request: Request) -> Response:
        return served_by(request, f"item:{item_id}")

    late = APIRouter(prefix="/api")

    @late.get("/things/{name}")
    @direct
    async def thing(name: str, request: Request) -> Response:
        if name == "missing":
            raise NotFound("No such thing.")
        return served_by(request, f"thing:{name}")

    @late.get("/docs/{slug}")
    @direct
    async def doc(slug: str, request: Request) -> Response:
        return served_by(request, f"doc:{slug}")

    @late.get("/items/latest")
    @direct
    async def latest(request: Request) -> Response:
        return served_by(request, "latest")

    @late.get("/hello")
    @direct
    async def hello(request: Request) -> Response:
        return served_by(request, "hello")

    @late.post("/hello")
    async def hello_post(request: Request) -> Response:
        return served_by(request, "hello_post")

    app.include_router(early)
    app.include_router(late)
    install_direct_routes(app)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def answer(client: httpx.AsyncClient, method: str, path: str) -> dict[str, object]:
    response = await client.request(method, path)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_direct_route_skips_fastapi_and_gets_its_path_parameters(
    client: httpx.AsyncClient,
) -> None:
    assert await answer(client, "GET", "/api/things/lamp") == {
        "route": "thing:lamp",
        "direct": True,
        "template": "/api/things/{name}",
    }
    assert await answer(client, "GET", "/api/hello") == {
        "route": "hello",
        "direct": True,
        "template": "/api/hello",
    }


async def test_an_earlier_exact_route_keeps_its_path(client: httpx.AsyncClient) -> None:
    assert await answer(client, "GET", "/api/things/special") == {
        "route": "special",
        "direct": False,
        "template": None,
    }


async def test_an_earlier_template_keeps_the_paths_it_matches(client: httpx.AsyncClient) -> None:
    # /api/items/{item_id} was registered first, so it also takes /api/items/latest.
    latest = await answer(client, "GET", "/api/items/latest")
    assert latest["route"] == "item:latest"
    assert latest["direct"] is False
    # An earlier template that matches only some paths of a later direct one.
    numbered = await answer(client, "GET", "/api/docs/12")
    assert numbered["route"] == "numbered_doc"
    assert numbered["direct"] is False
    named = await answer(client, "GET", "/api/docs/intro")
    assert named == {"route": "doc:intro", "direct": True, "template": "/api/docs/{slug}"}


async def test_other_methods_and_paths_go_to_fastapi(client: httpx.AsyncClient) -> None:
    posted = await answer(client, "POST", "/api/hello")
    assert posted["route"] == "hello_post"
    not_allowed = await client.put("/api/hello")
    assert not_allowed.status_code == 405
    assert (await client.get("/api/things/a/b")).status_code == 404


async def test_errors_of_a_direct_route_reach_the_app_handlers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/things/missing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "No such thing."


async def test_routes_added_later_are_indexed() -> None:
    app = build_app()

    @app.get("/late")
    @direct
    async def late(request: Request) -> Response:
        return served_by(request, "late")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert await answer(client, "GET", "/late") == {
            "route": "late",
            "direct": True,
            "template": "/late",
        }


async def test_a_route_matched_on_the_host_keeps_later_routes_on_fastapi() -> None:
    app = FastAPI()
    app.router.routes.append(Host("api.example.com", app=FastAPI()))

    @app.get("/after")
    @direct
    async def after(request: Request) -> Response:
        return served_by(request, "after")

    install_direct_routes(app)
    assert len(RouteIndex(app.routes)) == 0
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        body = await answer(client, "GET", "/after")
    assert body == {"route": "after", "direct": False, "template": None}


async def limit() -> None:
    return None


def test_a_direct_route_with_dependencies_is_refused() -> None:
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(limit)])
    @direct
    async def x(request: Request) -> Response:
        return Response()

    with pytest.raises(TypeError, match="cannot have dependencies"):
        install_direct_routes(app)


def test_a_direct_route_with_other_parameters_is_refused() -> None:
    app = FastAPI()

    @app.get("/x/{number}")
    @direct
    async def x(number: int, request: Request) -> Response:
        return Response()

    with pytest.raises(TypeError, match="not 'number'"):
        install_direct_routes(app)


def test_a_direct_route_needs_the_request() -> None:
    app = FastAPI()

    @app.get("/x")
    @direct
    async def x() -> Response:
        return Response()

    with pytest.raises(TypeError, match="takes the Request"):
        install_direct_routes(app)
