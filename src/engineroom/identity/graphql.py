"""Identity in the composed GraphQL schema.

Queries: ``me``, ``mySessions``, ``myApiKeys`` for the caller; ``users`` (needs
``identity:user:manage``) and ``auditEvents`` (``identity:audit:read``) for admins and
moderators, cursor-paginated like the REST routes (``first``/``after``, ``nextCursor``).
Mutations: ``revokeMySession`` and ``revokeMyApiKey``. Resolvers call the same services
as the REST routes; users' roles come through a request-scoped DataLoader, so a page of
users costs one roles query.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import cast

import strawberry
from fastapi import Request
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.types import Info

from engineroom.core.auth import Principal
from engineroom.core.errors import BadRequest, Forbidden
from engineroom.core.graphql import GraphQLContext
from engineroom.identity import accounts, api_keys, audit, lifecycle, repository, sessions
from engineroom.identity.models import ApiKey, AuditEvent, User
from engineroom.identity.refresh import ClientInfo
from engineroom.identity.schemas_credentials import ApiKeyRead
from engineroom.identity.session_store import SessionRecord

IdentityInfo = Info[GraphQLContext, None]
_ROLES_LOADER = "identity.roles"


@strawberry.enum(name="IdentityUserStatus")
class UserStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


@strawberry.enum(name="AuditOutcome")
class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    BLOCKED = "blocked"


async def _resolve_roles(root: UserNode, info: IdentityInfo) -> list[str]:
    return await _roles_loader(info).load(uuid.UUID(str(root.id)))


@strawberry.type(name="IdentityUser", description="An account.")
class UserNode:
    id: strawberry.ID
    email: str
    username: str
    bio: str | None
    image: str | None
    email_verified: bool
    mfa_enabled: bool
    disabled: bool
    created_at: datetime

    roles: list[str] = strawberry.field(resolver=_resolve_roles, description="Role names, sorted.")

    @classmethod
    def of(cls, user: User) -> UserNode:
        return cls(
            id=strawberry.ID(str(user.id)),
            email=user.email,
            username=user.username,
            bio=user.bio,
            image=user.image,
            email_verified=user.email_verified_at is not None,
            mfa_enabled=user.mfa_enabled,
            disabled=user.disabled_at is not None,
            created_at=user.created_at,
        )


@strawberry.type(name="IdentitySession", description="A cookie session of mine.")
class SessionNode:
    id: strawberry.ID
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    idle_expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool

    @classmethod
    def of(cls, record: SessionRecord, current_id: str | None) -> SessionNode:
        return cls(
            id=strawberry.ID(record.id),
            created_at=record.created_at,
            last_seen_at=record.last_seen_at,
            expires_at=record.expires_at,
            idle_expires_at=record.idle_expires_at,
            ip=record.ip,
            user_agent=record.user_agent,
            current=record.id == current_id,
        )


@strawberry.type(name="IdentityApiKey", description="An API key of mine (never its secret).")
class ApiKeyNode:
    id: strawberry.ID
    name: str
    prefix: str
    scopes: list[str] | None
    status: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyNode:
        read = ApiKeyRead.of(row)
        return cls(
            id=strawberry.ID(str(read.id)),
            name=read.name,
            prefix=read.prefix,
            scopes=read.scopes,
            status=read.status,
            created_at=read.created_at,
            expires_at=read.expires_at,
            last_used_at=read.last_used_at,
            revoked_at=read.revoked_at,
        )


@strawberry.type(name="IdentityUserPage")
class UserPage:
    nodes: list[UserNode]
    next_cursor: str | None


@strawberry.type(name="AuditEvent", description="One entry of the audit log.")
class AuditEventNode:
    id: strawberry.ID
    occurred_at: datetime
    user_id: strawberry.ID | None
    actor_id: strawberry.ID | None
    action: str
    outcome: str
    ip: str | None
    user_agent: str | None
    details: JSON | None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventNode:
        return cls(
            id=strawberry.ID(str(event.id)),
            occurred_at=event.occurred_at,
            user_id=strawberry.ID(str(event.user_id)) if event.user_id else None,
            actor_id=strawberry.ID(str(event.actor_id)) if event.actor_id else None,
            action=event.action,
            outcome=event.outcome,
            ip=event.ip,
            user_agent=event.user_agent,
            details=cast(JSON, event.details) if event.details is not None else None,
        )


@strawberry.type(name="AuditEventPage")
class AuditEventPage:
    nodes: list[AuditEventNode]
    next_cursor: str | None


def _roles_loader(info: IdentityInfo) -> DataLoader[uuid.UUID, list[str]]:
    context = info.context

    async def load(user_ids: list[uuid.UUID]) -> list[list[str]]:
        names = await context.exclusive(lambda: repository.role_names_of(context.session, user_ids))
        return [sorted(names.get(user_id, [])) for user_id in user_ids]

    return info.context.loaders.get(_ROLES_LOADER, lambda: DataLoader(load_fn=load))


async def _me(info: IdentityInfo) -> tuple[Principal, User]:
    principal = await info.context.require_principal()
    return principal, await _user_of(info, principal)


async def _user_of(info: IdentityInfo, principal: Principal) -> User:
    # Sibling fields of other modules may use the session at the same time.
    return await info.context.exclusive(
        lambda: accounts.user_for_principal(info.context.session, principal)
    )


async def _owner(info: IdentityInfo) -> tuple[Principal, User]:
    principal = await info.context.require_principal()
    if principal.kind != "user":
        raise api_keys.ApiKeyForbidden("API keys are managed by their owner signed in.")
    return principal, await _user_of(info, principal)


async def _permitted(info: IdentityInfo, permission: str) -> Principal:
    principal = await info.context.require_principal()
    if not principal.can(permission):
        raise Forbidden(f"Missing permission: {permission}.")
    return principal


def _request(info: IdentityInfo) -> Request:
    return cast(Request, info.context.connection)


def _client(info: IdentityInfo) -> ClientInfo:
    return audit.client_of(_request(info))


def _parse_id(value: strawberry.ID | None, name: str) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadRequest(
            f"{name} is not a valid id.", field_errors={name: ["is invalid"]}
        ) from None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _page_size(first: int, maximum: int) -> int:
    if not 1 <= first <= maximum:
        raise BadRequest(
            f"first must be between 1 and {maximum}.", field_errors={"first": ["out of range"]}
        )
    return first


async def _me_field(info: IdentityInfo) -> UserNode | None:
    if await info.context.principal() is None:
        return None
    _, user = await _me(info)
    return UserNode.of(user)


async def _my_sessions(info: IdentityInfo) -> list[SessionNode]:
    _, user = await _me(info)
    records = await info.context.exclusive(
        lambda: sessions.list_sessions(info.context.session, info.context.platform, user.id)
    )
    current = sessions.current_session(_request(info))
    current_id = current.record.id if current is not None else None
    return [SessionNode.of(record, current_id) for record in records]


async def _my_api_keys(info: IdentityInfo) -> list[ApiKeyNode]:
    _, user = await _owner(info)
    rows = await info.context.exclusive(
        lambda: api_keys.list_api_keys(info.context.session, user.id)
    )
    return [ApiKeyNode.of(row) for row in rows]


async def _users(
    info: IdentityInfo,
    query: str | None = None,
    status: UserStatus | None = None,
    role: str | None = None,
    first: int = 50,
    after: str | None = None,
) -> UserPage:
    await _permitted(info, lifecycle.MANAGE_USERS)
    filters = lifecycle.UserFilter(
        query=query[:100] if query else None,
        status=lifecycle.UserStatus(status.value) if status is not None else None,
        role=role[:64] if role else None,
    )
    limit = _page_size(first, lifecycle.MAX_PAGE)
    page = await info.context.exclusive(
        lambda: lifecycle.search_users(info.context.session, filters, cursor=after, limit=limit)
    )
    # The page came with its roles: the loader serves them without another query.
    loader = _roles_loader(info)
    for user in page.users:
        loader.prime(user.id, sorted(page.roles.get(user.id, [])))
    return UserPage(nodes=[UserNode.of(u) for u in page.users], next_cursor=page.next_cursor)


async def _audit_events(
    info: IdentityInfo,
    user_id: strawberry.ID | None = None,
    actor_id: strawberry.ID | None = None,
    action: str | None = None,
    outcome: AuditOutcome | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    first: int = 50,
    after: str | None = None,
) -> AuditEventPage:
    await _permitted(info, "identity:audit:read")
    filters = audit.AuditFilter(
        user_id=_parse_id(user_id, "userId"),
        actor_id=_parse_id(actor_id, "actorId"),
        action=action[:64] if action else None,
        outcome=outcome.value if outcome is not None else None,
        since=_utc(since),
        until=_utc(until),
    )
    limit = _page_size(first, audit.MAX_PAGE)
    page = await info.context.exclusive(
        lambda: audit.search(info.context.session, filters, cursor=after, limit=limit)
    )
    return AuditEventPage(
        nodes=[AuditEventNode.of(event) for event in page.events],
        next_cursor=page.next_cursor,
    )


async def _revoke_my_session(info: IdentityInfo, id: strawberry.ID) -> bool:
    _, user = await _me(info)
    try:
        await sessions.revoke_session(
            info.context.session, info.context.platform, user.id, str(id)[:64]
        )
    except sessions.SessionNotFound:
        return False
    audit.record(
        info.context.session,
        audit.Action.SESSION_REVOKE,
        user_id=user.id,
        client=_client(info),
        details={"session": str(id)[:64]},
    )
    return True


async def _revoke_my_api_key(info: IdentityInfo, id: strawberry.ID) -> ApiKeyNode:
    _, user = await _owner(info)
    key_id = _parse_id(id, "id")
    assert key_id is not None
    row = await api_keys.revoke_api_key(info.context.session, user.id, key_id)
    audit.record(
        info.context.session,
        audit.Action.API_KEY_REVOKE,
        user_id=user.id,
        client=_client(info),
        details={"api_key": str(row.id), "prefix": row.prefix},
    )
    return ApiKeyNode.of(row)


@strawberry.type
class IdentityQuery:
    me: UserNode | None = strawberry.field(
        resolver=_me_field, description="The signed-in account; null without credentials."
    )
    my_sessions: list[SessionNode] = strawberry.field(
        resolver=_my_sessions, description="My active cookie sessions, oldest first."
    )
    my_api_keys: list[ApiKeyNode] = strawberry.field(
        resolver=_my_api_keys,
        description="My API keys, newest first, revoked and expired ones included.",
    )
    users: UserPage = strawberry.field(
        resolver=_users, description="Users in registration order (identity:user:manage)."
    )
    audit_events: AuditEventPage = strawberry.field(
        resolver=_audit_events, description="The audit log, newest first (identity:audit:read)."
    )


@strawberry.type
class IdentityMutation:
    revoke_my_session: bool = strawberry.mutation(
        resolver=_revoke_my_session,
        description="End one of my sessions; false if it was not active.",
    )
    revoke_my_api_key: ApiKeyNode = strawberry.mutation(
        resolver=_revoke_my_api_key,
        description="Revoke one of my API keys (revoking twice is not an error).",
    )


QUERIES = (IdentityQuery,)
MUTATIONS = (IdentityMutation,)
