"""TOTP codes, recovery codes and login challenges, without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from engineroom.identity.mfa import (
    RECOVERY_CODE_LENGTH,
    TOTP_PERIOD,
    MfaChallengeInvalid,
    challenge_scopes,
    code_at,
    issue_challenge,
    matching_step,
    new_recovery_code,
    new_totp_secret,
    normalize_recovery_code,
    normalize_totp,
    open_challenge,
    provisioning_uri,
    recovery_code_hash,
    start_token_login,
)
from engineroom.identity.models import User
from engineroom.settings import Settings

NOW = 1_800_000_015.0  # 15 s into a step
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_secret_is_160_bits_of_base32() -> None:
    secret = new_totp_secret()
    assert len(secret) == 32
    assert pyotp.TOTP(secret).now().isdigit()


def test_provisioning_uri_for_authenticator_apps() -> None:
    uri = provisioning_uri(SECRET, account="ann@example.com", issuer="engineroom")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert parts.path == "/engineroom:ann%40example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["engineroom"]


def test_rfc6238_reference_value() -> None:
    # RFC 6238 appendix B (SHA-1, the 20-byte ASCII secret "12345678901234567890"), 6 digits.
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert code_at(secret, 59) == "287082"
    assert code_at(secret, 1111111109) == "081804"


def test_codes_match_their_step_within_one_period_of_drift() -> None:
    secret = new_totp_secret()
    step = int(NOW // TOTP_PERIOD)
    assert matching_step(secret, code_at(secret, NOW), at=NOW) == step
    assert matching_step(secret, code_at(secret, NOW - TOTP_PERIOD), at=NOW) == step - 1
    assert matching_step(secret, code_at(secret, NOW + TOTP_PERIOD), at=NOW) == step + 1


def test_expired_and_wrong_codes_do_not_match() -> None:
    window = {code_at(SECRET, NOW + d * TOTP_PERIOD) for d in (-1, 0, 1)}
    stale = code_at(SECRET, NOW - 2 * TOTP_PERIOD)
    future = code_at(SECRET, NOW + 2 * TOTP_PERIOD)
    assert stale not in window
    assert future not in window
    assert matching_step(SECRET, stale, at=NOW) is None
    assert matching_step(SECRET, future, at=NOW) is None
    wrong = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in window)
    assert matching_step(SECRET, wrong, at=NOW) is None
    # Another user's secret does not accept this user's code.
    assert matching_step("KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU", code_at(SECRET, NOW), at=NOW) is None


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12a456", "١٢٣٤٥٦", "12 34 5"])
def test_malformed_codes_are_refused(code: str) -> None:
    assert normalize_totp(code) is None
    assert matching_step(new_totp_secret(), code, at=NOW) is None


def test_spaces_inside_a_code_are_ignored() -> None:
    assert normalize_totp(" 123 456 ") == "123456"


def test_recovery_codes_are_grouped_and_normalize() -> None:
    code = new_recovery_code()
    assert len(code) == RECOVERY_CODE_LENGTH + 2
    assert code.count("-") == 2
    compact = code.replace("-", "")
    assert normalize_recovery_code(code) == compact
    assert normalize_recovery_code(code.upper()) == compact
    assert normalize_recovery_code(f" {compact} ") == compact
    assert len({new_recovery_code() for _ in range(100)}) == 100


def test_recovery_code_look_alikes_are_read_as_crockford() -> None:
    assert normalize_recovery_code("OIL0-0000-0000") == "011000000000"


@pytest.mark.parametrize("code", ["", "abcd-efgh", "abcd-efgh-jkmn-p", "uuuu-uuuu-uuuu", "ab$d"])
def test_malformed_recovery_codes(code: str) -> None:
    assert normalize_recovery_code(code) is None


def test_recovery_code_hash_is_keyed(settings: Settings) -> None:
    code = new_recovery_code()
    digest = recovery_code_hash(settings, code)
    assert digest == recovery_code_hash(settings, code.upper().replace("-", ""))
    other = Settings(_env_file=None, secret_key="k" * 40)  # type: ignore[call-arg]
    assert digest != recovery_code_hash(other, code)
    with pytest.raises(ValueError, match="recovery"):
        recovery_code_hash(settings, "nope")


def _user() -> User:
    return User(
        id=uuid.uuid4(),
        email="ann@example.com",
        username="ann",
        username_key="ann",
        password_hash="x",
        password_changed_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def test_challenge_round_trip(settings: Settings) -> None:
    user = _user()
    token = issue_challenge(settings, user, purpose="session", context={"realworld": "1"})
    challenge = open_challenge(settings, token, purpose="session")
    assert challenge.user_id == user.id
    assert challenge.context == {"realworld": "1"}
    assert challenge.password_changed_at == user.password_changed_at.timestamp()
    assert str(user.id) not in token  # opaque: encrypted, not just signed


def test_challenge_for_another_purpose_is_refused(settings: Settings) -> None:
    token = issue_challenge(settings, _user(), purpose="tokens")
    with pytest.raises(MfaChallengeInvalid, match="another"):
        open_challenge(settings, token, purpose="session")


def test_expired_challenge_is_refused(settings: Settings) -> None:
    token = issue_challenge(settings, _user(), purpose="session", ttl=timedelta(seconds=-1))
    with pytest.raises(MfaChallengeInvalid, match="expired"):
        open_challenge(settings, token, purpose="session")


@pytest.mark.parametrize("token", ["", "v1.", "v1.AAAA", "garbage", "v2.abc"])
def test_forged_challenges_are_refused(settings: Settings, token: str) -> None:
    with pytest.raises(MfaChallengeInvalid):
        open_challenge(settings, token, purpose="session")


def test_tampered_challenge_is_refused(settings: Settings) -> None:
    token = issue_challenge(settings, _user(), purpose="session")
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    with pytest.raises(MfaChallengeInvalid):
        open_challenge(settings, flipped, purpose="session")


async def test_token_login_challenges_carry_the_requested_scopes(settings: Settings) -> None:
    platform = SimpleNamespace(settings=settings)
    narrowed = await start_token_login(
        None,  # type: ignore[arg-type]
        platform,  # type: ignore[arg-type]
        _user(),
        scopes=["blog:article:read", "blog:comment:create", "blog:article:read"],
    )
    assert narrowed.methods == ("totp", "recovery_code")
    assert narrowed.expires_in == 300
    assert challenge_scopes(settings, narrowed.challenge) == [
        "blog:article:read",
        "blog:comment:create",
    ]
    plain = await start_token_login(None, platform, _user())  # type: ignore[arg-type]
    assert challenge_scopes(settings, plain.challenge) is None
    session_challenge = issue_challenge(settings, _user(), purpose="session")
    with pytest.raises(MfaChallengeInvalid):
        challenge_scopes(settings, session_challenge)
