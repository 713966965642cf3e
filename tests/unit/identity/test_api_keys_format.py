"""The API key format, scope syntax and the rule that a key never exceeds its creator."""

from __future__ import annotations

import pytest

from engineroom.core.auth import Principal
from engineroom.identity.api_keys import (
    PREFIX_LENGTH,
    SECRET_LENGTH,
    ApiKeyScopeNotAllowed,
    allowed_scopes,
    generate_key,
    key_hash,
    looks_like_api_key,
    parse_key,
    validate_scopes,
)


def test_generated_keys_parse_back() -> None:
    prefix, key = generate_key()
    assert key.startswith(f"er_{prefix}_")
    assert len(prefix) == PREFIX_LENGTH
    parsed = parse_key(key)
    assert parsed is not None
    assert parsed.prefix == prefix
    assert len(parsed.secret) == SECRET_LENGTH
    assert looks_like_api_key(key)


def test_keys_are_unique_and_hashes_differ() -> None:
    keys = {generate_key()[1] for _ in range(200)}
    assert len(keys) == 200
    assert len({key_hash(k) for k in keys}) == 200
    assert all(len(key_hash(k)) == 64 for k in keys)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "er_",
        "er_abc_def",
        "xx_" + "a" * PREFIX_LENGTH + "_" + "b" * SECRET_LENGTH,
        "er_" + "A" * PREFIX_LENGTH + "_" + "b" * SECRET_LENGTH,  # prefix is lowercase
        "er_" + "a" * PREFIX_LENGTH + "_" + "b" * (SECRET_LENGTH - 1),
        "er_" + "a" * PREFIX_LENGTH + "_" + "b" * (SECRET_LENGTH + 1),
        "er_" + "a" * PREFIX_LENGTH + "-" + "b" * SECRET_LENGTH,
        "er_" + "a" * PREFIX_LENGTH + "_" + "b" * (SECRET_LENGTH - 1) + "_",
        "er_" + "a" * PREFIX_LENGTH + "_" + "é" * SECRET_LENGTH,
        " er_" + "a" * PREFIX_LENGTH + "_" + "b" * SECRET_LENGTH,
    ],
)
def test_malformed_keys_do_not_parse(value: str) -> None:
    assert parse_key(value) is None


def test_jwts_do_not_look_like_keys() -> None:
    assert not looks_like_api_key("eyJhbGciOiJFZERTQSJ9.e30.sig")


@pytest.mark.parametrize(
    "scope",
    ["*", "blog", "blog:*", "blog:article", "blog:article:*", "blog:article:delete", "a_b:c-d:e"],
)
def test_valid_scopes(scope: str) -> None:
    assert validate_scopes([scope]) == [scope]


@pytest.mark.parametrize(
    "scope",
    ["", "Blog:article", "blog:", ":x", "blog:*:read", "a:b:c:d", "a:b:c:*", "blog article", "**"],
)
def test_invalid_scopes(scope: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        validate_scopes([scope])


def test_scopes_are_deduplicated_and_bounded() -> None:
    assert validate_scopes(["b:x", "a:y", "b:x"]) == ["a:y", "b:x"]
    with pytest.raises(ValueError, match="at most"):
        validate_scopes([f"m:r{i}" for i in range(33)])


MODERATOR = Principal(
    subject="u1", permissions=frozenset({"blog:article:delete", "chat:*"}), roles=frozenset()
)


def test_scopes_within_the_creators_permissions_are_granted() -> None:
    assert allowed_scopes(MODERATOR, ["blog:article:delete", "chat:room:moderate"]) == [
        "blog:article:delete",
        "chat:room:moderate",
    ]
    assert allowed_scopes(MODERATOR, ["chat:*"]) == ["chat:*"]
    assert allowed_scopes(MODERATOR, []) == []
    assert allowed_scopes(MODERATOR, None) is None


@pytest.mark.parametrize("scope", ["*", "blog:*", "blog:article:*", "shop:order:read"])
def test_scopes_beyond_the_creator_are_refused(scope: str) -> None:
    with pytest.raises(ApiKeyScopeNotAllowed, match=scope.replace("*", r"\*")):
        allowed_scopes(MODERATOR, [scope])


def test_a_scoped_creator_passes_on_its_scopes_not_more() -> None:
    scoped = Principal(
        subject="u1", permissions=frozenset({"*"}), scopes=frozenset({"blog:article:read"})
    )
    assert allowed_scopes(scoped, None) == ["blog:article:read"]
    assert allowed_scopes(scoped, ["blog:article:read"]) == ["blog:article:read"]
    with pytest.raises(ApiKeyScopeNotAllowed):
        allowed_scopes(scoped, ["blog:article:delete"])


def test_admin_may_grant_anything() -> None:
    admin = Principal(subject="u1", permissions=frozenset({"*"}))
    assert allowed_scopes(admin, ["*", "shop:order:refund"]) == ["*", "shop:order:refund"]
