"""Role administration under ``/api/v1/identity``: ``identity:role:manage`` required."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from engineroom.core.auth import Principal, require
from engineroom.core.deps import ReadSessionDep, SessionDep
from engineroom.core.errors import Forbidden, Unauthorized, error_responses
from engineroom.identity import audit, protection, rbac, repository
from engineroom.identity.errors import (
    BuiltinRole,
    LastAdmin,
    RoleExists,
    RoleNotFound,
    UserNotFound,
    ValidationFailed,
)
from engineroom.identity.router import PREFIX, ClientDep
from engineroom.identity.schemas import RoleCreate, RoleList, RoleRead, UserRoles

MANAGE_ROLES = "identity:role:manage"
RoleManager = Annotated[Principal, Depends(require(MANAGE_ROLES))]
_AUTH_ERRORS = (Unauthorized, Forbidden)

router = APIRouter(prefix=PREFIX, tags=["identity"])


def _role(view: rbac.RoleView) -> RoleRead:
    return RoleRead(
        id=view.id,
        name=view.name,
        description=view.description,
        builtin=view.builtin,
        permissions=view.permissions,
    )


@router.get(
    "/roles",
    response_model=RoleList,
    summary="List roles and their permissions",
    responses=error_responses(*_AUTH_ERRORS),
)
async def list_roles(_: RoleManager, session: ReadSessionDep) -> RoleList:
    return RoleList(roles=[_role(view) for view in await rbac.list_roles(session)])


@router.post(
    "/roles",
    status_code=201,
    response_model=RoleRead,
    summary="Create a custom role",
    responses=error_responses(*_AUTH_ERRORS, ValidationFailed, RoleExists),
)
async def create_role(body: RoleCreate, _: RoleManager, session: SessionDep) -> RoleRead:
    view = await rbac.create_role(
        session, name=body.name, description=body.description, permissions=body.permissions
    )
    return _role(view)


@router.delete(
    "/roles/{name}",
    status_code=204,
    summary="Delete a custom role",
    responses=error_responses(*_AUTH_ERRORS, RoleNotFound, BuiltinRole),
)
async def delete_role(name: str, _: RoleManager, session: SessionDep) -> Response:
    await rbac.delete_role(session, name)
    return Response(status_code=204)


async def _user_roles(session: SessionDep, user_id: uuid.UUID) -> UserRoles:
    names = await repository.role_names_of(session, [user_id])
    return UserRoles(user_id=user_id, roles=names.get(user_id, []))


@router.get(
    "/users/{user_id}/roles",
    response_model=UserRoles,
    summary="A user's roles",
    responses=error_responses(*_AUTH_ERRORS, UserNotFound),
)
async def user_roles(user_id: uuid.UUID, _: RoleManager, session: SessionDep) -> UserRoles:
    if await repository.user_by_id(session, user_id) is None:
        raise UserNotFound(f"No user with id {user_id}.")
    return await _user_roles(session, user_id)


@router.put(
    "/users/{user_id}/roles/{name}",
    response_model=UserRoles,
    summary="Give a user a role",
    responses=error_responses(*_AUTH_ERRORS, UserNotFound, RoleNotFound),
)
async def assign_role(
    user_id: uuid.UUID, name: str, admin: RoleManager, session: SessionDep, client: ClientDep
) -> UserRoles:
    if await rbac.assign_role(session, user_id, name):
        protection.record(
            session,
            audit.Action.ROLE_ASSIGN,
            client,
            user_id=user_id,
            actor_id=admin.subject,
            role=name,
        )
    return await _user_roles(session, user_id)


@router.delete(
    "/users/{user_id}/roles/{name}",
    response_model=UserRoles,
    summary="Take a role from a user",
    responses=error_responses(*_AUTH_ERRORS, UserNotFound, RoleNotFound, LastAdmin),
)
async def unassign_role(
    user_id: uuid.UUID, name: str, admin: RoleManager, session: SessionDep, client: ClientDep
) -> UserRoles:
    await rbac.unassign_role(session, user_id, name)
    protection.record(
        session,
        audit.Action.ROLE_UNASSIGN,
        client,
        user_id=user_id,
        actor_id=admin.subject,
        role=name,
    )
    return await _user_roles(session, user_id)
