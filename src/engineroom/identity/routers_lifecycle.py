"""``/api/v1/identity``: email verification, password reset, email change, account deletion.

Links are mailed by background jobs (``lifecycle_mail``); these routes answer as soon as
the job is queued. Requests for mails and attempts to redeem tokens are rate limited per
client address and per recipient (``throttle``); refusals are audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from engineroom.core.deps import PlatformDep, SessionDep
from engineroom.core.errors import RateLimited, Unauthorized, error_responses
from engineroom.identity import audit, lifecycle, throttle, verification
from engineroom.identity.accounts import email_problems, normalize_email
from engineroom.identity.csrf import CsrfFailed
from engineroom.identity.errors import (
    AccountDisabled,
    EmailTaken,
    LastAdmin,
    UserNotFound,
    ValidationFailed,
    WrongPassword,
)
from engineroom.identity.lifecycle_mail import JOB_PASSWORD_RESET
from engineroom.identity.refresh import ClientInfo
from engineroom.identity.router import PREFIX, CurrentUser
from engineroom.identity.schemas_lifecycle import (
    Accepted,
    AccountDeleteRequest,
    EmailChangeRequest,
    EmailStatus,
    PasswordForgotRequest,
    PasswordResetRequest,
    TokenBody,
)
from engineroom.identity.sessions import clear_session_cookie

router = APIRouter(prefix=PREFIX, tags=["identity"])
Client = Annotated[ClientInfo, Depends(audit.client_of)]
_TOKEN_ERRORS = (
    verification.OneTimeTokenInvalid,
    verification.OneTimeTokenExpired,
    RateLimited,
)
RESET_ACCEPTED = "If an account uses this address, a link to reset its password is on its way."


@router.post(
    "/password/forgot",
    status_code=202,
    response_model=Accepted,
    summary="Ask for a password reset link",
    description="Always answers 202 with the same body, whether or not an account uses "
    "the address (no account enumeration); the link arrives by mail and works once.",
    responses=error_responses(ValidationFailed, RateLimited),
)
async def forgot_password(
    body: PasswordForgotRequest, request: Request, platform: PlatformDep, client: Client
) -> Accepted:
    email = normalize_email(body.email)
    if email_problems(email):
        raise ValidationFailed({"email": email_problems(email)})
    action = audit.Action.PASSWORD_RESET_REQUEST
    async with audit.failures_recorded(platform, action, client=client, email=email):
        await throttle.check_mail_request(
            platform, kind="reset", recipient=email, address=throttle.client_address(request)
        )
    await platform.jobs.enqueue(
        JOB_PASSWORD_RESET, email=email, ip=client.ip, user_agent=client.user_agent
    )
    return Accepted(detail=RESET_ACCEPTED)


@router.post(
    "/password/reset",
    status_code=204,
    summary="Set a new password with a reset token",
    description="Ends every session and refresh token of the account.",
    responses=error_responses(*_TOKEN_ERRORS, ValidationFailed, AccountDisabled),
)
async def reset_password(
    body: PasswordResetRequest,
    request: Request,
    session: SessionDep,
    platform: PlatformDep,
    client: Client,
) -> Response:
    async with audit.failures_recorded(platform, audit.Action.PASSWORD_RESET, client=client):
        await throttle.check_token_attempt(platform, address=throttle.client_address(request))
        await verification.reset_password(
            session, platform, raw=body.token, new_password=body.new_password, client=client
        )
    return Response(status_code=204)


@router.post(
    "/email/verification",
    status_code=202,
    response_model=Accepted,
    summary="Mail me a link to verify my email address",
    responses=error_responses(
        Unauthorized, CsrfFailed, lifecycle.EmailAlreadyVerified, RateLimited
    ),
)
async def request_verification(
    request: Request, user: CurrentUser, session: SessionDep, platform: PlatformDep, client: Client
) -> Accepted:
    await throttle.check_mail_request(
        platform, kind="verify", recipient=str(user.id), address=throttle.client_address(request)
    )
    await lifecycle.request_email_verification(session, platform, user, client=client)
    return Accepted(detail=f"A verification link is on its way to {user.email}.")


@router.post(
    "/email/verify",
    response_model=EmailStatus,
    summary="Verify an email address with a mailed token",
    responses=error_responses(*_TOKEN_ERRORS),
)
async def verify_email(
    body: TokenBody, request: Request, session: SessionDep, platform: PlatformDep, client: Client
) -> EmailStatus:
    async with audit.failures_recorded(platform, audit.Action.EMAIL_VERIFY, client=client):
        await throttle.check_token_attempt(platform, address=throttle.client_address(request))
        user = await verification.verify_email(session, body.token, client=client)
    return EmailStatus.of(user)


@router.post(
    "/me/email",
    status_code=202,
    response_model=Accepted,
    summary="Change my email address (confirmed from the new address)",
    description="Needs the current password. The new address gets a confirmation link, "
    "the current one a notice; the account keeps its address until the link is used.",
    responses=error_responses(
        Unauthorized, CsrfFailed, WrongPassword, ValidationFailed, EmailTaken, RateLimited
    ),
)
async def change_email(
    body: EmailChangeRequest,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    platform: PlatformDep,
    client: Client,
) -> Accepted:
    action = audit.Action.EMAIL_CHANGE_REQUEST
    async with audit.failures_recorded(platform, action, client=client, user_id=user.id):
        await throttle.check_mail_request(
            platform,
            kind="change",
            recipient=str(user.id),
            address=throttle.client_address(request),
        )
        email = await lifecycle.request_email_change(
            session, platform, user, new_email=body.new_email, password=body.password, client=client
        )
    return Accepted(detail=f"A confirmation link is on its way to {email}.")


@router.post(
    "/email/change/confirm",
    response_model=EmailStatus,
    summary="Confirm an email change with the mailed token",
    responses=error_responses(*_TOKEN_ERRORS, EmailTaken, UserNotFound),
)
async def confirm_email_change(
    body: TokenBody, request: Request, session: SessionDep, platform: PlatformDep, client: Client
) -> EmailStatus:
    async with audit.failures_recorded(platform, audit.Action.EMAIL_CHANGE, client=client):
        await throttle.check_token_attempt(platform, address=throttle.client_address(request))
        user = await lifecycle.confirm_email_change(session, body.token, client=client)
    return EmailStatus.of(user)


@router.post(
    "/me/delete",
    status_code=204,
    summary="Delete my account",
    description="Needs the password. Publishes `identity.user.deleted`; every credential "
    "of the account ends and its data is removed (the audit log keeps its entries, "
    "without emails).",
    responses=error_responses(Unauthorized, CsrfFailed, WrongPassword, LastAdmin, RateLimited),
)
async def delete_me(
    body: AccountDeleteRequest,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    platform: PlatformDep,
    client: Client,
) -> Response:
    user_id = user.id
    async with audit.failures_recorded(
        platform, audit.Action.USER_DELETE, client=client, user_id=user_id
    ):
        await lifecycle.delete_account(
            session, platform, user, password=body.password, client=client
        )
    response = Response(status_code=204)
    clear_session_cookie(response, request)
    return response
