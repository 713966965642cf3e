"""All SQL for users and roles."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.identity.models import Role, RolePermission, User, UserRole


@dataclass(frozen=True)
class Grants:
    """A user's role names and the union of their permissions (what an access token says)."""

    roles: frozenset[str]
    permissions: frozenset[str]


@dataclass(frozen=True)
class Account:
    user: User
    grants: Grants


def username_key(username: str) -> str:
    return username.casefold()


async def users_by_ids(session: AsyncSession, user_ids: Collection[uuid.UUID]) -> list[User]:
    if not user_ids:
        return []
    result = await session.scalars(select(User).where(User.id.in_(set(user_ids))))
    return list(result)


async def user_by_id(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.scalars(select(User).where(User.email == email))
    return result.one_or_none()


async def user_by_username(session: AsyncSession, username: str) -> User | None:
    result = await session.scalars(select(User).where(User.username_key == username_key(username)))
    return result.one_or_none()


async def users_with_roles_by_username(
    session: AsyncSession, usernames: Iterable[str]
) -> list[tuple[User, list[str]]]:
    """The users whose username is one of ``usernames`` (in any case), each with its role
    names, in one statement whatever the count."""
    keys = {username_key(username) for username in usernames}
    if not keys:
        return []
    rows = await session.execute(
        select(User, Role.name)
        .outerjoin(UserRole, UserRole.user_id == User.id)
        .outerjoin(Role, Role.id == UserRole.role_id)
        .where(User.username_key.in_(keys))
    )
    found: dict[uuid.UUID, tuple[User, list[str]]] = {}
    for user, role in rows:
        _, roles = found.setdefault(user.id, (user, []))
        if role is not None:
            roles.append(role)
    return list(found.values())


async def email_taken(
    session: AsyncSession, email: str, *, excluding: uuid.UUID | None = None
) -> bool:
    query = select(User.id).where(User.email == email)
    if excluding is not None:
        query = query.where(User.id != excluding)
    return (await session.scalar(query)) is not None


async def username_taken(
    session: AsyncSession, username: str, *, excluding: uuid.UUID | None = None
) -> bool:
    query = select(User.id).where(User.username_key == username_key(username))
    if excluding is not None:
        query = query.where(User.id != excluding)
    return (await session.scalar(query)) is not None


async def role_names_of(
    session: AsyncSession, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    ids = set(user_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(UserRole.user_id, Role.name)
        .join(Role, Role.id == UserRole.role_id)
        .where(UserRole.user_id.in_(ids))
        .order_by(Role.name)
    )
    names: dict[uuid.UUID, list[str]] = {}
    for user_id, name in rows:
        names.setdefault(user_id, []).append(name)
    return names


async def grants_of(session: AsyncSession, user_id: uuid.UUID) -> Grants:
    """The user's role names and the union of their permissions."""
    roles, permissions = await roles_and_permissions(session, user_id)
    return Grants(roles=roles, permissions=permissions)


async def roles_and_permissions(
    session: AsyncSession, user_id: uuid.UUID
) -> tuple[frozenset[str], frozenset[str]]:
    """The user's role names and the union of their permissions."""
    rows = await session.execute(
        select(Role.name, RolePermission.permission)
        .select_from(UserRole)
        .join(Role, Role.id == UserRole.role_id)
        .outerjoin(RolePermission, RolePermission.role_id == Role.id)
        .where(UserRole.user_id == user_id)
    )
    roles: set[str] = set()
    permissions: set[str] = set()
    for name, permission in rows:
        roles.add(name)
        if permission is not None:
            permissions.add(permission)
    return frozenset(roles), frozenset(permissions)


async def _account(session: AsyncSession, condition: ColumnElement[bool]) -> Account | None:
    # One statement for the user and its grants: a login needs both, and each statement
    # is a round trip (on SQLite, several hops to the driver's thread).
    rows = (
        await session.execute(
            select(User, Role.name, RolePermission.permission)
            .outerjoin(UserRole, UserRole.user_id == User.id)
            .outerjoin(Role, Role.id == UserRole.role_id)
            .outerjoin(RolePermission, RolePermission.role_id == Role.id)
            .where(condition)
        )
    ).all()
    if not rows:
        return None
    roles = frozenset(name for _, name, _ in rows if name is not None)
    permissions = frozenset(permission for _, _, permission in rows if permission is not None)
    return Account(user=rows[0][0], grants=Grants(roles=roles, permissions=permissions))


async def account_by_email(session: AsyncSession, email: str) -> Account | None:
    """The user with this (normalized) email and its grants, in one statement."""
    return await _account(session, User.email == email)


async def account_by_id(session: AsyncSession, user_id: uuid.UUID) -> Account | None:
    """The user and its grants, in one statement."""
    return await _account(session, User.id == user_id)


# ---- roles ------------------------------------------------------------------------------


async def role_by_name(session: AsyncSession, name: str) -> Role | None:
    result = await session.scalars(select(Role).where(Role.name == name))
    return result.one_or_none()


async def list_roles(session: AsyncSession) -> list[tuple[Role, list[str]]]:
    roles = list(await session.scalars(select(Role).order_by(Role.name)))
    rows = await session.execute(
        select(RolePermission.role_id, RolePermission.permission).order_by(
            RolePermission.permission
        )
    )
    permissions: dict[uuid.UUID, list[str]] = {}
    for role_id, permission in rows:
        permissions.setdefault(role_id, []).append(permission)
    return [(role, permissions.get(role.id, [])) for role in roles]


async def permissions_of_role(session: AsyncSession, role_id: uuid.UUID) -> list[str]:
    result = await session.scalars(
        select(RolePermission.permission)
        .where(RolePermission.role_id == role_id)
        .order_by(RolePermission.permission)
    )
    return list(result)


async def set_role_permissions(
    session: AsyncSession, role_id: uuid.UUID, permissions: Iterable[str]
) -> None:
    await session.execute(delete(RolePermission).where(RolePermission.role_id == role_id))
    session.add_all(
        RolePermission(role_id=role_id, permission=permission) for permission in set(permissions)
    )
    await session.flush()


async def has_role(session: AsyncSession, user_id: uuid.UUID, role_id: uuid.UUID) -> bool:
    found = await session.get(UserRole, (user_id, role_id))
    return found is not None


async def add_user_role(session: AsyncSession, user_id: uuid.UUID, role_id: uuid.UUID) -> None:
    session.add(UserRole(user_id=user_id, role_id=role_id))
    await session.flush()


async def remove_user_role(session: AsyncSession, user_id: uuid.UUID, role_id: uuid.UUID) -> bool:
    result = await session.execute(
        delete(UserRole).where(UserRole.user_id == user_id, UserRole.role_id == role_id)
    )
    return bool(getattr(result, "rowcount", 0))


async def count_role_members(session: AsyncSession, role_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count()).select_from(UserRole).where(UserRole.role_id == role_id)
    )
    return int(count or 0)
