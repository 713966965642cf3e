"""Outgoing email: SMTP when ``ENGINEROOM_SMTP_URL`` is set, ``.eml`` files otherwise.

``ENGINEROOM_SMTP_URL`` forms:

- ``smtp://host:port`` plain SMTP (default port 25);
- ``smtp://user:password@host:587?starttls=true`` upgrade with STARTTLS (required then);
- ``smtps://user:password@host`` implicit TLS (default port 465).

Optional query parameters: ``timeout`` (seconds, default 30) and ``local_hostname`` (the
EHLO name; by default the machine's FQDN). User and password are percent-decoded.

Without a URL, each message is written to ``<data dir>/mail/<timestamp>-<id>.eml`` so a
developer can open it; nothing leaves the machine.

Modules send mail through the job queue (``send_email``), so a slow or failing SMTP
server never holds up a request and failed sends are retried.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import structlog

from engineroom.core.clock import new_id, utcnow
from engineroom.core.jobs import JobContext, Jobs, JobSpec
from engineroom.settings import Settings

logger = structlog.get_logger("engineroom.mail")

DEFAULT_SMTP_TIMEOUT_SECONDS = 30.0
SEND_EMAIL_JOB_NAME = "core.send_email"
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\\\"]+@[^\s@<>()\[\],;:\\\"]+$")
_TRUE = frozenset({"1", "true", "yes", "on"})


def _reject_line_breaks(value: str, field: str) -> None:
    # A CR or LF in a header value would let the caller append headers of their own
    # (Bcc:, a second body...): header injection.
    if "\r" in value or "\n" in value:
        raise ValueError(f"{field}: line breaks are not allowed")


def check_address(value: str, field: str = "address") -> str:
    """Return ``value`` if it is exactly one mailbox (``a@b`` or ``Name <a@b>``)."""
    _reject_line_breaks(value, field)
    parsed = getaddresses([value])
    # The address must appear as written: the parser quietly repairs some malformed input
    # ("bob @example.com" -> "bob@example.com"), which would hide a typo.
    if len(parsed) != 1 or not _ADDRESS.fullmatch(parsed[0][1]) or parsed[0][1] not in value:
        raise ValueError(f"{field}: not a single valid email address: {value!r}")
    return value


def build_message(
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    sender: str | None = None,
) -> EmailMessage:
    """A plain-text email, with an HTML alternative when ``html`` is given.

    ``sender`` defaults to ``ENGINEROOM_MAIL_FROM``, filled in by ``Mailer.send``.
    Raises ``ValueError`` for an invalid address or a line break in a header.
    """
    check_address(to, "to")
    _reject_line_breaks(subject, "subject")
    message = EmailMessage()
    if sender is not None:
        message["From"] = check_address(sender, "sender")
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


@dataclass(frozen=True)
class SmtpConfig:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool
    timeout: float
    local_hostname: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("ENGINEROOM_SMTP_URL: expected smtp://host[:port] or smtps://...")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        use_tls = parts.scheme == "smtps"
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if use_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=query.get("starttls", "").lower() in _TRUE,
            timeout=float(query.get("timeout", DEFAULT_SMTP_TIMEOUT_SECONDS)),
            local_hostname=query.get("local_hostname") or None,
        )


class Mailer:
    """Sends ``EmailMessage``s; see the module docstring for the two transports."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._smtp = SmtpConfig.from_url(settings.smtp_url) if settings.smtp_url else None

    async def send(self, message: EmailMessage) -> None:
        """Send ``message``, adding ``From``, ``Date`` and ``Message-ID`` when missing."""
        self._complete_headers(message)
        if self._smtp is None:
            path = await asyncio.to_thread(_write_eml, self._settings.mail_dir, message)
            logger.info("mail_written", path=str(path), message_id=message["Message-ID"])
            return
        smtp = self._smtp
        await aiosmtplib.send(
            message,
            hostname=smtp.hostname,
            port=smtp.port,
            username=smtp.username,
            password=smtp.password,
            use_tls=smtp.use_tls,
            start_tls=smtp.start_tls,
            timeout=smtp.timeout,
            local_hostname=smtp.local_hostname,
        )
        logger.info("mail_sent", message_id=message["Message-ID"], smtp_host=smtp.hostname)

    def _complete_headers(self, message: EmailMessage) -> None:
        if message["From"] is None:
            message["From"] = check_address(self._settings.mail_from, "ENGINEROOM_MAIL_FROM")
        if message["Date"] is None:
            message["Date"] = format_datetime(utcnow())
        if message["Message-ID"] is None:
            # An explicit domain: make_msgid's default looks up this host's FQDN (DNS).
            message["Message-ID"] = make_msgid(domain=_domain_of(str(message["From"])))


def _domain_of(mailbox: str) -> str:
    return getaddresses([mailbox])[0][1].rpartition("@")[2] or "localhost"


def _write_eml(directory: Path, message: EmailMessage) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"{stamp}-{new_id().hex}.eml"
    temporary = path.with_name(f".{path.name}.tmp")
    # Written aside then renamed: a reader never sees half a message. 0600 because mails
    # carry sign-in links and tokens.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(message.as_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


async def _send_email_job(
    ctx: JobContext, *, to: str, subject: str, text: str, html: str | None = None
) -> None:
    message = build_message(to, subject, text, html)
    # Derived from the job id, so a retry after a send that actually went through carries
    # the same Message-ID and receiving systems can drop the duplicate.
    message["Message-ID"] = f"<{ctx.job_id}@{_domain_of(ctx.settings.mail_from)}>"
    await ctx.platform.mailer.send(message)


SEND_EMAIL_JOB = JobSpec(name=SEND_EMAIL_JOB_NAME, func=_send_email_job, max_retries=5)


async def send_email(
    jobs: Jobs, *, to: str, subject: str, text: str, html: str | None = None
) -> str:
    """Queue an email and return the job id.

    The message is built (and so validated) here, so a bad address fails in the caller
    rather than in a job retried in the background.
    """
    build_message(to, subject, text, html)
    kwargs: dict[str, Any] = {"to": to, "subject": subject, "text": text}
    if html is not None:
        kwargs["html"] = html
    return await jobs.enqueue(SEND_EMAIL_JOB_NAME, **kwargs)
