"""Profiles and follows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.blog import repository
from engineroom.blog.authors import UserDirectory, ensure_author, find_author, viewer_id
from engineroom.blog.errors import CannotFollowSelf, ProfileNotFound
from engineroom.blog.views import ProfileView
from engineroom.core.auth import Principal


async def following_flags(
    session: AsyncSession, viewer: uuid.UUID | None, user_ids: Sequence[uuid.UUID]
) -> list[bool]:
    """Whether ``viewer`` follows each user (one statement for all of them)."""
    if viewer is None:
        return [False] * len(user_ids)
    found = await repository.followed_among(session, viewer, user_ids)
    return [user_id in found for user_id in user_ids]


async def get_profile(
    session: AsyncSession, *, username: str, principal: Principal | None, directory: UserDirectory
) -> ProfileView:
    author = await find_author(session, username, directory)
    if author is None:
        raise ProfileNotFound(f"No profile named '{username}'.")
    viewer = viewer_id(principal)
    following = viewer is not None and bool(
        await repository.followed_among(session, viewer, [author.user_id])
    )
    return ProfileView(
        user_id=author.user_id,
        username=author.username,
        bio=author.bio,
        image=author.image,
        following=following,
    )


async def follow(
    session: AsyncSession,
    *,
    username: str,
    principal: Principal,
    directory: UserDirectory,
    on: bool,
) -> ProfileView:
    """Follow (``on``) or unfollow ``username``; both are idempotent."""
    follower = await ensure_author(session, principal)
    author = await find_author(session, username, directory)
    if author is None:
        raise ProfileNotFound(f"No profile named '{username}'.")
    if on:
        if author.user_id == follower:
            raise CannotFollowSelf(
                "You cannot follow yourself.", field_errors={"username": ["is yourself"]}
            )
        await repository.add_follow(session, follower, author.user_id)
    else:
        await repository.remove_follow(session, follower, author.user_id)
    return ProfileView(
        user_id=author.user_id,
        username=author.username,
        bio=author.bio,
        image=author.image,
        following=on,
    )
