"""The composed GraphQL endpoint: schema, request context, limits and error policy."""

from engineroom.core.graphql.context import GraphQLContext, Loaders, get_graphql_context
from engineroom.core.graphql.cost import QueryCostLimiter, estimate_cost
from engineroom.core.graphql.errors import ErrorPolicy, Schema
from engineroom.core.graphql.schema import (
    CoreQuery,
    build_graphql_router,
    build_schema,
    merge_root_types,
)

__all__ = [
    "CoreQuery",
    "ErrorPolicy",
    "GraphQLContext",
    "Loaders",
    "QueryCostLimiter",
    "Schema",
    "build_graphql_router",
    "build_schema",
    "estimate_cost",
    "get_graphql_context",
    "merge_root_types",
]
