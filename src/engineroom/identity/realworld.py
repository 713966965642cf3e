"""The RealWorld (Conduit) user endpoints: ``/api/users``, ``/api/users/login``, ``/api/user``.

Shapes follow that spec: ``{"user": {...}}`` in and out, ``Authorization: Token <jwt>``
(``Bearer`` works too), 201 on register, 422 ``{"errors": {"field": ["..."]}}`` for
invalid or taken input (where the native API says 409 for taken), 401 for bad
credentials. Tokens here are plain access tokens with a longer life
(``ENGINEROOM_IDENTITY_REALWORLD_TOKEN_TTL``): RealWorld clients have no refresh flow.
"""

from __future__ import annotations

import uuid

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.auth import CurrentPrincipal, require_principal
from engineroom.core.deps import PlatformDep, SessionDep
from engineroom.core.errors import Conflict, Forbidden, Unauthorized
from engineroom.core.http import direct
from engineroom.core.platform import Platform
from engineroom.core.responses import encoded_json
from engineroom.identity import accounts, audit, profile_cache, protection, repository
from engineroom.identity.config import identity_settings
from engineroom.identity.errors import (
    AccountDisabled,
    InvalidCredentials,
    SecondFactorRequired,
    ValidationFailed,
)
from engineroom.identity.models import User
from engineroom.identity.tokens import issue_access_token

router = APIRouter(prefix="/api", tags=["realworld"])
BLANK = "can't be blank"
_ERRORS: dict[str, object] = {"content": {"application/json": {}}}


class NewUser(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1024)


class NewUserRequest(BaseModel):
    user: NewUser


class LoginUser(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1024)


class LoginUserRequest(BaseModel):
    user: LoginUser


class UpdateUser(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1024)
    username: str | None = Field(default=None, max_length=64)
    bio: str | None = Field(default=None, max_length=10_000)
    image: str | None = Field(default=None, max_length=2048)


class UpdateUserRequest(BaseModel):
    user: UpdateUser


class RealWorldUser(BaseModel):
    email: str
    token: str
    username: str
    bio: str | None
    image: str | None


class UserResponse(BaseModel):
    user: RealWorldUser


def _require(**fields: str | None) -> dict[str, str]:
    blank = {name: [BLANK] for name, value in fields.items() if value is None or not value.strip()}
    if blank:
        raise ValidationFailed(blank)
    return {name: value for name, value in fields.items() if value is not None}


def _as_unprocessable(exc: Conflict) -> ValidationFailed:
    return ValidationFailed(exc.field_errors or {"body": [exc.message]})


async def _response(
    session: AsyncSession,
    platform: Platform,
    user: User,
    token: str | None = None,
    grants: repository.Grants | None = None,
) -> UserResponse:
    if token is None:
        if grants is None:
            grants = await repository.grants_of(session, user.id)
        issued = await issue_access_token(
            platform,
            user_id=user.id,
            username=user.username,
            roles=grants.roles,
            permissions=grants.permissions,
            ttl=identity_settings(platform.settings).realworld_token_ttl,
        )
        token = issued.token
    return UserResponse(
        user=RealWorldUser(
            email=user.email, token=token, username=user.username, bio=user.bio, image=user.image
        )
    )


def presented_token(request: Request) -> str:
    _, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip()


@router.post(
    "/users",
    status_code=201,
    response_model=UserResponse,
    summary="Register (RealWorld)",
    responses={422: _ERRORS},
)
async def register(
    body: NewUserRequest, request: Request, session: SessionDep, platform: PlatformDep
) -> UserResponse:
    given = _require(
        username=body.user.username, email=body.user.email, password=body.user.password
    )
    try:
        user = await accounts.register(
            session,
            identity_settings(platform.settings),
            email=given["email"],
            username=given["username"],
            password=given["password"],
        )
    except Conflict as exc:
        raise _as_unprocessable(exc) from exc
    protection.record(session, audit.Action.REGISTER, audit.client_of(request), user_id=user.id)
    return await _response(session, platform, user)


@router.post(
    "/users/login",
    response_model=UserResponse,
    summary="Log in (RealWorld)",
    responses={401: _ERRORS, 422: _ERRORS, 429: _ERRORS},
)
async def login(body: LoginUserRequest, request: Request) -> Response:
    # Like the native token login (identity/router.py): no dependencies, its own
    # transaction, the answer encoded once.
    given = _require(email=body.user.email, password=body.user.password)
    platform: Platform = request.app.state.platform
    async with platform.database.unit_of_work() as session:
        try:
            signed_in = await protection.authenticate(
                session,
                platform,
                audit.client_of(request),
                email=given["email"],
                password=given["password"],
            )
        except InvalidCredentials as exc:
            raise Unauthorized(
                exc.message, field_errors={"email or password": ["is invalid"]}
            ) from exc
        user = signed_in.user
        if user.mfa_enabled:
            raise SecondFactorRequired(
                "This account uses a second factor: log in with /api/v1/identity/token."
            )
        await accounts.record_login_now(session, user, "password")
        answer = await _response(session, platform, user, grants=signed_in.grants)
    return encoded_json(orjson.dumps(answer.model_dump()))


@router.get(
    "/user",
    response_model=UserResponse,
    summary="Current user (RealWorld)",
    responses={401: _ERRORS, 403: _ERRORS},
)
@direct
async def current_user(request: Request) -> Response:
    # The hot path of RealWorld clients: the token proves who asks, the profile comes
    # from a short-lived cache (see ``profile_cache``), and the kernel serves the route
    # directly (engineroom.core.http.direct), so it resolves the caller itself.
    principal = await require_principal(request)
    platform: Platform = request.app.state.platform
    if principal.kind == "api_key":
        # The answer carries a token the client then uses as its session: an API key is
        # not one. Its owner is readable at GET /api/v1/identity/me.
        raise Forbidden(
            "API keys cannot act as a RealWorld user: log in for a token, "
            "or read the key's owner at GET /api/v1/identity/me."
        )
    if principal.kind != "user":
        raise Unauthorized("The account of these credentials does not exist.")
    try:
        user_id = uuid.UUID(principal.subject)
    except ValueError:
        raise Unauthorized("The account of these credentials does not exist.") from None
    found = await profile_cache.profile(platform, user_id)
    if found is None:
        raise Unauthorized("The account of these credentials does not exist.")
    if not found.active:
        raise AccountDisabled("This account is disabled.")
    # Built directly: every field is already a plain string, so validating the answer
    # against ``UserResponse`` (still its documented shape) would only cost time.
    body = {
        "email": found.email,
        "token": presented_token(request),
        "username": found.username,
        "bio": found.bio,
        "image": found.image,
    }
    return encoded_json(orjson.dumps({"user": body}))


@router.put(
    "/user",
    response_model=UserResponse,
    summary="Update current user (RealWorld)",
    responses={401: _ERRORS, 422: _ERRORS},
)
async def update_user(
    body: UpdateUserRequest,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    platform: PlatformDep,
) -> UserResponse:
    user = await accounts.user_for_principal(session, principal)
    fields = body.user
    sent = fields.model_fields_set
    for name in ("email", "username", "password"):
        if name in sent and not (getattr(fields, name) or "").strip():
            raise ValidationFailed({name: [BLANK]})
    changes = accounts.ProfileChanges(
        email=fields.email,
        username=fields.username,
        password=fields.password,
        bio=fields.bio,
        image=fields.image,
        clear_bio="bio" in sent and not fields.bio,
        clear_image="image" in sent and not fields.image,
    )
    try:
        user = await accounts.update_profile(
            session, identity_settings(platform.settings), user, changes
        )
    except Conflict as exc:
        raise _as_unprocessable(exc) from exc
    if fields.password is not None:
        await protection.password_changed(session, platform, user, audit.client_of(request))
    await profile_cache.forget(platform, user.id)
    # A new token: the old one names the old username.
    return await _response(session, platform, user)
