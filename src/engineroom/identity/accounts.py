"""Accounts: registration, password login, profile and password changes.

Username rules: 3 to 32 characters, letters (ASCII), digits, ``_``, ``-`` and ``.``,
starting with a letter or digit; unique whatever the case (``Alice`` and ``alice`` are
the same name), shown as typed. Emails are trimmed and lower-cased before storage and
comparison, so they are unique case-insensitively too.
"""

from __future__ import annotations

import re
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from engineroom.core.auth import Principal
from engineroom.core.clock import utcnow
from engineroom.core.db import Database
from engineroom.core.errors import Unauthorized
from engineroom.core.events import publish, publish_now
from engineroom.identity import passwords, profile_cache, repository
from engineroom.identity.config import IdentitySettings
from engineroom.identity.errors import (
    AccountDisabled,
    EmailTaken,
    InvalidCredentials,
    UsernameTaken,
    ValidationFailed,
    WrongPassword,
)
from engineroom.identity.events import (
    EVENT_USER_LOGGED_IN,
    EVENT_USER_REGISTERED,
    EVENT_USER_UPDATED,
    user_snapshot,
)
from engineroom.identity.models import RefreshToken, Role, RolePermission, User, UserRole

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{2,31}")
USERNAME_RULE = (
    "must be 3 to 32 characters: letters, digits, '_', '-' or '.', starting with a letter or digit"
)
TAKEN = "has already been taken"
MEMBER_ROLE = "member"
BIO_MAX = 10_000
IMAGE_MAX = 2048


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_problems(email: str) -> list[str]:
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return ["is invalid"]
    return []


def username_problems(username: str) -> list[str]:
    return [] if USERNAME_PATTERN.fullmatch(username) else [USERNAME_RULE]


def image_problems(image: str | None) -> list[str]:
    if image is None or image == "":
        return []
    if len(image) > IMAGE_MAX:
        return [f"is too long (maximum is {IMAGE_MAX} characters)"]
    if not image.startswith(("https://", "http://")):
        return ["must be an http(s) URL"]
    return []


@dataclass(frozen=True)
class ProfileChanges:
    """Fields to change; ``None`` leaves one as it is (``bio``/``image`` use ``clear_*``)."""

    email: str | None = None
    username: str | None = None
    password: str | None = None
    bio: str | None = None
    image: str | None = None
    clear_bio: bool = False
    clear_image: bool = False


def _check_new_account(email: str, username: str, password: str) -> None:
    problems = {
        "email": email_problems(email),
        "username": username_problems(username),
        "password": passwords.password_problems(password, username=username, email=email),
    }
    field_errors = {name: found for name, found in problems.items() if found}
    if field_errors:
        raise ValidationFailed(field_errors)


async def _ensure_free(
    session: AsyncSession,
    *,
    email: str | None,
    username: str | None,
    excluding: uuid.UUID | None = None,
) -> None:
    if email is not None and await repository.email_taken(session, email, excluding=excluding):
        raise EmailTaken("This email is already registered.", field_errors={"email": [TAKEN]})
    if username is not None and await repository.username_taken(
        session, username, excluding=excluding
    ):
        raise UsernameTaken("This username is taken.", field_errors={"username": [TAKEN]})


async def _flush_unique(session: AsyncSession) -> None:
    """Flush; a concurrent insert of the same email or name becomes a clear conflict."""
    try:
        await session.flush()
    except IntegrityError as exc:
        text = str(exc.orig).lower()
        if "username" in text:
            raise UsernameTaken(
                "This username is taken.", field_errors={"username": [TAKEN]}
            ) from exc
        raise EmailTaken(
            "This email is already registered.", field_errors={"email": [TAKEN]}
        ) from exc


async def register(
    session: AsyncSession,
    config: IdentitySettings,
    *,
    email: str,
    username: str,
    password: str,
    bio: str | None = None,
    image: str | None = None,
) -> User:
    """Create an account with the ``member`` role and publish ``identity.user.registered``."""
    email = normalize_email(email)
    username = username.strip()
    _check_new_account(email, username, password)
    if image_problems(image):
        raise ValidationFailed({"image": image_problems(image)})
    # Hash before the first query: on SQLite that query takes the write lock.
    password_hash = await passwords.hash_password(config, password)
    await _ensure_free(session, email=email, username=username)
    user = User(
        email=email,
        username=username,
        username_key=repository.username_key(username),
        password_hash=password_hash,
        bio=bio or None,
        image=image or None,
    )
    session.add(user)
    await _flush_unique(session)
    member = await repository.role_by_name(session, MEMBER_ROLE)
    if member is not None:
        await repository.add_user_role(session, user.id, member.id)
    publish(session, EVENT_USER_REGISTERED, user_snapshot(user))
    return user


_SQLITE_DATABASES: weakref.WeakKeyDictionary[Engine, Database] = weakref.WeakKeyDictionary()


def register_database(database: Database) -> None:
    """Let password checks on this (SQLite) database read outside the write lock."""
    if database.dialect == "sqlite":
        _SQLITE_DATABASES[database.engine.sync_engine] = database


@asynccontextmanager
async def _credential_reader(session: AsyncSession) -> AsyncIterator[AsyncConnection]:
    """Where a password check reads the account.

    On SQLite the request's session takes the database-wide write lock with its first
    statement; holding it through a hash (tens of milliseconds) would queue every writer
    behind every login. There the check reads through the read pool (the same file, in
    WAL mode: no lock, no lag) and the request's session is used only afterwards. Any
    other database reads through the request's own connection and transaction.
    """
    bind = session.bind
    database = _SQLITE_DATABASES.get(bind.sync_engine) if isinstance(bind, AsyncEngine) else None
    if database is None:
        yield await session.connection()
        return
    # A bare connection, not a session: one statement needs no unit of work.
    async with database.read_engines[0].connect() as reader:
        yield reader


# The account and its grants in one statement, built once (its compiled form is cached):
# a login needs both, and every statement is a round trip (on SQLite, a hop to the
# driver's thread). Plain columns, not entities: the ORM's identity map and loading cost
# more than the query, and the account is only read here.
_USERS = cast(Table, User.__table__)
_USER_ROLES = cast(Table, UserRole.__table__)
_ROLES = cast(Table, Role.__table__)
_ROLE_PERMISSIONS = cast(Table, RolePermission.__table__)
_USER_ATTRIBUTES = tuple(
    (attribute.key, attribute.columns[0]) for attribute in sa_inspect(User).column_attrs
)
_ACCOUNT_BY_EMAIL = (
    select(
        *(column for _, column in _USER_ATTRIBUTES),
        _ROLES.c.name.label("role_name"),
        _ROLE_PERMISSIONS.c.permission.label("role_permission"),
    )
    .select_from(
        _USERS.outerjoin(_USER_ROLES, _USER_ROLES.c.user_id == _USERS.c.id)
        .outerjoin(_ROLES, _ROLES.c.id == _USER_ROLES.c.role_id)
        .outerjoin(_ROLE_PERMISSIONS, _ROLE_PERMISSIONS.c.role_id == _ROLES.c.id)
    )
    .where(_USERS.c.email == bindparam("email"))
)
# Guarded by what the check saw: a new password (or a concurrent change of it) wins.
_REHASH = (
    update(_USERS)
    .where(
        _USERS.c.id == bindparam("account_id"),
        _USERS.c.password_changed_at == bindparam("seen_changed_at"),
    )
    .values(password_hash=bindparam("new_hash"))
)


def _account_of(rows: Sequence[Row[*tuple[Any, ...]]]) -> repository.Account:
    first = rows[0]._mapping
    # Outside any session: the login only reads it, and writes nothing through the ORM.
    user = User(**{key: first[column] for key, column in _USER_ATTRIBUTES})
    roles = frozenset(str(row.role_name) for row in rows if row.role_name is not None)
    permissions = frozenset(
        str(row.role_permission) for row in rows if row.role_permission is not None
    )
    return repository.Account(user=user, grants=repository.Grants(roles, permissions))


@dataclass(frozen=True)
class SignIn:
    """An authenticated account, with the grants its tokens will carry.

    ``user`` is a copy read before the (slow) password check, not an object of the
    request's session: the caller confirms in its transaction that the account did not
    change meanwhile (``audit.record_login`` does, in the statement that records it).
    """

    user: User
    grants: repository.Grants


async def authenticate(
    session: AsyncSession, config: IdentitySettings, *, email: str, password: str
) -> SignIn:
    """The account for these credentials, or ``InvalidCredentials``.

    Unknown emails cost one dummy verification so both failures take about as long and
    read the same. A hash made with older parameters is replaced by a current one.
    """
    async with _credential_reader(session) as reader:
        rows = list(await reader.execute(_ACCOUNT_BY_EMAIL, {"email": normalize_email(email)}))
    # Hashed after the side read ended: that read holds a pooled connection, and with
    # many logins at once the pool would run dry while the hashes queue.
    if not rows:
        await passwords.dummy_verify(config, password)
        raise InvalidCredentials()
    encoded = str(rows[0]._mapping[_USERS.c.password_hash])
    check = await passwords.verify_password(config, encoded, password)
    if not check.valid:
        # Refused before anything else is made of the rows: as little work as for an
        # unknown email.
        raise InvalidCredentials()
    account = _account_of(rows)
    user = account.user
    if not user.is_active:
        raise AccountDisabled("This account is disabled.")
    if check.needs_rehash:
        await _rehash(session, config, user, password)
    return SignIn(user=user, grants=account.grants)


async def _rehash(
    session: AsyncSession, config: IdentitySettings, user: User, password: str
) -> None:
    new_hash = await passwords.hash_password(config, password)
    result = await session.execute(
        _REHASH,
        {
            "account_id": user.id,
            "seen_changed_at": user.password_changed_at,
            "new_hash": new_hash,
        },
    )
    if getattr(result, "rowcount", 0) != 1:
        # Deleted, or given a new password, while this check ran.
        raise InvalidCredentials()
    user.password_hash = new_hash


def record_login(session: AsyncSession, user: User, method: str) -> None:
    publish(session, EVENT_USER_LOGGED_IN, {"user_id": str(user.id), "method": method})


async def record_login_now(session: AsyncSession, user: User, method: str) -> None:
    """``record_login``, the event row written at once (the password login routes)."""
    await publish_now(session, EVENT_USER_LOGGED_IN, {"user_id": str(user.id), "method": method})


async def update_profile(
    session: AsyncSession, config: IdentitySettings, user: User, changes: ProfileChanges
) -> User:
    """Apply ``changes`` (each validated) and publish ``identity.user.updated``."""
    email = normalize_email(changes.email) if changes.email is not None else None
    username = changes.username.strip() if changes.username is not None else None
    problems = {
        "email": email_problems(email) if email is not None else [],
        "username": username_problems(username) if username is not None else [],
        "image": image_problems(changes.image),
        "password": passwords.password_problems(
            changes.password, username=username or user.username, email=email or user.email
        )
        if changes.password is not None
        else [],
    }
    field_errors = {name: found for name, found in problems.items() if found}
    if field_errors:
        raise ValidationFailed(field_errors)
    await _ensure_free(session, email=email, username=username, excluding=user.id)
    _apply(user, changes, email=email, username=username)
    if changes.password is not None:
        await set_password(session, config, user, changes.password)
    await _flush_unique(session)
    publish(session, EVENT_USER_UPDATED, user_snapshot(user))
    profile_cache.changed(session, user.id)
    return user


def _apply(user: User, changes: ProfileChanges, *, email: str | None, username: str | None) -> None:
    if email is not None and email != user.email:
        user.email = email
        user.email_verified_at = None
    if username is not None:
        user.username = username
        user.username_key = repository.username_key(username)
    if changes.clear_bio or changes.bio is not None:
        user.bio = None if changes.clear_bio else changes.bio or None
    if changes.clear_image or changes.image is not None:
        user.image = None if changes.clear_image else changes.image or None


async def set_password(
    session: AsyncSession, config: IdentitySettings, user: User, password: str
) -> None:
    """Store a new password and revoke every refresh token of the account."""
    user.password_hash = await passwords.hash_password(config, password)
    user.password_changed_at = utcnow()
    await revoke_refresh_tokens(session, user.id)


async def change_password(
    session: AsyncSession,
    config: IdentitySettings,
    user: User,
    *,
    current_password: str,
    new_password: str,
) -> User:
    """The native flow: the current password must be given."""
    check = await passwords.verify_password(config, user.password_hash, current_password)
    if not check.valid:
        raise WrongPassword(
            "The current password is incorrect.",
            field_errors={"current_password": ["is incorrect"]},
        )
    problems = passwords.password_problems(new_password, username=user.username, email=user.email)
    if problems:
        raise ValidationFailed({"new_password": problems})
    await set_password(session, config, user, new_password)
    await session.flush()
    return user


async def revoke_refresh_tokens(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), grace_pair=None)
    )


async def user_for_principal(
    session: AsyncSession, principal: Principal, *, allow_api_key: bool = False
) -> User:
    """The account a principal acts for; 401 when it no longer exists or is disabled.

    An API key acts for its owner (its subject is the owner's id) only where the caller
    says so with ``allow_api_key``: elsewhere (credential and account management) it is
    refused, so a leaked key cannot widen itself.
    """
    if principal.kind == "api_key" and not allow_api_key:
        raise Unauthorized("API keys cannot be used here: sign in with a token or session.")
    try:
        user_id = uuid.UUID(principal.subject)
    except ValueError:
        user_id = None
    user = await repository.user_by_id(session, user_id) if user_id is not None else None
    if principal.kind not in ("user", "api_key") or user is None:
        raise Unauthorized("The account of these credentials does not exist.")
    if not user.is_active:
        raise AccountDisabled("This account is disabled.")
    return user
