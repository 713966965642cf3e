"""Request dependencies: the platform, the unit of work and the read session.

``SessionDep`` opens the request's one transaction and commits it after the route returns
but before the response is sent (``scope="function"``), so a failed commit becomes an
error response instead of a success whose data was lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.platform import Platform


async def get_platform(request: Request) -> Platform:
    # async on purpose: FastAPI runs plain-def dependencies in its thread pool, which
    # would cost every request a thread hop for a dictionary lookup.
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def get_session(platform: PlatformDep) -> AsyncIterator[AsyncSession]:
    async with platform.database.unit_of_work() as session:
        yield session


async def get_read_session(platform: PlatformDep) -> AsyncIterator[AsyncSession]:
    async with platform.database.read_only() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
