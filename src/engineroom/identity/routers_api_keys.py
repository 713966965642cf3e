"""``/api/v1/identity/api-keys``: keys for machines, managed by their signed-in owner."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from engineroom.core.auth import CurrentPrincipal, Principal
from engineroom.core.deps import SessionDep
from engineroom.core.errors import RateLimited, Unauthorized, error_responses
from engineroom.core.ratelimit import RateLimit
from engineroom.identity import accounts, api_keys, audit, protection
from engineroom.identity.csrf import CsrfFailed
from engineroom.identity.models import User
from engineroom.identity.router import PREFIX, ClientDep
from engineroom.identity.schemas_credentials import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyRead,
)

router = APIRouter(prefix=f"{PREFIX}/api-keys", tags=["identity"])


async def signed_in_user(principal: CurrentPrincipal, session: SessionDep) -> User:
    """The account of its owner signed in (token or session). API keys are refused (403):
    a key neither mints keys nor manages sessions or MFA."""
    if principal.kind != "user":
        raise api_keys.ApiKeyForbidden(
            "Credentials are managed by their owner signed in, not with an API key."
        )
    # A token outlives a deleted or disabled account by minutes: check the account now.
    return await accounts.user_for_principal(session, principal)


SignedInUser = Annotated[User, Depends(signed_in_user)]


async def key_owner(principal: CurrentPrincipal, user: SignedInUser) -> Principal:
    """The principal managing keys: its scopes bound those of the keys it creates."""
    return principal


Owner = Annotated[Principal, Depends(key_owner)]


def _user_id(principal: Principal) -> uuid.UUID:
    return uuid.UUID(principal.subject)


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    description="The answer is the only time the whole key is shown; store it. Scopes "
    "must be among your own permissions. Send the key as `Authorization: Bearer <key>` "
    "or `X-API-Key: <key>`.",
    responses=error_responses(
        Unauthorized,
        CsrfFailed,
        api_keys.ApiKeyScopeNotAllowed,
        api_keys.ApiKeyLimitReached,
        api_keys.ApiKeyForbidden,
        RateLimited,
    ),
    dependencies=[Depends(RateLimit("30/hour", scope="identity-api-key-create"))],
)
async def create_key(
    body: ApiKeyCreate, owner: Owner, session: SessionDep, client: ClientDep
) -> ApiKeyCreated:
    row, key = await api_keys.create_api_key(
        session, creator=owner, name=body.name, scopes=body.scopes, expires_at=body.expires_at
    )
    protection.record(
        session, audit.Action.API_KEY_CREATE, client, user_id=row.user_id, api_key=str(row.id)
    )
    return ApiKeyCreated.with_key(row, key)


@router.get(
    "",
    response_model=ApiKeyList,
    summary="My API keys (never their secrets)",
    responses=error_responses(Unauthorized, api_keys.ApiKeyForbidden),
)
async def list_keys(owner: Owner, session: SessionDep) -> ApiKeyList:
    rows = await api_keys.list_api_keys(session, _user_id(owner))
    return ApiKeyList(api_keys=[ApiKeyRead.of(row) for row in rows])


@router.get(
    "/{key_id}",
    response_model=ApiKeyRead,
    summary="One of my API keys",
    responses=error_responses(Unauthorized, api_keys.ApiKeyForbidden, api_keys.ApiKeyNotFound),
)
async def get_key(key_id: uuid.UUID, owner: Owner, session: SessionDep) -> ApiKeyRead:
    return ApiKeyRead.of(await api_keys.get_api_key(session, _user_id(owner), key_id))


@router.delete(
    "/{key_id}",
    status_code=204,
    summary="Revoke one of my API keys",
    description="The key stops working at once. Revoking twice is not an error.",
    responses=error_responses(
        Unauthorized, CsrfFailed, api_keys.ApiKeyForbidden, api_keys.ApiKeyNotFound
    ),
)
async def revoke_key(
    key_id: uuid.UUID, owner: Owner, session: SessionDep, client: ClientDep
) -> Response:
    await api_keys.revoke_api_key(session, _user_id(owner), key_id)
    protection.record(
        session, audit.Action.API_KEY_REVOKE, client, user_id=owner.subject, api_key=str(key_id)
    )
    return Response(status_code=204)
