"""Roles and their permissions (``module:resource:action``, a grant may end in ``*``).

The built-in roles (``admin``, ``moderator``, ``member``) are created by the first
migration and cannot be deleted or redefined; custom roles can. Permissions are copied
into access tokens when they are issued, so a change reaches a user at their next token
(within the access token lifetime).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.identity import repository
from engineroom.identity.errors import (
    BuiltinRole,
    LastAdmin,
    RoleExists,
    RoleNotFound,
    UserNotFound,
    ValidationFailed,
)
from engineroom.identity.models import Role

ADMIN_ROLE = "admin"
ROLE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{1,63}")
_SEGMENT = r"[a-z][a-z0-9_-]*"
PERMISSION_PATTERN = re.compile(rf"\*|{_SEGMENT}:(\*|{_SEGMENT}:(\*|{_SEGMENT}))")
"""``*``, ``module:*``, ``module:resource:*`` or ``module:resource:action``."""
SCOPE_PATTERN = PERMISSION_PATTERN
MAX_PERMISSIONS = 200


@dataclass(frozen=True)
class RoleView:
    id: uuid.UUID
    name: str
    description: str | None
    builtin: bool
    permissions: list[str]


def permission_problems(permissions: Iterable[str]) -> list[str]:
    bad = [p for p in permissions if len(p) > 150 or not PERMISSION_PATTERN.fullmatch(p)]
    return [f"{p!r} is not module:resource:action (or a '*' grant)" for p in bad]


async def list_roles(session: AsyncSession) -> list[RoleView]:
    return [
        RoleView(role.id, role.name, role.description, role.builtin, permissions)
        for role, permissions in await repository.list_roles(session)
    ]


async def role_or_404(session: AsyncSession, name: str) -> Role:
    role = await repository.role_by_name(session, name)
    if role is None:
        raise RoleNotFound(f"No role named {name!r}.")
    return role


async def create_role(
    session: AsyncSession, *, name: str, description: str | None, permissions: list[str]
) -> RoleView:
    problems: dict[str, list[str]] = {}
    if not ROLE_NAME_PATTERN.fullmatch(name):
        problems["name"] = ["must be 2 to 64 characters: a-z, digits, '_' or '-'"]
    if len(permissions) > MAX_PERMISSIONS:
        problems["permissions"] = [f"at most {MAX_PERMISSIONS} permissions"]
    elif permission_problems(permissions):
        problems["permissions"] = permission_problems(permissions)
    if problems:
        raise ValidationFailed(problems)
    if await repository.role_by_name(session, name) is not None:
        raise RoleExists(f"A role named {name!r} exists.", field_errors={"name": ["exists"]})
    role = Role(name=name, description=description, builtin=False)
    session.add(role)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise RoleExists(f"A role named {name!r} exists.") from exc
    await repository.set_role_permissions(session, role.id, permissions)
    return RoleView(role.id, role.name, role.description, False, sorted(set(permissions)))


async def delete_role(session: AsyncSession, name: str) -> None:
    role = await role_or_404(session, name)
    if role.builtin:
        raise BuiltinRole(f"The built-in role {name!r} cannot be deleted.")
    await session.delete(role)
    await session.flush()


async def assign_role(session: AsyncSession, user_id: uuid.UUID, role_name: str) -> bool:
    """Give the user the role; ``False`` if they already had it."""
    role = await role_or_404(session, role_name)
    if await repository.user_by_id(session, user_id) is None:
        raise UserNotFound(f"No user with id {user_id}.")
    if await repository.has_role(session, user_id, role.id):
        return False
    await repository.add_user_role(session, user_id, role.id)
    return True


async def unassign_role(session: AsyncSession, user_id: uuid.UUID, role_name: str) -> None:
    role = await role_or_404(session, role_name)
    if await repository.user_by_id(session, user_id) is None:
        raise UserNotFound(f"No user with id {user_id}.")
    if (
        role.name == ADMIN_ROLE
        and await repository.has_role(session, user_id, role.id)
        and await repository.count_role_members(session, role.id) <= 1
    ):
        # Nobody could manage roles any more; only create-admin would get them back.
        raise LastAdmin("The last admin cannot lose the admin role.")
    await repository.remove_user_role(session, user_id, role.id)
