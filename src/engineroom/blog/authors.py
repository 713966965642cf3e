"""The blog's projection of identity users (``blog_author``) and how it is kept fed.

Identity's events fill it (``identity.user.registered``/``updated`` carry a full snapshot,
``deleted`` removes the user's traces). Events can arrive late, so a writer's token seeds
the row the instant a new user first writes, and a profile looked up before any event
landed is asked from identity's facade when that module runs in this process.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.blog import repository
from engineroom.blog.errors import InvalidInput
from engineroom.blog.models import Author
from engineroom.core.auth import Principal
from engineroom.core.errors import Forbidden, Unauthorized

SEEDED_AT = datetime(1970, 1, 1, tzinfo=UTC)
"""``synced_at`` of a row seeded from a token: any event about the user wins over it."""


@dataclass(frozen=True)
class UserSnapshot:
    user_id: uuid.UUID
    username: str
    bio: str | None
    image: str | None


class UserDirectory(Protocol):
    """Where to ask about a user the projection does not know yet."""

    async def by_username(self, session: AsyncSession, username: str) -> UserSnapshot | None: ...


class NoDirectory:
    """The blog runs without the identity module in its process: events only."""

    async def by_username(self, session: AsyncSession, username: str) -> UserSnapshot | None:
        return None


def viewer_id(principal: Principal | None) -> uuid.UUID | None:
    if principal is None:
        return None
    return writer_id(principal)


def writer_id(principal: Principal) -> uuid.UUID:
    """The user id behind ``principal``; services and API keys of services cannot write."""
    if principal.kind == "service":
        raise Forbidden("Only users can write to the blog.")
    try:
        return uuid.UUID(principal.subject)
    except ValueError:
        raise Unauthorized("The credentials do not name a user.") from None


async def ensure_author(session: AsyncSession, principal: Principal) -> uuid.UUID:
    """Make sure the writer has a projection row (seeded from the token) and return its id."""
    user_id = writer_id(principal)
    if await repository.author_exists(session, user_id):
        return user_id
    if not principal.username:
        raise InvalidInput("The token carries no username.", field_errors={"token": ["invalid"]})
    await repository.save_author(
        session,
        user_id=user_id,
        username=principal.username,
        bio=None,
        image=None,
        synced_at=SEEDED_AT,
        insert_only=True,
    )
    return user_id


async def find_author(
    session: AsyncSession, username: str, directory: UserDirectory
) -> UserSnapshot | None:
    """The author named ``username``: the projection, else the directory (not stored: the
    identity event that fills the projection is on its way)."""
    author = await repository.author_by_username(session, username)
    if author is not None:
        return snapshot_of(author)
    return await directory.by_username(session, username)


def snapshot_of(author: Author) -> UserSnapshot:
    return UserSnapshot(
        user_id=author.user_id, username=author.username, bio=author.bio, image=author.image
    )
