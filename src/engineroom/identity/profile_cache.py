"""A short-lived copy of a user's public profile for the hot ``GET /api/user``.

RealWorld clients call ``GET /api/user`` on every page load. The token already proves
who is asking, so the answer needs only the profile, which this keeps in the platform
cache (memory, or Redis when scaled out) for ``PROFILE_TTL``. Code that changes a profile
calls ``changed(session, user_id)``: the entry is dropped once that transaction commits
(and routes may ``forget`` at once as well). A change made without it shows within
``PROFILE_TTL``, well inside the lifetime of the access token that keeps working anyway.
A cache failure is a miss.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.platform import Platform
from engineroom.identity import repository

PROFILE_TTL = 30
_PREFIX = "identity:profile:"
_CHANGED = "identity.profiles_changed"
_PENDING: set[asyncio.Task[None]] = set()
_LOADING: weakref.WeakKeyDictionary[
    Platform, dict[uuid.UUID, asyncio.Task[CachedProfile | None]]
] = weakref.WeakKeyDictionary()
"""Reads of a profile in progress, per platform: concurrent misses await the same one."""
logger = structlog.get_logger("engineroom.identity")


@dataclass(frozen=True)
class CachedProfile:
    email: str
    username: str
    bio: str | None
    image: str | None
    active: bool


def _key(user_id: uuid.UUID) -> str:
    return f"{_PREFIX}{user_id}"


async def profile(platform: Platform, user_id: uuid.UUID) -> CachedProfile | None:
    """The user's profile, from the cache or the database (``None``: no such user).

    A hit opens no database session at all; a miss reads in a short read transaction,
    and the requests that miss the same profile at the same time share that one read
    (when an entry expires under load, every request in flight for that user misses
    together).
    """
    try:
        found = await platform.cache.get(_key(user_id))
    except Exception:  # any cache failure is a miss: the database answers
        logger.warning("profile_cache_unavailable", exc_info=True)
        found = None
    if isinstance(found, CachedProfile):
        return found
    loading = _LOADING.setdefault(platform, {})
    task = loading.get(user_id)
    if task is None:
        task = loading[user_id] = asyncio.get_running_loop().create_task(_load(platform, user_id))
        task.add_done_callback(lambda _: loading.pop(user_id, None))
    # Shielded: one caller going away (a client disconnect) must not cancel the others' read.
    return await asyncio.shield(task)


async def _load(platform: Platform, user_id: uuid.UUID) -> CachedProfile | None:
    async with platform.database.read_only() as session:
        user = await repository.user_by_id(session, user_id)
        if user is None:
            return None
        fresh = CachedProfile(
            email=user.email,
            username=user.username,
            bio=user.bio,
            image=user.image,
            active=user.is_active,
        )
    try:
        await platform.cache.set(_key(user_id), fresh, expire=PROFILE_TTL)
    except Exception:
        logger.warning("profile_cache_unavailable", exc_info=True)
    return fresh


async def forget(platform: Platform, user_id: uuid.UUID) -> None:
    """Drop the cached profile (after the user changed it)."""
    try:
        await platform.cache.delete(_key(user_id))
    except Exception:
        logger.warning("profile_cache_unavailable", exc_info=True)


def changed(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Drop ``user_id``'s cached profile when ``session``'s transaction commits."""
    session.info.setdefault(_CHANGED, set()).add(user_id)


def install(platform: Platform) -> None:
    """Forget the profiles changed by each committed unit of work of ``platform``."""

    def after_commit(session: AsyncSession) -> None:
        user_ids: set[uuid.UUID] | None = session.info.pop(_CHANGED, None)
        if not user_ids:
            return
        task = asyncio.get_running_loop().create_task(_forget_all(platform, user_ids))
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)

    platform.database.add_after_commit_hook(after_commit)


async def _forget_all(platform: Platform, user_ids: set[uuid.UUID]) -> None:
    for user_id in user_ids:
        await forget(platform, user_id)
