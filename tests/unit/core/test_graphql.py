"""The composed GraphQL endpoint: module composition, limits, errors, loaders, atomicity."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import strawberry
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from engineroom.app import create_app
from engineroom.core.errors import NotFound
from engineroom.core.events import publish
from engineroom.core.events.models import OutboxEvent
from engineroom.core.graphql import GraphQLContext, build_schema
from engineroom.core.module import Module
from engineroom.settings import Environment, Settings
from tests.support.schema import create_all

SECRET_TEXT = "password=hunter2 in a stack frame"


class LoaderCalls:
    batches: list[list[int]] = []  # noqa: RUF012 - reset per test by the fixture


async def load_owners(keys: list[int]) -> list[str]:
    LoaderCalls.batches.append(list(keys))
    return [f"owner-{key}" for key in keys]


@strawberry.type
class Child:
    name: str


@strawberry.type
class Item:
    id: int

    @strawberry.field
    def children(self, limit: int = 1) -> list[Child]:
        return [Child(name=f"{self.id}.{n}") for n in range(limit)]

    @strawberry.field
    async def owner(self, info: Info[GraphQLContext, None]) -> str:
        loader = info.context.loaders.get("owners", lambda: DataLoader(load_fn=load_owners))
        return await loader.load(self.id)

    @strawberry.field
    def nested(self) -> Item:
        return Item(id=self.id + 1)


@strawberry.type
class ThingsQuery:
    @strawberry.field
    def items(self, limit: int = 3) -> list[Item]:
        return [Item(id=n) for n in range(limit)]

    @strawberry.field
    def boom(self) -> str:
        raise RuntimeError(SECRET_TEXT)

    @strawberry.field
    def missing(self) -> str:
        raise NotFound("No such thing.")

    @strawberry.field
    async def whoami(self, info: Info[GraphQLContext, None]) -> str:
        return (await info.context.require_principal()).subject


@strawberry.type
class ThingsMutation:
    @strawberry.mutation
    async def record(self, info: Info[GraphQLContext, None], fail: bool = False) -> bool:
        publish(info.context.session, "things.recorded", {"fail": fail})
        if fail:
            raise NotFound("Recorded, then failed.")
        return True


things = Module(name="things", graphql_queries=(ThingsQuery,), graphql_mutations=(ThingsMutation,))


@pytest.fixture(autouse=True)
def reset_loader_calls() -> None:
    LoaderCalls.batches = []


@asynccontextmanager
async def serve(
    settings: Settings, modules: Sequence[Module] = (things,)
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings, modules=list(modules), run_background=False)
    async with LifespanManager(app) as manager:
        await create_all(app.state.platform.database)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


async def graphql(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_module_fields_join_the_kernel_fields(settings: Settings) -> None:
    async with serve(settings) as (_, client):
        body = await graphql(client, "{ version health items(limit: 2) { id } }")
    assert body["data"]["health"] == "ok"
    assert body["data"]["items"] == [{"id": 0}, {"id": 1}]


def test_two_modules_defining_one_root_field_is_refused(settings: Settings) -> None:
    twin = Module(name="twin", graphql_queries=(ThingsQuery,))
    with pytest.raises(ValueError, match=r"Query\.items is defined by both"):
        build_schema([things, twin], settings)


async def test_queries_deeper_than_the_limit_are_refused(settings: Settings) -> None:
    shallow = settings.model_copy(update={"graphql_max_depth": 3})
    deep = "{ items { nested { nested { nested { id } } } } }"
    async with serve(shallow) as (_, client):
        body = await graphql(client, deep)
        fine = await graphql(client, "{ items { nested { id } } }")
    assert body.get("data") is None
    assert "exceeds maximum operation depth" in body["errors"][0]["message"]
    assert fine["data"]["items"][0]["nested"] == {"id": 1}


async def test_queries_over_the_cost_limit_are_refused_before_running(
    settings: Settings,
) -> None:
    cheap = settings.model_copy(update={"graphql_max_cost": 1000})
    query = "query($n: Int!) { items(limit: $n) { owner children(limit: $n) { name } } }"
    async with serve(cheap) as (_, client):
        refused = await graphql(client, query, n=100)
        allowed = await graphql(client, query, n=5)
    assert refused["errors"][0]["extensions"]["code"] == "query_too_costly"
    assert LoaderCalls.batches == [[0, 1, 2, 3, 4]]  # only the allowed query ran
    assert len(allowed["data"]["items"]) == 5


async def test_unexpected_errors_are_masked(settings: Settings) -> None:
    async with serve(settings) as (_, client):
        body = await graphql(client, "{ boom }")
    [error] = body["errors"]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "internal_error"}
    assert SECRET_TEXT not in str(body)


async def test_app_errors_keep_their_code_and_message(settings: Settings) -> None:
    async with serve(settings) as (_, client):
        missing = await graphql(client, "{ missing }")
        anonymous = await graphql(client, "{ whoami }")
    assert missing["errors"][0]["message"] == "No such thing."
    assert missing["errors"][0]["extensions"] == {"code": "not_found"}
    assert anonymous["errors"][0]["extensions"] == {"code": "unauthorized"}


async def test_a_page_of_items_loads_owners_in_one_batch(settings: Settings) -> None:
    async with serve(settings) as (_, client):
        body = await graphql(client, "{ items(limit: 20) { id owner } }")
        again = await graphql(client, "{ items(limit: 2) { owner } }")
    assert [item["owner"] for item in body["data"]["items"]] == [f"owner-{n}" for n in range(20)]
    # One batch per request: loaders never outlive their request.
    assert LoaderCalls.batches == [list(range(20)), [0, 1]]
    assert again["data"]["items"] == [{"owner": "owner-0"}, {"owner": "owner-1"}]


async def test_a_mutation_commits_only_when_it_reports_no_error(settings: Settings) -> None:
    async with serve(settings) as (app, client):
        ok = await graphql(client, "mutation { record }")
        failed = await graphql(client, "mutation { record(fail: true) }")
        async with app.state.platform.database.session() as session:
            stored = await session.scalar(select(func.count()).select_from(OutboxEvent))
    assert ok["data"] == {"record": True}
    assert failed["errors"][0]["extensions"] == {"code": "not_found"}
    assert stored == 1


@pytest.mark.parametrize(
    ("environment", "served"), [(Environment.DEVELOPMENT, True), (Environment.PRODUCTION, False)]
)
async def test_graphiql_is_served_outside_production_only(
    settings: Settings, environment: Environment, served: bool
) -> None:
    configured = settings.model_copy(update={"environment": environment, "secret_key": "x" * 40})
    async with serve(configured) as (_, client):
        response = await client.get("/graphql", headers={"accept": "text/html"})
    if served:
        assert response.status_code == 200
        assert "graphiql" in response.text.lower()
    else:
        assert "graphiql" not in response.text.lower()
