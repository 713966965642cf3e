"""Blog: a RealWorld (Conduit) compatible API, plus drafts, search, Atom feeds and GraphQL.

Other modules import ``engineroom.blog.public`` only.
"""

from __future__ import annotations

from pathlib import Path

from engineroom.blog import feeds
from engineroom.blog.events import SUBSCRIPTIONS
from engineroom.blog.graphql import BlogMutation, BlogQuery
from engineroom.blog.router import router
from engineroom.blog.runtime import start
from engineroom.core.errors import errors_object_response
from engineroom.core.module import Module

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

module = Module(
    name="blog",
    routers=(router, feeds.router),
    graphql_queries=(BlogQuery,),
    graphql_mutations=(BlogMutation,),
    subscriptions=SUBSCRIPTIONS,
    migrations=MIGRATIONS_DIR,
    # RealWorld routes answer {"errors": {...}}; /api/v1 keeps problem documents.
    error_renderers={"/api/": errors_object_response},
    on_startup=(start,),
    openapi_tag="blog",
    description="Articles, comments, profiles, tags: the RealWorld API and its extensions.",
)

__all__ = ["MIGRATIONS_DIR", "module"]
