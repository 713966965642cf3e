"""``/api/v1/identity/mfa``: TOTP enrollment, recovery codes, and the token login's second step."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from engineroom.core.deps import PlatformDep, SessionDep
from engineroom.core.errors import RateLimited, Unauthorized, error_responses
from engineroom.core.ratelimit import RateLimit
from engineroom.identity import accounts, audit, mfa, protection, refresh
from engineroom.identity.api_keys import ApiKeyForbidden
from engineroom.identity.config import identity_settings
from engineroom.identity.csrf import CsrfFailed
from engineroom.identity.errors import WrongPassword
from engineroom.identity.router import PREFIX, ClientDep
from engineroom.identity.routers_api_keys import SignedInUser
from engineroom.identity.schemas import TokenResponse
from engineroom.identity.schemas_credentials import (
    MfaCode,
    MfaDisableRequest,
    MfaLoginRequest,
    MfaStatusRead,
    RecoveryCodes,
    TotpEnrollmentRead,
)

router = APIRouter(prefix=PREFIX, tags=["identity"])


@router.get(
    "/mfa",
    response_model=MfaStatusRead,
    summary="My second-factor status",
    responses=error_responses(Unauthorized, ApiKeyForbidden),
)
async def get_status(user: SignedInUser, session: SessionDep) -> MfaStatusRead:
    return MfaStatusRead.of(await mfa.status(session, user))


@router.post(
    "/mfa/totp",
    status_code=201,
    response_model=TotpEnrollmentRead,
    summary="Start TOTP enrollment",
    description="Returns a new secret and its otpauth:// URI for an authenticator app. "
    "MFA is on only once confirmed with a code; starting again replaces the secret.",
    responses=error_responses(Unauthorized, ApiKeyForbidden, CsrfFailed, mfa.MfaAlreadyEnabled),
)
async def enroll(
    user: SignedInUser, session: SessionDep, platform: PlatformDep
) -> TotpEnrollmentRead:
    issuer = identity_settings(platform.settings).issuer_for(platform.settings)
    enrollment = await mfa.begin_enrollment(session, platform.settings, user, issuer=issuer)
    return TotpEnrollmentRead.of(enrollment)


@router.post(
    "/mfa/totp/confirm",
    response_model=RecoveryCodes,
    summary="Confirm TOTP enrollment with a code (turns MFA on)",
    description="Answers the ten recovery codes, shown this once.",
    responses=error_responses(
        Unauthorized,
        ApiKeyForbidden,
        CsrfFailed,
        mfa.MfaCodeInvalid,
        mfa.MfaNotEnrolled,
        mfa.MfaAlreadyEnabled,
        RateLimited,
    ),
)
async def confirm(
    body: MfaCode,
    user: SignedInUser,
    session: SessionDep,
    platform: PlatformDep,
    client: ClientDep,
) -> RecoveryCodes:
    codes = await mfa.confirm_enrollment(session, platform, user, body.code)
    protection.record(session, audit.Action.MFA_ENROLL, client, user_id=user.id, method="totp")
    return RecoveryCodes(recovery_codes=codes)


@router.post(
    "/mfa/disable",
    status_code=204,
    summary="Turn MFA off",
    description="Needs a current code (TOTP or recovery) or the account's password.",
    responses=error_responses(
        Unauthorized,
        ApiKeyForbidden,
        CsrfFailed,
        mfa.MfaCodeInvalid,
        WrongPassword,
        mfa.MfaNotEnabled,
        RateLimited,
    ),
)
async def disable(
    body: MfaDisableRequest,
    user: SignedInUser,
    session: SessionDep,
    platform: PlatformDep,
    client: ClientDep,
) -> Response:
    await mfa.disable_with_proof(session, platform, user, code=body.code, password=body.password)
    protection.record(session, audit.Action.MFA_DISABLE, client, user_id=user.id)
    return Response(status_code=204)


@router.post(
    "/mfa/recovery-codes",
    response_model=RecoveryCodes,
    summary="Replace my recovery codes",
    description="Needs a current TOTP code; the previous codes stop working.",
    responses=error_responses(
        Unauthorized,
        ApiKeyForbidden,
        CsrfFailed,
        mfa.MfaCodeInvalid,
        mfa.MfaNotEnabled,
        RateLimited,
    ),
)
async def regenerate(
    body: MfaCode, user: SignedInUser, session: SessionDep, platform: PlatformDep
) -> RecoveryCodes:
    codes = await mfa.regenerate_recovery_codes(session, platform, user, body.code)
    return RecoveryCodes(recovery_codes=codes)


@router.post(
    "/token/mfa",
    response_model=TokenResponse,
    summary="Complete a token login with a second-factor code",
    description="Send the challenge that `POST /api/v1/identity/token` returned and a "
    "TOTP or recovery code; answers the token pair.",
    responses=error_responses(
        mfa.MfaLoginFailed, mfa.MfaChallengeInvalid, RateLimited, mfa.MfaUnavailable
    ),
    dependencies=[Depends(RateLimit("20/minute", scope="identity-token-mfa"))],
)
async def token_mfa(
    body: MfaLoginRequest, session: SessionDep, platform: PlatformDep, client: ClientDep
) -> TokenResponse:
    user, _method = await protection.complete_mfa_login(
        session, platform, client, body.challenge, body.code, purpose=mfa.TOKENS_PURPOSE
    )
    scopes = mfa.challenge_scopes(platform.settings, body.challenge)
    pair, _ = await refresh.issue_pair(session, platform, user, scopes=scopes, client=client)
    accounts.record_login(session, user, "mfa")
    return TokenResponse.of(pair)
