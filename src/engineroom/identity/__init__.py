"""Identity: accounts, passwords, tokens, roles, and who is calling.

Other modules import ``engineroom.identity.public`` only.
"""

from __future__ import annotations

from pathlib import Path

from engineroom.core.errors import errors_object_response
from engineroom.core.module import Module
from engineroom.core.platform import Platform
from engineroom.identity import (
    accounts,
    admin_router,
    api_keys,
    audit,
    lifecycle_mail,
    mfa,
    profile_cache,
    realworld,
    router,
    routers_admin,
    routers_api_keys,
    routers_lifecycle,
    routers_mfa,
    routers_sessions,
    sessions,
)
from engineroom.identity import graphql as identity_graphql
from engineroom.identity.commands import commands
from engineroom.identity.keys import key_ring
from engineroom.identity.resolver import register_handler, resolve_principal
from engineroom.identity.second_factor import register_second_factor
from engineroom.identity.session_store import close_session_store

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Cookie sessions, API keys (also as "Bearer er_...") and the MFA step of token login.
register_handler("session", sessions.resolve_session)
register_handler("api_key", api_keys.resolve_api_key, bearer_prefix=api_keys.KEY_PREFIX)
register_second_factor(mfa.start_token_login)


async def _start(platform: Platform) -> None:
    accounts.register_database(platform.database)
    profile_cache.install(platform)
    # The first start makes the first signing key, so the first login does not have to.
    await key_ring(platform).reload(create=True)


module = Module(
    name="identity",
    routers=(
        router.router,
        admin_router.router,
        realworld.router,
        router.well_known,
        routers_sessions.router,
        routers_api_keys.router,
        routers_mfa.router,
        routers_lifecycle.router,
        routers_admin.router,
    ),
    graphql_queries=identity_graphql.QUERIES,
    graphql_mutations=identity_graphql.MUTATIONS,
    jobs=lifecycle_mail.JOBS,
    migrations=MIGRATIONS_DIR,
    # The RealWorld routes (/api/users, /api/user) answer {"errors": {...}}; /api/v1 keeps
    # problem documents (the kernel gives that prefix precedence).
    error_renderers={"/api/": errors_object_response},
    principal_resolver=resolve_principal,
    on_startup=(_start,),
    # Audit entries of refused attempts are written after their request: wait for them.
    on_shutdown=(close_session_store, audit.flush),
    openapi_tag="identity",
    commands=commands,
    description="Accounts, passwords, tokens, roles and the callers of every request.",
)

__all__ = ["MIGRATIONS_DIR", "module"]
