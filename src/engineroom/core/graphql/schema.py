"""The one GraphQL schema: every selected module's queries and mutations, merged.

Each module lists Strawberry types in ``Module.graphql_queries`` and
``Module.graphql_mutations``; their fields become fields of the root ``Query`` and
``Mutation`` types. The kernel's ``Query`` fields (``version``, ``health``) keep the
schema valid when no module brings any. Two modules defining the same root field is a
composition error, reported when the app is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import strawberry
from fastapi import APIRouter
from fastapi.routing import APIRoute
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.fastapi import GraphQLRouter
from strawberry.tools import merge_types
from strawberry.types.base import has_object_definition

from engineroom import __version__
from engineroom.core.graphql.context import GraphQLContext, get_graphql_context
from engineroom.core.graphql.cost import QueryCostLimiter
from engineroom.core.graphql.errors import ErrorPolicy, Schema
from engineroom.core.module import Module
from engineroom.settings import Settings

# Generous for real clients (GraphiQL's introspection query is ~700 tokens, no aliases),
# small enough that parsing a hostile document stays cheap.
MAX_TOKENS = 5000
MAX_ALIASES = 30


def _version() -> str:
    return __version__


def _health() -> str:
    return "ok"


@strawberry.type(description="Fields every engineroom deployment serves.")
class CoreQuery:
    version: str = strawberry.field(
        resolver=_version, description="The engineroom version serving this API."
    )
    health: str = strawberry.field(
        resolver=_health, description="Always 'ok' while the GraphQL endpoint is serving."
    )


def merge_root_types(name: str, types: Sequence[type]) -> type:
    """Merge Strawberry types into one root type; duplicate field names are an error."""
    owners: dict[str, str] = {}
    for type_ in types:
        if not has_object_definition(type_):
            raise TypeError(f"{type_.__qualname__} is not a Strawberry type (@strawberry.type)")
        for field in type_.__strawberry_definition__.fields:
            if field.python_name in owners:
                raise ValueError(
                    f"GraphQL {name}.{field.python_name} is defined by both "
                    f"{owners[field.python_name]} and {type_.__qualname__}"
                )
            owners[field.python_name] = type_.__qualname__
    return merge_types(name, tuple(types))


def build_schema(modules: Sequence[Module], settings: Settings) -> Schema:
    queries = [CoreQuery, *(t for m in modules for t in m.graphql_queries)]
    mutations = [t for m in modules for t in m.graphql_mutations]
    return Schema(
        query=merge_root_types("Query", queries),
        mutation=merge_root_types("Mutation", mutations) if mutations else None,
        extensions=_extensions(settings),
    )


def _extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    # Factories, not instances: Strawberry builds each extension per operation, so
    # concurrent requests never share an extension's execution context.
    return [
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
        partial(QueryDepthLimiter, max_depth=settings.graphql_max_depth),
        partial(QueryCostLimiter, max_cost=settings.graphql_max_cost),
        ErrorPolicy,
    ]


def build_graphql_router(
    modules: Sequence[Module], settings: Settings
) -> GraphQLRouter[GraphQLContext, None]:
    """The ``/graphql`` router (mount it with ``prefix="/graphql"``).

    GraphiQL is served on ``GET`` (``Accept: text/html``) outside production only.
    """
    router: GraphQLRouter[GraphQLContext, None] = GraphQLRouter(
        build_schema(modules, settings),
        path="",
        graphql_ide="graphiql" if settings.is_development else None,
        context_getter=get_graphql_context,
        # No subscriptions yet: refuse websocket upgrades instead of holding them open.
        subscription_protocols=(),
        tags=["graphql"],
    )
    _document_routes(router)
    return router


_SUMMARIES = {
    "GET": "GraphQL query over GET (GraphiQL in development)",
    "POST": "GraphQL query or mutation",
}


def _document_routes(router: APIRouter) -> None:
    """Give the generated GraphQL routes readable OpenAPI summaries and error responses."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        method = next(iter(route.methods or {"POST"}))
        route.summary = _SUMMARIES.get(method, route.summary)
        route.description = (
            "Execute a GraphQL document against the schema composed from every module. "
            "Errors are reported in the `errors` array of the GraphQL response."
        )
        route.responses.setdefault(
            400,
            {"description": "Not a GraphQL request, or a mutation sent over GET (use POST)."},
        )
