"""The native identity API: accounts and tokens under ``/api/v1/identity``, and the JWKS."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.auth import CurrentPrincipal
from engineroom.core.deps import PlatformDep, SessionDep
from engineroom.core.errors import RateLimited, ServiceUnavailable, Unauthorized, error_responses
from engineroom.core.platform import Platform
from engineroom.core.responses import encoded_json
from engineroom.identity import (
    accounts,
    audit,
    profile_cache,
    protection,
    rbac,
    refresh,
    repository,
)
from engineroom.identity.config import identity_settings
from engineroom.identity.crypto import DecryptionError
from engineroom.identity.errors import (
    AccountDisabled,
    EmailTaken,
    InvalidCredentials,
    RefreshTokenInvalid,
    UsernameTaken,
    ValidationFailed,
    WrongPassword,
)
from engineroom.identity.keys import key_ring
from engineroom.identity.models import User
from engineroom.identity.schemas import (
    Jwks,
    LoginRequest,
    MfaRequiredResponse,
    PasswordChange,
    ProfileUpdate,
    RefreshRequest,
    RegisterRequest,
    TokenResponse,
    UserRead,
)
from engineroom.identity.second_factor import start_second_factor

PREFIX = "/api/v1/identity"
router = APIRouter(prefix=PREFIX, tags=["identity"])
well_known = APIRouter(tags=["identity"])


def _client_of(request: Request) -> refresh.ClientInfo:
    return refresh.ClientInfo(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


async def client_info(request: Request) -> refresh.ClientInfo:
    # async on purpose: FastAPI runs a plain-def dependency in its thread pool, a thread
    # hop per request for two attribute reads.
    return _client_of(request)


ClientDep = Annotated[refresh.ClientInfo, Depends(client_info)]


async def current_user(session: SessionDep, principal: CurrentPrincipal) -> User:
    return await accounts.user_for_principal(session, principal)


CurrentUser = Annotated[User, Depends(current_user)]


async def reading_user(session: SessionDep, principal: CurrentPrincipal) -> User:
    """Like ``current_user``, but an API key may read its owner's account too."""
    return await accounts.user_for_principal(session, principal, allow_api_key=True)


def parse_scope(scope: str | None) -> list[str] | None:
    if scope is None:
        return None
    scopes = scope.split()
    problems = rbac.permission_problems(scopes)
    if problems or not scopes:
        raise ValidationFailed({"scope": problems or ["must name at least one permission"]})
    return scopes


async def _read(session: AsyncSession, user: User) -> UserRead:
    roles = await repository.role_names_of(session, [user.id])
    return UserRead.of(user, roles.get(user.id, []))


@router.post(
    "/users",
    status_code=201,
    response_model=UserRead,
    summary="Register an account",
    responses=error_responses(ValidationFailed, EmailTaken, UsernameTaken),
)
async def register(
    body: RegisterRequest, session: SessionDep, platform: PlatformDep, client: ClientDep
) -> UserRead:
    user = await accounts.register(
        session,
        identity_settings(platform.settings),
        email=body.email,
        username=body.username,
        password=body.password,
    )
    protection.record(session, audit.Action.REGISTER, client, user_id=user.id)
    return UserRead.of(user, [accounts.MEMBER_ROLE])


@router.post(
    "/token",
    response_model=TokenResponse | MfaRequiredResponse,
    summary="Log in with email and password",
    description="Returns an access and a refresh token, or an MFA challenge.",
    responses=error_responses(InvalidCredentials, AccountDisabled, ServiceUnavailable, RateLimited),
)
async def login(body: LoginRequest, request: Request) -> MfaRequiredResponse | Response:
    # Every password login pays for what FastAPI does around a route, so this one takes
    # the platform and the client from the request instead of three dependencies, opens
    # its transaction itself (committed before the answer, as SessionDep does) and sends
    # the tokens encoded once, not validated again against ``response_model`` (which
    # still documents them).
    platform: Platform = request.app.state.platform
    client = _client_of(request)
    scopes = parse_scope(body.scope)
    async with platform.database.unit_of_work() as session:
        signed_in = await protection.authenticate(
            session, platform, client, email=body.email, password=body.password
        )
        user = signed_in.user
        if user.mfa_enabled:
            # The narrowing travels in the challenge: the code step must not widen it.
            challenge = await start_second_factor(session, platform, user, scopes=scopes)
            return MfaRequiredResponse.of(challenge)
        pair, _ = await refresh.issue_pair(
            session, platform, user, scopes=scopes, client=client, grants=signed_in.grants
        )
        await accounts.record_login_now(session, user, "password")
    return encoded_json(orjson.dumps(TokenResponse.of(pair).model_dump()))


@router.post(
    "/token/refresh",
    response_model=TokenResponse,
    summary="Exchange a refresh token for a new pair",
    responses=error_responses(RefreshTokenInvalid),
)
async def refresh_tokens(
    body: RefreshRequest, platform: PlatformDep, client: ClientDep
) -> TokenResponse:
    # Its own transaction: a refused reuse revokes the family, and that must be
    # committed even though the answer is a 401.
    # Concurrent refreshes of one family lock the same rows; on MariaDB one of them may
    # be chosen as a deadlock victim, and the whole exchange is then run again.
    async def exchange(session: AsyncSession) -> refresh.RefreshOutcome:
        outcome = await refresh.refresh(session, platform, body.refresh_token, client=client)
        if outcome.pair is not None and outcome.user is not None:
            accounts.record_login(session, outcome.user, "refresh")
        await protection.record_refresh(session, outcome, body.refresh_token, client)
        return outcome

    outcome = await platform.database.transaction(exchange)
    if outcome.pair is None:
        raise RefreshTokenInvalid()
    return TokenResponse.of(outcome.pair)


@router.post("/logout", status_code=204, summary="Revoke a refresh token and its family")
async def logout(body: RefreshRequest, session: SessionDep, client: ClientDep) -> Response:
    # Unknown tokens are answered the same way: logging out twice is not an error.
    await protection.record_logout(session, body.refresh_token, client)
    await refresh.revoke(session, body.refresh_token)
    return Response(status_code=204)


@router.get(
    "/me",
    response_model=UserRead,
    summary="My account",
    description="Works with a token, a session or an API key (which reads its owner).",
    responses=error_responses(Unauthorized, AccountDisabled),
)
async def me(user: Annotated[User, Depends(reading_user)], session: SessionDep) -> UserRead:
    return await _read(session, user)


@router.patch(
    "/me",
    response_model=UserRead,
    summary="Change my username, bio or image",
    responses=error_responses(ValidationFailed, UsernameTaken),
)
async def update_me(
    body: ProfileUpdate, user: CurrentUser, session: SessionDep, platform: PlatformDep
) -> UserRead:
    sent = body.model_fields_set
    if "username" in sent and body.username is None:
        raise ValidationFailed({"username": ["cannot be removed"]})
    changes = accounts.ProfileChanges(
        username=body.username,
        bio=body.bio,
        image=body.image,
        clear_bio="bio" in sent and body.bio is None,
        clear_image="image" in sent and body.image is None,
    )
    updated = await accounts.update_profile(
        session, identity_settings(platform.settings), user, changes
    )
    await profile_cache.forget(platform, user.id)
    return await _read(session, updated)


@router.post(
    "/me/password",
    response_model=TokenResponse,
    summary="Change my password",
    description="Needs the current password. Every refresh token of the account is "
    "revoked; the answer carries a new pair for this client.",
    responses=error_responses(WrongPassword, ValidationFailed),
)
async def change_password(
    body: PasswordChange,
    user: CurrentUser,
    session: SessionDep,
    platform: PlatformDep,
    client: ClientDep,
) -> TokenResponse:
    await accounts.change_password(
        session,
        identity_settings(platform.settings),
        user,
        current_password=body.current_password,
        new_password=body.new_password,
    )
    await protection.password_changed(session, platform, user, client)
    pair, _ = await refresh.issue_pair(session, platform, user, client=client)
    return TokenResponse.of(pair)


@well_known.get(
    "/.well-known/jwks.json",
    response_model=Jwks,
    summary="Public keys that verify access tokens",
    responses=error_responses(ServiceUnavailable),
)
async def jwks(platform: PlatformDep, response: Response) -> Jwks:
    try:
        keys = await key_ring(platform).jwks()
    except (SQLAlchemyError, DecryptionError) as exc:
        # Verifiers retry a 503; a 500 would read as a bug in the key set itself.
        raise ServiceUnavailable("The signing keys cannot be loaded right now.") from exc
    response.headers["Cache-Control"] = "public, max-age=60"
    return Jwks(keys=keys)
