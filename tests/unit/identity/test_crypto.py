"""Encryption at rest and token helpers."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from engineroom.identity import crypto
from engineroom.identity.config import configure
from engineroom.settings import Settings
from tests.support.identity import fast_identity_settings


def test_round_trip_and_randomised(settings: Settings) -> None:
    first = crypto.encrypt(settings, "signing-key", b"secret bytes")
    second = crypto.encrypt(settings, "signing-key", b"secret bytes")
    assert first != second
    assert first.startswith("v1.")
    assert b"secret" not in first.encode()
    assert crypto.decrypt(settings, "signing-key", first) == b"secret bytes"


def test_purpose_and_key_are_bound(settings: Settings) -> None:
    sealed = crypto.encrypt(settings, "refresh-grace", b"pair")
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(settings, "signing-key", sealed)
    other = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        data_dir=settings.data_dir,
        secret_key=SecretStr("y" * 40),
    )
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(other, "refresh-grace", sealed)


@pytest.mark.parametrize("damage", ["", "v1.", "v2.abc", "v1.!!!", "v1.QUJD", "nodot"])
def test_damaged_ciphertexts_are_refused(settings: Settings, damage: str) -> None:
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(settings, "totp", damage)


def test_flipped_bit_is_refused(settings: Settings) -> None:
    sealed = crypto.encrypt(settings, "totp", b"JBSWY3DPEHPK3PXP")
    body = bytearray(sealed.encode())
    body[-3] ^= 1
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(settings, "totp", body.decode())


def test_totp_secrets_use_the_dedicated_key_when_set(settings: Settings) -> None:
    derived = crypto.encrypt(settings, "totp", b"seed")
    configure(settings, fast_identity_settings(totp_encryption_key="k" * 32))
    dedicated = crypto.encrypt(settings, "totp", b"seed")
    assert crypto.decrypt(settings, "totp", dedicated) == b"seed"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(settings, "totp", derived)
    # Other purposes still derive from the root secret.
    assert crypto.derive_key(settings, "signing-key") != crypto.derive_key(settings, "totp")


def test_short_totp_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        fast_identity_settings(totp_encryption_key="short")


def test_tokens_and_hashes() -> None:
    token = crypto.new_token(32)
    assert len(token) >= 43
    assert crypto.new_token() != crypto.new_token()
    assert crypto.hash_token("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert crypto.constant_time_equals("abc", "abc")
    assert not crypto.constant_time_equals("abc", "abd")
