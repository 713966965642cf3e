"""The jobs that mail account links: password reset, email verification, email change.

Requests only enqueue one of these jobs and answer; the job looks the account up, issues
the token and queues the mail with the kernel's ``send_email`` job once its transaction
has committed (a mail never carries a token that does not exist). For a password reset
the request does the same work, in the same time, whether the email belongs to an
account or not: the answer and its timing reveal nothing (no account enumeration).

A retried job issues a fresh token, which replaces the one of the failed run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.jobs import JobContext, JobSpec
from engineroom.core.mail import send_email
from engineroom.core.platform import Platform
from engineroom.identity import audit, repository
from engineroom.identity.config import identity_settings
from engineroom.identity.refresh import ClientInfo
from engineroom.identity.verification import Purpose, issue_token

JOB_PASSWORD_RESET = "identity.mail_password_reset"
JOB_EMAIL_VERIFICATION = "identity.mail_email_verification"
JOB_EMAIL_CHANGE = "identity.mail_email_change"
API_BASE = "/api/v1/identity"


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str


def _ttl_text(ttl: timedelta) -> str:
    minutes = int(ttl.total_seconds() // 60)
    if minutes >= 120 and minutes % 60 == 0:
        return f"{minutes // 60} hours"
    return f"{minutes} minutes"


def _link_lines(platform: Platform, page: str, raw: str, api_path: str) -> str:
    base = identity_settings(platform.settings).links_base(platform.settings)
    lines = []
    if base is not None:
        lines.append(f"Open this link:\n\n  {base}/{page}?token={quote(raw)}\n")
    lines.append(f'Or send this token to {api_path} (POST, JSON field "token"):\n\n  {raw}\n')
    return "\n".join(lines)


def reset_mail(platform: Platform, to: str, raw: str) -> Mail:
    ttl = identity_settings(platform.settings).reset_password_ttl
    body = (
        "Someone asked to reset the password of your account.\n\n"
        + _link_lines(platform, "reset-password", raw, f"{API_BASE}/password/reset")
        + f"\nThe link works once, for {_ttl_text(ttl)}. If you did not ask for it, ignore "
        "this mail: your password stays as it is.\n"
    )
    return Mail(to=to, subject="Reset your password", text=body)


def verification_mail(platform: Platform, to: str, raw: str) -> Mail:
    ttl = identity_settings(platform.settings).verify_email_ttl
    body = (
        "Please confirm that this address is yours.\n\n"
        + _link_lines(platform, "verify-email", raw, f"{API_BASE}/email/verify")
        + f"\nThe link works once, for {_ttl_text(ttl)}.\n"
    )
    return Mail(to=to, subject="Verify your email address", text=body)


def change_mail(platform: Platform, to: str, raw: str) -> Mail:
    ttl = identity_settings(platform.settings).change_email_ttl
    body = (
        "Confirm that your account should use this address from now on.\n\n"
        + _link_lines(platform, "confirm-email", raw, f"{API_BASE}/email/change/confirm")
        + f"\nThe link works once, for {_ttl_text(ttl)}. Until it is used, the account "
        "keeps its current address.\n"
    )
    return Mail(to=to, subject="Confirm your new email address", text=body)


def change_notice(to: str, new_email: str) -> Mail:
    body = (
        f"Someone signed in to your account asked to change its email to {new_email}.\n\n"
        "Nothing changes until that address confirms. If this was not you, reset your "
        "password now: that also signs every device out.\n"
    )
    return Mail(to=to, subject="Your email address is about to change", text=body)


async def _send(platform: Platform, mails: list[Mail]) -> None:
    for mail in mails:
        await send_email(platform.jobs, to=mail.to, subject=mail.subject, text=mail.text)


def _client(ip: str | None, user_agent: str | None) -> ClientInfo:
    return ClientInfo(ip=ip, user_agent=user_agent)


async def _password_reset(
    session: AsyncSession, platform: Platform, email: str, client: ClientInfo
) -> list[Mail]:
    user = await repository.user_by_email(session, email)
    if user is None or not user.is_active:
        audit.record(
            session,
            audit.Action.PASSWORD_RESET_REQUEST,
            user_id=user.id if user is not None else None,
            client=client,
            outcome=audit.Outcome.FAILURE,
            details={"email": email, "reason": "disabled" if user else "unknown_account"},
        )
        return []
    ttl = identity_settings(platform.settings).reset_password_ttl
    raw = await issue_token(session, user_id=user.id, purpose=Purpose.RESET_PASSWORD, ttl=ttl)
    audit.record(session, audit.Action.PASSWORD_RESET_REQUEST, user_id=user.id, client=client)
    return [reset_mail(platform, user.email, raw)]


async def password_reset_job(
    ctx: JobContext, *, email: str, ip: str | None = None, user_agent: str | None = None
) -> None:
    async with ctx.platform.database.unit_of_work() as session:
        mails = await _password_reset(session, ctx.platform, email, _client(ip, user_agent))
    await _send(ctx.platform, mails)


async def email_verification_job(ctx: JobContext, *, user_id: str) -> None:
    platform = ctx.platform
    mails: list[Mail] = []
    async with platform.database.unit_of_work() as session:
        user = await repository.user_by_id(session, uuid.UUID(user_id))
        if user is not None and user.is_active and user.email_verified_at is None:
            raw = await issue_token(
                session,
                user_id=user.id,
                purpose=Purpose.VERIFY_EMAIL,
                ttl=identity_settings(platform.settings).verify_email_ttl,
                new_email=user.email,
            )
            mails.append(verification_mail(platform, user.email, raw))
    await _send(platform, mails)


async def email_change_job(ctx: JobContext, *, user_id: str, new_email: str) -> None:
    platform = ctx.platform
    mails: list[Mail] = []
    async with platform.database.unit_of_work() as session:
        user = await repository.user_by_id(session, uuid.UUID(user_id))
        if user is not None and user.is_active:
            raw = await issue_token(
                session,
                user_id=user.id,
                purpose=Purpose.CHANGE_EMAIL,
                ttl=identity_settings(platform.settings).change_email_ttl,
                new_email=new_email,
            )
            mails.append(change_mail(platform, new_email, raw))
            mails.append(change_notice(user.email, new_email))
    await _send(platform, mails)


JOBS = (
    JobSpec(name=JOB_PASSWORD_RESET, func=password_reset_job, max_retries=3),
    JobSpec(name=JOB_EMAIL_VERIFICATION, func=email_verification_job, max_retries=3),
    JobSpec(name=JOB_EMAIL_CHANGE, func=email_change_job, max_retries=3),
)
