"""The per-request GraphQL context: platform, unit of work, principal and DataLoaders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection, Request
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from engineroom.core.auth import Principal, get_optional_principal
from engineroom.core.errors import Unauthorized
from engineroom.core.platform import Platform
from engineroom.settings import Settings

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class Loaders:
    """DataLoaders of one request, by key: every resolver of the request shares them.

    A loader caches what it loaded, so one must never outlive its request (it would
    serve stale rows and leak data between callers); the context makes a new registry
    per request.
    """

    def __init__(self) -> None:
        self._loaders: dict[Hashable, DataLoader[Any, Any]] = {}

    def get(self, key: Hashable, factory: Callable[[], DataLoader[K, V]]) -> DataLoader[K, V]:
        """The loader registered under ``key``, created by ``factory`` on first use."""
        loader = self._loaders.get(key)
        if loader is None:
            loader = self._loaders[key] = factory()
        return cast(DataLoader[K, V], loader)

    def __len__(self) -> int:
        return len(self._loaders)


class GraphQLContext(BaseContext):
    """What resolvers get as ``info.context``.

    ``session`` is the operation's one transaction: committed after the operation
    succeeds, rolled back when any error is reported (the operation is atomic).

    Sibling fields resolve concurrently (that is what lets DataLoaders batch), but one
    ``AsyncSession`` runs one statement at a time: every resolver and loader of every
    module does its database work through ``exclusive``. A resolver must not hold it
    while it awaits a DataLoader (the loader's batch takes it in turn).
    """

    def __init__(
        self, *, connection: HTTPConnection, platform: Platform, session: AsyncSession
    ) -> None:
        super().__init__()
        self.connection = connection
        self.platform = platform
        self.session = session
        self.loaders = Loaders()
        self.failed = False
        """Set when the operation reported errors; the transaction is then rolled back."""
        self._principal: Principal | None = None
        self._principal_resolved = False
        self._session_lock = asyncio.Lock()

    async def exclusive(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` (which uses ``session``) while no other resolver or loader does."""
        async with self._session_lock:
            return await work()

    @property
    def settings(self) -> Settings:
        return self.platform.settings

    async def principal(self) -> Principal | None:
        """The caller, resolved from the request's credentials on first use."""
        if not self._principal_resolved:
            # get_optional_principal reads only what HTTP and WebSocket requests share.
            self._principal = await get_optional_principal(cast(Request, self.connection))
            self._principal_resolved = True
        return self._principal

    async def require_principal(self) -> Principal:
        principal = await self.principal()
        if principal is None:
            raise Unauthorized("Authentication required.", headers={"WWW-Authenticate": "Bearer"})
        return principal


class _RollBack(Exception):
    """Raised inside the unit of work to roll it back without an error response."""


async def _open_context(connection: HTTPConnection) -> AsyncIterator[GraphQLContext]:
    platform: Platform = connection.app.state.platform
    try:
        async with platform.database.unit_of_work() as session:
            context = GraphQLContext(connection=connection, platform=platform, session=session)
            yield context
            if context.failed:
                raise _RollBack
    except _RollBack:
        return


async def get_graphql_context(
    # scope="function": commit before the response is sent, so a failed commit is an
    # error response rather than a reported success whose writes were lost.
    context: Annotated[GraphQLContext, Depends(_open_context, scope="function")],
) -> GraphQLContext:
    return context
