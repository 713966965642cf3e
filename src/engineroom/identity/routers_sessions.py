"""``/api/v1/identity/sessions``: cookie sign-in for browsers, listing and revocation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from engineroom.core.auth import CurrentPrincipal
from engineroom.core.deps import PlatformDep, SessionDep
from engineroom.core.errors import RateLimited, ServiceUnavailable, Unauthorized, error_responses
from engineroom.core.ratelimit import RateLimit
from engineroom.identity import accounts, audit, mfa, protection, sessions
from engineroom.identity.api_keys import ApiKeyForbidden
from engineroom.identity.csrf import CsrfFailed, check_origin
from engineroom.identity.errors import AccountDisabled, InvalidCredentials
from engineroom.identity.models import User
from engineroom.identity.router import PREFIX, ClientDep
from engineroom.identity.routers_api_keys import SignedInUser
from engineroom.identity.schemas import MfaRequiredResponse
from engineroom.identity.schemas_credentials import (
    MfaLoginRequest,
    RevokedCount,
    SessionList,
    SessionLoginRequest,
    SessionRead,
    SessionStarted,
)

router = APIRouter(prefix=f"{PREFIX}/sessions", tags=["identity"])

_LOGIN_LIMIT = Depends(RateLimit("20/minute", scope="identity-session-login"))


async def _open(
    request: Request,
    response: Response,
    session: SessionDep,
    platform: PlatformDep,
    user: User,
    client: ClientDep,
    method: str,
) -> SessionStarted:
    new = await sessions.start_session(
        session,
        platform,
        user,
        client=client,
        previous_token=sessions.session_cookie(request),
    )
    accounts.record_login(session, user, method)
    sessions.set_session_cookie(response, request, new)
    response.status_code = 201
    return SessionStarted(
        session=SessionRead.of(new.record, current_id=new.record.id), csrf_token=new.csrf_token
    )


@router.post(
    "",
    status_code=201,
    response_model=SessionStarted | MfaRequiredResponse,
    summary="Sign in with a session cookie",
    description="Sets the session cookie and returns the CSRF token to send as "
    "`X-CSRF-Token` with every unsafe request; or, when the account has MFA on, returns "
    "a challenge (200) to complete at `POST /api/v1/identity/sessions/mfa`.",
    responses=error_responses(InvalidCredentials, AccountDisabled, CsrfFailed, RateLimited),
    dependencies=[_LOGIN_LIMIT],
)
async def sign_in(
    body: SessionLoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    platform: PlatformDep,
    client: ClientDep,
) -> SessionStarted | MfaRequiredResponse:
    # Login CSRF: another site must not sign the browser in to an account of its choosing.
    check_origin(request, platform.settings.cors_origins)
    signed_in = await protection.authenticate(
        session, platform, client, email=body.email, password=body.password
    )
    user = signed_in.user
    if user.mfa_enabled:
        response.status_code = 200
        return MfaRequiredResponse.of(mfa.start_session_login(platform.settings, user))
    return await _open(request, response, session, platform, user, client, "password")


@router.post(
    "/mfa",
    status_code=201,
    response_model=SessionStarted,
    summary="Complete a session sign-in with a second-factor code",
    responses=error_responses(
        mfa.MfaLoginFailed, mfa.MfaChallengeInvalid, CsrfFailed, RateLimited, mfa.MfaUnavailable
    ),
    dependencies=[_LOGIN_LIMIT],
)
async def sign_in_mfa(
    body: MfaLoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    platform: PlatformDep,
    client: ClientDep,
) -> SessionStarted:
    check_origin(request, platform.settings.cors_origins)
    user, _method = await protection.complete_mfa_login(
        session, platform, client, body.challenge, body.code, purpose=mfa.SESSION_PURPOSE
    )
    return await _open(request, response, session, platform, user, client, "mfa")


def _current_id(request: Request) -> str | None:
    current = sessions.current_session(request)
    return current.record.id if current is not None else None


@router.get(
    "",
    response_model=SessionList,
    summary="My active sessions",
    responses=error_responses(Unauthorized, ApiKeyForbidden),
)
async def list_sessions(
    request: Request, user: SignedInUser, session: SessionDep, platform: PlatformDep
) -> SessionList:
    records = await sessions.list_sessions(session, platform, user.id)
    current_id = _current_id(request)
    return SessionList(sessions=[SessionRead.of(r, current_id=current_id) for r in records])


@router.get(
    "/current",
    response_model=SessionStarted,
    summary="The session of this request, with its CSRF token",
    responses=error_responses(Unauthorized, sessions.SessionNotFound),
)
async def get_current(request: Request, principal: CurrentPrincipal) -> SessionStarted:
    current = sessions.current_session(request)
    if current is None:
        raise sessions.SessionNotFound("This request was not authenticated by a session cookie.")
    return SessionStarted(
        session=SessionRead.of(current.record, current_id=current.record.id),
        csrf_token=current.csrf_token,
    )


@router.delete(
    "/current",
    status_code=204,
    summary="Sign out (end this session and clear the cookie)",
    responses=error_responses(CsrfFailed),
)
async def sign_out(
    request: Request, session: SessionDep, platform: PlatformDep, client: ClientDep
) -> Response:
    # Not behind CurrentPrincipal: an expired session must still clear its cookie.
    response = Response(status_code=204)
    ended = await sessions.end_cookie_session(session, platform, request)
    if ended is not None:
        protection.record(
            session, audit.Action.LOGOUT, client, user_id=ended.user_id, via="session"
        )
    sessions.clear_session_cookie(response, request)
    return response


@router.post(
    "/revoke-others",
    response_model=RevokedCount,
    summary="End all my other sessions",
    description="Keeps the session of this request when a cookie authenticated it.",
    responses=error_responses(Unauthorized, ApiKeyForbidden, CsrfFailed, ServiceUnavailable),
)
async def revoke_others(
    request: Request,
    user: SignedInUser,
    session: SessionDep,
    platform: PlatformDep,
    client: ClientDep,
) -> RevokedCount:
    count = await sessions.revoke_other_sessions(
        session, platform, user.id, keep=_current_id(request)
    )
    protection.record(session, audit.Action.SESSION_REVOKE, client, user_id=user.id, revoked=count)
    return RevokedCount(revoked=count)


@router.delete(
    "/{session_id}",
    status_code=204,
    summary="End one of my sessions",
    responses=error_responses(Unauthorized, ApiKeyForbidden, sessions.SessionNotFound, CsrfFailed),
)
async def revoke_one(
    session_id: Annotated[str, Path(max_length=64)],
    request: Request,
    user: SignedInUser,
    session: SessionDep,
    platform: PlatformDep,
    client: ClientDep,
) -> Response:
    await sessions.revoke_session(session, platform, user.id, session_id)
    protection.record(
        session, audit.Action.SESSION_REVOKE, client, user_id=user.id, session_id=session_id
    )
    response = Response(status_code=204)
    if session_id == _current_id(request):
        sessions.clear_session_cookie(response, request)
    return response
