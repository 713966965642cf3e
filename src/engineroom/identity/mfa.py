"""Second factor: TOTP (RFC 6238) with single-use recovery codes.

* Enrollment makes a secret (160 bits, base32) and its ``otpauth://`` URI; it only counts
  once confirmed with a code, which also produces ten recovery codes shown once.
* The TOTP secret is stored encrypted (``crypto.encrypt``, purpose ``totp``: the dedicated
  ``ENGINEROOM_IDENTITY_TOTP_ENCRYPTION_KEY`` when set). Codes are accepted one period
  either side of now (clock drift), and the step of the last accepted code is kept, so a
  code (or an older one) is never accepted twice: a guarded update makes that hold under
  concurrent attempts too.
* Recovery codes are 12 characters of Crockford base32 (60 bits), stored as an HMAC under
  a key derived from the root secret, so a copy of the table alone cannot be brute-forced.
* Attempts are rate limited per user (``CODE_LIMITS``); a success clears the count.
* Login with MFA is two steps: the password step returns a challenge (an encrypted,
  expiring token naming the user, what the login is for and when the password last
  changed) instead of credentials; the code step presents it with a code.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import pyotp
import structlog
from limits.errors import StorageError
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from engineroom.core.clock import utcnow
from engineroom.core.errors import (
    Conflict,
    Forbidden,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from engineroom.core.platform import Platform
from engineroom.identity import passwords, repository
from engineroom.identity.config import identity_settings
from engineroom.identity.crypto import (
    TOTP_PURPOSE,
    DecryptionError,
    decrypt,
    encrypt,
    hmac_hex,
)
from engineroom.identity.errors import WrongPassword
from engineroom.identity.models import RecoveryCode, Totp, User
from engineroom.identity.second_factor import SecondFactorChallenge
from engineroom.settings import Settings

TOTP_DIGITS = 6
TOTP_PERIOD = 30
TOTP_WINDOW = 1
"""Steps accepted either side of the current one."""
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_LENGTH = 12
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_CROCKFORD_ALIASES = str.maketrans({"o": "0", "i": "1", "l": "1"})
CHALLENGE_TTL = timedelta(minutes=5)
_CHALLENGE_PURPOSE = "mfa-challenge"
_RECOVERY_PURPOSE = "recovery-code"
CODE_LIMITS = ("5/minute", "30/hour")
_LIMIT_SCOPE = "identity-mfa"
DEFAULT_ISSUER = "engineroom"

Method = Literal["totp", "recovery_code"]
logger = structlog.get_logger("engineroom.identity.mfa")


class MfaCodeInvalid(Forbidden):
    """A wrong, reused or expired code where the caller is already signed in."""

    code = "mfa_code_invalid"


class MfaLoginFailed(Unauthorized):
    """A wrong, reused or expired code at the second step of a login."""

    code = "mfa_code_invalid"


class MfaChallengeInvalid(Unauthorized):
    code = "mfa_challenge_invalid"


class MfaUnavailable(ServiceUnavailable):
    code = "mfa_unavailable"


class MfaAlreadyEnabled(Conflict):
    code = "mfa_already_enabled"


class MfaNotEnrolled(Conflict):
    code = "mfa_not_enrolled"


class MfaNotEnabled(Conflict):
    code = "mfa_not_enabled"


# ---- TOTP -------------------------------------------------------------------------------


def new_totp_secret() -> str:
    return pyotp.random_base32()


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)


def provisioning_uri(secret: str, *, account: str, issuer: str = DEFAULT_ISSUER) -> str:
    """The ``otpauth://totp/...`` URI authenticator apps scan (as a QR code)."""
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def normalize_totp(code: str) -> str | None:
    digits = "".join(code.split())
    if len(digits) != TOTP_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


def matching_step(secret: str, code: str, *, at: float | None = None) -> int | None:
    """The time step whose code ``code`` is (within the window), or ``None``."""
    digits = normalize_totp(code)
    if digits is None:
        return None
    totp = _totp(secret)
    current = totp.timecode(time.time() if at is None else at)
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if secrets.compare_digest(digits, totp.generate_otp(step)):
            return step
    return None


def code_at(secret: str, at: float) -> str:
    """The code an authenticator shows at ``at`` (for tests and tooling)."""
    return _totp(secret).at(at)


# ---- recovery codes ---------------------------------------------------------------------


def new_recovery_code() -> str:
    raw = "".join(secrets.choice(_CROCKFORD) for _ in range(RECOVERY_CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, RECOVERY_CODE_LENGTH, 4))


def normalize_recovery_code(code: str) -> str | None:
    """Lowercase without separators, Crockford look-alikes mapped; ``None`` if malformed."""
    compact = "".join(code.split()).replace("-", "").lower().translate(_CROCKFORD_ALIASES)
    if len(compact) != RECOVERY_CODE_LENGTH or any(c not in _CROCKFORD for c in compact):
        return None
    return compact


def recovery_code_hash(settings: Settings, code: str) -> str:
    normalized = normalize_recovery_code(code)
    if normalized is None:
        raise ValueError("not a recovery code")
    return hmac_hex(settings, _RECOVERY_PURPOSE, normalized)


# ---- login challenges -------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    user_id: uuid.UUID
    purpose: str
    """What the login is for (``"session"``, ``"tokens"``, ...): the step that completes it."""
    expires_at: datetime
    password_changed_at: float
    context: Mapping[str, str] = field(default_factory=dict)


def issue_challenge(
    settings: Settings,
    user: User,
    *,
    purpose: str,
    context: Mapping[str, str] | None = None,
    ttl: timedelta = CHALLENGE_TTL,
) -> str:
    """An opaque challenge token for the second step of ``user``'s login."""
    payload = {
        "u": str(user.id),
        "p": purpose,
        "e": (utcnow() + ttl).timestamp(),
        "pc": user.password_changed_at.timestamp(),
        "c": dict(context or {}),
        "n": secrets.token_hex(8),
    }
    return encrypt(settings, _CHALLENGE_PURPOSE, json.dumps(payload).encode())


def open_challenge(settings: Settings, token: str, *, purpose: str) -> Challenge:
    """The challenge a token carries; ``MfaChallengeInvalid`` if forged, expired or misused."""
    try:
        data = json.loads(decrypt(settings, _CHALLENGE_PURPOSE, token))
        challenge = Challenge(
            user_id=uuid.UUID(data["u"]),
            purpose=str(data["p"]),
            expires_at=datetime.fromtimestamp(float(data["e"]), tz=utcnow().tzinfo),
            password_changed_at=float(data["pc"]),
            context={str(k): str(v) for k, v in dict(data["c"]).items()},
        )
    except (DecryptionError, ValueError, KeyError, TypeError, AttributeError):
        raise MfaChallengeInvalid("The MFA challenge is not valid; sign in again.") from None
    if challenge.purpose != purpose:
        raise MfaChallengeInvalid("This MFA challenge belongs to another kind of login.")
    if challenge.expires_at <= utcnow():
        raise MfaChallengeInvalid("The MFA challenge has expired; sign in again.")
    return challenge


# ---- service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrollment:
    secret: str
    provisioning_uri: str


@dataclass(frozen=True)
class MfaStatus:
    enabled: bool
    pending: bool
    """Enrollment started and not confirmed yet."""
    confirmed_at: datetime | None
    recovery_codes_remaining: int


async def _limit_attempts(platform: Platform, user_id: uuid.UUID) -> None:
    """Count one code attempt for the user; 429 past either limit."""
    for limit in CODE_LIMITS:
        try:
            result = await platform.rate_limiter.hit(limit, _LIMIT_SCOPE, str(user_id))
        except StorageError as exc:
            # Like every limit of the platform: an unreachable Redis must not lock
            # everyone out; readiness reports the outage.
            logger.error("mfa_rate_limit_unavailable", error=str(exc))
            return
        if not result.allowed:
            headers = result.headers()
            headers["Retry-After"] = str(result.retry_after)
            raise RateLimited(
                "Too many code attempts; retry after the delay in Retry-After.", headers=headers
            )


async def _clear_attempts(platform: Platform, user_id: uuid.UUID) -> None:
    for limit in CODE_LIMITS:
        try:
            await platform.rate_limiter.reset(limit, _LIMIT_SCOPE, str(user_id))
        except StorageError as exc:
            logger.error("mfa_rate_limit_unavailable", error=str(exc))


def _secret_of(settings: Settings, row: Totp) -> str:
    try:
        return decrypt(settings, TOTP_PURPOSE, row.secret).decode()
    except DecryptionError:
        # The TOTP key (or the root secret it derives from) changed under stored secrets:
        # an operator's mistake to report, not a wrong code to count against the user.
        logger.error("totp_secret_undecryptable", user_id=str(row.user_id))
        raise MfaUnavailable(
            "Second-factor codes cannot be checked right now; contact the administrator."
        ) from None


async def _accept_totp(
    session: AsyncSession, settings: Settings, row: Totp, code: str, *, at: float | None = None
) -> bool:
    """Check a TOTP code and burn its step; False for a wrong or already used code."""
    step = matching_step(_secret_of(settings, row), code, at=at)
    if step is None:
        return False
    # Guarded: of two requests with the same code, exactly one moves the step forward.
    result = await session.execute(
        update(Totp)
        .where(Totp.user_id == row.user_id)
        .where(or_(Totp.last_used_step.is_(None), Totp.last_used_step < step))
        .values(last_used_step=step)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    # The database has the new step already: keep the object in step without a write.
    set_committed_value(row, "last_used_step", step)
    return True


async def _accept_recovery_code(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID, code: str
) -> bool:
    normalized = normalize_recovery_code(code)
    if normalized is None:
        return False
    code_hash = hmac_hex(settings, _RECOVERY_PURPOSE, normalized)
    result = await session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == code_hash,
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def _confirmed_totp(session: AsyncSession, user_id: uuid.UUID) -> Totp | None:
    return await session.scalar(
        select(Totp).where(Totp.user_id == user_id, Totp.confirmed_at.is_not(None))
    )


async def check_code(
    session: AsyncSession,
    platform: Platform,
    user_id: uuid.UUID,
    code: str,
    *,
    allow_recovery: bool = True,
) -> Method | None:
    """Verify a second-factor code of a user with MFA on; the method used, or ``None``.

    Rate limited (``RateLimited``). A TOTP code is six digits; anything else is tried as a
    recovery code, which is then used up.
    """
    await _limit_attempts(platform, user_id)
    row = await _confirmed_totp(session, user_id)
    if row is None:
        return None
    method: Method | None = None
    if normalize_totp(code) is not None:
        if await _accept_totp(session, platform.settings, row, code):
            method = "totp"
    elif allow_recovery and await _accept_recovery_code(session, platform.settings, user_id, code):
        method = "recovery_code"
    if method is not None:
        await _clear_attempts(platform, user_id)
    return method


async def _replace_recovery_codes(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID
) -> list[str]:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    session.add_all(
        RecoveryCode(user_id=user_id, code_hash=recovery_code_hash(settings, code))
        for code in codes
    )
    await session.flush()
    return codes


async def begin_enrollment(
    session: AsyncSession, settings: Settings, user: User, *, issuer: str = DEFAULT_ISSUER
) -> Enrollment:
    """Start (or restart) TOTP enrollment; refused while MFA is on."""
    row = await session.get(Totp, user.id)
    if row is not None and row.confirmed_at is not None:
        raise MfaAlreadyEnabled("MFA is already on; turn it off before enrolling again.")
    secret = new_totp_secret()
    sealed = encrypt(settings, TOTP_PURPOSE, secret.encode())
    if row is None:
        session.add(Totp(user_id=user.id, secret=sealed))
    else:
        row.secret, row.last_used_step = sealed, None
    await session.flush()
    uri = provisioning_uri(secret, account=user.email, issuer=issuer)
    return Enrollment(secret=secret, provisioning_uri=uri)


async def confirm_enrollment(
    session: AsyncSession, platform: Platform, user: User, code: str
) -> list[str]:
    """Turn MFA on with a first code; returns the ten recovery codes (shown once)."""
    row = await session.get(Totp, user.id)
    if row is None:
        raise MfaNotEnrolled("Start enrollment first.")
    if row.confirmed_at is not None:
        raise MfaAlreadyEnabled("MFA is already on.")
    await _limit_attempts(platform, user.id)
    if not await _accept_totp(session, platform.settings, row, code):
        raise MfaCodeInvalid("The code is not valid; check the device's clock and try again.")
    await _clear_attempts(platform, user.id)
    row.confirmed_at = utcnow()
    user.mfa_enabled = True
    return await _replace_recovery_codes(session, platform.settings, user.id)


async def disable(session: AsyncSession, user: User) -> None:
    """Turn MFA off (the caller has checked a code or the password)."""
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    await session.execute(delete(Totp).where(Totp.user_id == user.id))
    user.mfa_enabled = False
    await session.flush()


async def regenerate_recovery_codes(
    session: AsyncSession, platform: Platform, user: User, code: str
) -> list[str]:
    """New recovery codes (the old ones stop working), confirmed with a TOTP code."""
    if not user.mfa_enabled:
        raise MfaNotEnabled("MFA is off.")
    if await check_code(session, platform, user.id, code, allow_recovery=False) is None:
        raise MfaCodeInvalid("The code is not valid.")
    return await _replace_recovery_codes(session, platform.settings, user.id)


async def status(session: AsyncSession, user: User) -> MfaStatus:
    row = await session.get(Totp, user.id)
    remaining = await session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    )
    confirmed = row.confirmed_at if row is not None else None
    return MfaStatus(
        enabled=user.mfa_enabled and confirmed is not None,
        pending=row is not None and confirmed is None,
        confirmed_at=confirmed,
        recovery_codes_remaining=int(remaining or 0) if confirmed else 0,
    )


async def disable_with_proof(
    session: AsyncSession,
    platform: Platform,
    user: User,
    *,
    code: str | None,
    password: str | None,
) -> None:
    """Turn MFA off, proven with a code (TOTP or recovery) or the account's password."""
    if not user.mfa_enabled:
        raise MfaNotEnabled("MFA is off.")
    if code is not None:
        if await check_code(session, platform, user.id, code) is None:
            raise MfaCodeInvalid("The code is not valid.")
    elif password is not None:
        await _limit_attempts(platform, user.id)
        config = identity_settings(platform.settings)
        if not (await passwords.verify_password(config, user.password_hash, password)).valid:
            raise WrongPassword(
                "The password is incorrect.", field_errors={"password": ["is incorrect"]}
            )
        await _clear_attempts(platform, user.id)
    else:
        raise MfaCodeInvalid("Give a code or the password to turn MFA off.")
    await disable(session, user)


# ---- the second login step --------------------------------------------------------------

LOGIN_METHODS: tuple[Method, ...] = ("totp", "recovery_code")
TOKENS_PURPOSE = "tokens"
_SCOPE_CONTEXT = "scope"
SESSION_PURPOSE = "session"


async def start_token_login(
    session: AsyncSession,
    platform: Platform,
    user: User,
    *,
    scopes: Sequence[str] | None = None,
) -> SecondFactorChallenge:
    """The second-factor starter for token login (``second_factor.register_second_factor``).

    ``scopes`` (the narrowing the password step asked for) travel inside the challenge, so
    the tokens of the code step are as narrow as the client asked.
    """
    context = {} if scopes is None else {_SCOPE_CONTEXT: " ".join(sorted(set(scopes)))}
    return SecondFactorChallenge(
        challenge=issue_challenge(platform.settings, user, purpose=TOKENS_PURPOSE, context=context),
        methods=LOGIN_METHODS,
        expires_in=int(CHALLENGE_TTL.total_seconds()),
    )


def start_session_login(settings: Settings, user: User) -> SecondFactorChallenge:
    """The challenge the cookie sign-in answers when the account has MFA on."""
    return SecondFactorChallenge(
        challenge=issue_challenge(settings, user, purpose=SESSION_PURPOSE),
        methods=LOGIN_METHODS,
        expires_in=int(CHALLENGE_TTL.total_seconds()),
    )


def challenge_scopes(settings: Settings, token: str) -> list[str] | None:
    """The scopes a token-login challenge carries (``None``: not narrowed)."""
    scope = open_challenge(settings, token, purpose=TOKENS_PURPOSE).context.get(_SCOPE_CONTEXT)
    return None if scope is None else scope.split()


async def complete_login(
    session: AsyncSession, platform: Platform, token: str, code: str, *, purpose: str
) -> tuple[User, Method]:
    """Check the second step of a login: the user to sign in and the method used."""
    challenge = open_challenge(platform.settings, token, purpose=purpose)
    user = await repository.user_by_id(session, challenge.user_id)
    if user is None or not user.is_active or not user.mfa_enabled:
        raise MfaChallengeInvalid("The MFA challenge is no longer valid; sign in again.")
    if abs(user.password_changed_at.timestamp() - challenge.password_changed_at) > 0.001:
        raise MfaChallengeInvalid("The password has changed since; sign in again.")
    method = await check_code(session, platform, user.id, code)
    if method is None:
        raise MfaLoginFailed("The code is not valid, was already used or has expired.")
    return user, method
