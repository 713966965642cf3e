"""The identity module's facade: the only thing other modules import from it.

Users are referred to by id everywhere else; these functions answer who a user is, and
``verify_access_token`` turns a JWT into a ``Principal`` without touching the database
(the signing keys are cached in the process). The event types and their payloads are
part of this contract:

- ``identity.user.registered`` / ``identity.user.updated``: ``{"user_id", "username",
  "email", "bio", "image"}``, the full snapshot after the change;
- ``identity.user.disabled`` / ``.enabled`` / ``.deleted``: ``{"user_id", "username"}``;
- ``identity.user.logged_in``: ``{"user_id", "method"}`` (``"password"``, ``"refresh"``, ...).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.auth import Principal
from engineroom.core.platform import Platform
from engineroom.identity import repository, tokens
from engineroom.identity.errors import TokenExpired, TokenInvalid
from engineroom.identity.events import (
    EVENT_USER_DELETED,
    EVENT_USER_DISABLED,
    EVENT_USER_ENABLED,
    EVENT_USER_LOGGED_IN,
    EVENT_USER_REGISTERED,
    EVENT_USER_UPDATED,
)
from engineroom.identity.models import User


@dataclass(frozen=True)
class UserInfo:
    id: uuid.UUID
    username: str
    email: str
    bio: str | None
    image: str | None
    is_active: bool
    roles: frozenset[str]


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> UserInfo | None:
    """The user with this id, or ``None``."""
    found = await get_users(session, [user_id])
    return found.get(user_id)


def _user_info(user: User, roles: Iterable[str]) -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        email=user.email,
        bio=user.bio,
        image=user.image,
        is_active=user.is_active,
        roles=frozenset(roles),
    )


async def get_users(
    session: AsyncSession, user_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, UserInfo]:
    """The users among ``user_ids`` that exist, by id (two queries whatever the count)."""
    users = await repository.users_by_ids(session, user_ids)
    roles = await repository.role_names_of(session, [user.id for user in users])
    return {user.id: _user_info(user, roles.get(user.id, ())) for user in users}


async def get_user_by_username(session: AsyncSession, username: str) -> UserInfo | None:
    """The user with this username (compared case-insensitively), or ``None``."""
    found = await get_users_by_usernames(session, [username])
    return found.get(username)


async def get_users_by_usernames(
    session: AsyncSession, usernames: Collection[str]
) -> dict[str, UserInfo]:
    """The users named in ``usernames`` that exist, keyed by each name as it was given
    (one query whatever the count).

    Names compare case-insensitively, as in ``get_user_by_username``: ``"Bob"`` and
    ``"bob"`` both find the user ``bob``, and both are keys when both are asked for.
    Disabled users are included (``is_active`` is false); names that match nobody are
    left out.
    """
    found = await repository.users_with_roles_by_username(session, usernames)
    by_key = {user.username_key: _user_info(user, roles) for user, roles in found}
    return {
        name: by_key[key] for name in usernames if (key := repository.username_key(name)) in by_key
    }


async def verify_access_token(platform: Platform, token: str) -> Principal:
    """Verify a JWT access token and return its principal.

    Raises ``TokenExpired`` (code ``token_expired``) or ``TokenInvalid`` (code
    ``token_invalid``), both 401; never returns ``None``. Only the cached signing keys are
    read, so a disabled user keeps access until the token expires (15 minutes by default).
    """
    return await tokens.verify_access_token(platform, token)


__all__ = [
    "EVENT_USER_DELETED",
    "EVENT_USER_DISABLED",
    "EVENT_USER_ENABLED",
    "EVENT_USER_LOGGED_IN",
    "EVENT_USER_REGISTERED",
    "EVENT_USER_UPDATED",
    "TokenExpired",
    "TokenInvalid",
    "UserInfo",
    "get_user",
    "get_user_by_username",
    "get_users",
    "get_users_by_usernames",
    "verify_access_token",
]
