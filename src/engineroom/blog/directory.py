"""Looking users up through the identity module's facade, when it runs in this process."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.blog.authors import NoDirectory, UserDirectory, UserSnapshot
from engineroom.identity import public as identity


class IdentityDirectory:
    async def by_username(self, session: AsyncSession, username: str) -> UserSnapshot | None:
        user = await identity.get_user_by_username(session, username)
        if user is None or not user.is_active:
            return None
        return UserSnapshot(user_id=user.id, username=user.username, bio=user.bio, image=user.image)


def directory_for(module_names: set[str]) -> UserDirectory:
    """Identity's facade when its tables are in this database, else events only."""
    return IdentityDirectory() if "identity" in module_names else NoDirectory()
