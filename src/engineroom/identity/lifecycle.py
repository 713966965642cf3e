"""The life of an account after registration: verification and reset requests, email
change, deletion, and the admin's disable, enable and user listing.

* Email change needs the current password; the new address gets a link, the old one a
  notice, and nothing changes until the link is used (``confirm_email_change``).
* Deleting an account needs its password. It publishes ``identity.user.deleted`` (other
  modules remove or anonymize what they keep), ends every sign-in, deletes the user row
  (refresh tokens, sessions, API keys, TOTP secret, recovery codes and pending tokens go
  with it through ``ON DELETE CASCADE``) and drops the emails from its audit entries.
* Disabling (``identity:user:manage``) ends every sign-in at once and refuses new ones:
  password logins answer ``account_disabled``, refresh tokens and API keys are refused.
  Access tokens already issued last until they expire (15 minutes by default).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.auth import Principal
from engineroom.core.clock import utcnow
from engineroom.core.errors import BadRequest, Conflict
from engineroom.core.events import publish
from engineroom.core.platform import Platform
from engineroom.identity import audit, passwords, profile_cache, repository, throttle
from engineroom.identity.accounts import email_problems, normalize_email
from engineroom.identity.config import identity_settings
from engineroom.identity.errors import (
    EmailTaken,
    LastAdmin,
    UserNotFound,
    ValidationFailed,
    WrongPassword,
)
from engineroom.identity.events import (
    EVENT_USER_DELETED,
    EVENT_USER_DISABLED,
    EVENT_USER_ENABLED,
    EVENT_USER_UPDATED,
    user_reference,
    user_snapshot,
)
from engineroom.identity.lifecycle_mail import JOB_EMAIL_CHANGE, JOB_EMAIL_VERIFICATION
from engineroom.identity.models import Role, User, UserRole
from engineroom.identity.refresh import ClientInfo
from engineroom.identity.revocation import revoke_sign_ins
from engineroom.identity.verification import Purpose, discard_tokens, redeem

MANAGE_USERS = "identity:user:manage"
ADMIN_ROLE = "admin"
MAX_PAGE = 100
TAKEN = "has already been taken"


class EmailAlreadyVerified(Conflict):
    code = "email_already_verified"


class CannotManageSelf(Conflict):
    """Admins cannot disable themselves: nobody might be left to enable them."""

    code = "cannot_manage_self"


class UserCursorInvalid(BadRequest):
    code = "cursor_invalid"


async def _check_password(
    platform: Platform, user: User, password: str, *, client: ClientInfo
) -> None:
    """Confirm the account's password; the attempts count like logins (brute force with
    a stolen token is limited the same way)."""
    address = throttle.address_key(client.ip or "")
    await throttle.check_login(platform, identifier=user.email, address=address)
    check = await passwords.verify_password(
        identity_settings(platform.settings), user.password_hash, password
    )
    if not check.valid:
        await throttle.login_failed(platform, identifier=user.email, address=address)
        raise WrongPassword(
            "The password is incorrect.", field_errors={"password": ["is incorrect"]}
        )
    await throttle.login_succeeded(platform, identifier=user.email, address=address)


async def request_email_verification(
    session: AsyncSession, platform: Platform, user: User, *, client: ClientInfo
) -> None:
    """Mail a verification link to the account's current address."""
    if user.email_verified_at is not None:
        raise EmailAlreadyVerified("This email address is already verified.")
    audit.record(session, audit.Action.EMAIL_VERIFICATION_REQUEST, user_id=user.id, client=client)
    await platform.jobs.enqueue(JOB_EMAIL_VERIFICATION, user_id=str(user.id))


async def request_email_change(
    session: AsyncSession,
    platform: Platform,
    user: User,
    *,
    new_email: str,
    password: str,
    client: ClientInfo,
) -> str:
    """Mail a confirmation link to ``new_email``; returns the normalized address."""
    email = normalize_email(new_email)
    problems = email_problems(email)
    if not problems and email == user.email:
        problems = ["is already the address of this account"]
    if problems:
        raise ValidationFailed({"new_email": problems})
    await _check_password(platform, user, password, client=client)
    if await repository.email_taken(session, email, excluding=user.id):
        raise EmailTaken("This email is already registered.", field_errors={"new_email": [TAKEN]})
    audit.record(
        session,
        audit.Action.EMAIL_CHANGE_REQUEST,
        user_id=user.id,
        client=client,
        details={"new_email": email},
    )
    await platform.jobs.enqueue(JOB_EMAIL_CHANGE, user_id=str(user.id), new_email=email)
    return email


async def confirm_email_change(session: AsyncSession, raw: str, *, client: ClientInfo) -> User:
    """Switch the account to the address the token was mailed to (now verified)."""
    row = await redeem(session, raw, Purpose.CHANGE_EMAIL)
    user = await repository.user_by_id(session, row.user_id)
    if user is None or row.new_email is None:
        raise UserNotFound("The account of this link no longer exists.")
    new_email = row.new_email
    if await repository.email_taken(session, new_email, excluding=user.id):
        raise EmailTaken("This email is already registered.", field_errors={"email": [TAKEN]})
    old_email = user.email
    user.email = new_email
    user.email_verified_at = utcnow()
    try:
        await session.flush()
    except IntegrityError as exc:
        raise EmailTaken(
            "This email is already registered.", field_errors={"email": [TAKEN]}
        ) from exc
    # Links to the old address (verification, other changes) must not work any more.
    await discard_tokens(session, user.id, Purpose.CHANGE_EMAIL)
    await discard_tokens(session, user.id, Purpose.VERIFY_EMAIL)
    publish(session, EVENT_USER_UPDATED, user_snapshot(user))
    profile_cache.changed(session, user.id)
    audit.record(
        session,
        audit.Action.EMAIL_CHANGE,
        user_id=user.id,
        client=client,
        details={"old_email": old_email, "new_email": new_email},
    )
    return user


async def _is_last_admin(session: AsyncSession, user_id: uuid.UUID) -> bool:
    admin = await repository.role_by_name(session, ADMIN_ROLE)
    if admin is None or not await repository.has_role(session, user_id, admin.id):
        return False
    return await repository.count_role_members(session, admin.id) <= 1


async def delete_account(
    session: AsyncSession, platform: Platform, user: User, *, password: str, client: ClientInfo
) -> None:
    """Delete the account for good (see the module docstring)."""
    await _check_password(platform, user, password, client=client)
    if await _is_last_admin(session, user.id):
        raise LastAdmin("The last admin cannot delete their account; make another admin first.")
    await revoke_sign_ins(session, platform, user.id)
    publish(session, EVENT_USER_DELETED, user_reference(user))
    # GET /api/user answers from the profile cache: it must see the account gone at once.
    profile_cache.changed(session, user.id)
    await audit.forget_personal_details(session, user.id)
    audit.record(session, audit.Action.USER_DELETE, user_id=user.id, client=client)
    await session.delete(user)
    await session.flush()


async def user_or_404(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await repository.user_by_id(session, user_id)
    if user is None:
        raise UserNotFound(f"No user with id {user_id}.")
    return user


async def disable_user(
    session: AsyncSession,
    platform: Platform,
    *,
    actor: Principal,
    user_id: uuid.UUID,
    client: ClientInfo,
) -> User:
    """Disable the account and end its sign-ins (idempotent)."""
    user = await user_or_404(session, user_id)
    if actor.owns(user.id):
        raise CannotManageSelf("You cannot disable your own account.")
    if user.disabled_at is not None:
        return user
    user.disabled_at = utcnow()
    ended = await revoke_sign_ins(session, platform, user.id)
    publish(session, EVENT_USER_DISABLED, user_reference(user))
    profile_cache.changed(session, user.id)
    audit.record(
        session,
        audit.Action.USER_DISABLE,
        user_id=user.id,
        actor_id=_actor_id(actor),
        client=client,
        details={"sessions_revoked": ended},
    )
    await session.flush()
    return user


async def enable_user(
    session: AsyncSession, *, actor: Principal, user_id: uuid.UUID, client: ClientInfo
) -> User:
    """Let a disabled account sign in again (idempotent)."""
    user = await user_or_404(session, user_id)
    if user.disabled_at is None:
        return user
    user.disabled_at = None
    publish(session, EVENT_USER_ENABLED, user_reference(user))
    profile_cache.changed(session, user.id)
    audit.record(
        session,
        audit.Action.USER_ENABLE,
        user_id=user.id,
        actor_id=_actor_id(actor),
        client=client,
    )
    await session.flush()
    return user


def _actor_id(actor: Principal) -> uuid.UUID | None:
    try:
        return uuid.UUID(actor.subject)
    except ValueError:
        return None


# ---- admin listing ----------------------------------------------------------------------


class UserStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True)
class UserFilter:
    query: str | None = None
    """Part of the email or username, any case."""
    status: UserStatus | None = None
    role: str | None = None


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    roles: dict[uuid.UUID, list[str]]
    next_cursor: str | None


def _encode_cursor(user_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(user_id.bytes).decode().rstrip("=")


def _decode_cursor(cursor: str) -> uuid.UUID:
    try:
        raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode())
        return uuid.UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise UserCursorInvalid("The cursor is not valid; start from the first page.") from None


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_users(
    session: AsyncSession, filters: UserFilter, *, cursor: str | None = None, limit: int = 50
) -> UserPage:
    """Users matching ``filters`` in the order they registered (ids are UUIDv7)."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(User)
    if filters.query:
        pattern = _like(filters.query.strip())
        query = query.where(
            or_(
                func.lower(User.email).like(pattern, escape="\\"),
                User.username_key.like(pattern, escape="\\"),
            )
        )
    if filters.status is UserStatus.ACTIVE:
        query = query.where(User.disabled_at.is_(None))
    elif filters.status is UserStatus.DISABLED:
        query = query.where(User.disabled_at.is_not(None))
    if filters.role:
        query = query.where(
            User.id.in_(
                select(UserRole.user_id)
                .join(Role, Role.id == UserRole.role_id)
                .where(Role.name == filters.role)
            )
        )
    if cursor is not None:
        query = query.where(User.id > _decode_cursor(cursor))
    rows = list(await session.scalars(query.order_by(User.id).limit(limit + 1)))
    page = rows[:limit]
    roles = await repository.role_names_of(session, [user.id for user in page])
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit else None
    return UserPage(users=page, roles=roles, next_cursor=next_cursor)
