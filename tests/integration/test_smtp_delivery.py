"""Delivery to a real SMTP server (aiosmtpd) started by each test on a free loopback port."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, Session

from engineroom.core.jobs import Jobs
from engineroom.core.mail import SEND_EMAIL_JOB, Mailer, build_message, send_email
from engineroom.settings import Settings

WAIT_SECONDS = 15.0
USER = "mailer@example.com"
PASSWORD = "s3cret:/@"


@dataclass
class Inbox:
    """The aiosmtpd handler: keeps every envelope it is given."""

    envelopes: list[Envelope] = field(default_factory=list)
    refuse: int = 0
    """How many messages to turn away with a temporary failure first."""
    refused: int = 0

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.refused < self.refuse:
            self.refused += 1
            return "451 4.3.0 Try again later"
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def message(self, index: int = 0) -> email.message.EmailMessage:
        content = self.envelopes[index].content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def authenticate(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    # handled=False: aiosmtpd then answers the failure (535) itself.
    return AuthResult(success=ok, handled=False)


def start_server(**smtp_options: Any) -> tuple[Controller, SmtpServer]:
    inbox = Inbox()
    last_error: OSError | None = None
    for _ in range(5):  # another test may grab the port between probe and bind
        port = free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **smtp_options)
        try:
            controller.start()
        except OSError as exc:
            last_error = exc
            continue
        return controller, SmtpServer(port=port, inbox=inbox)
    raise RuntimeError(f"could not start the SMTP server: {last_error}")


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    controller, server = start_server()
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def smtp_server_with_auth() -> Iterator[SmtpServer]:
    # AUTH over plain TCP is only acceptable because the server is on loopback in a test.
    controller, server = start_server(
        authenticator=authenticate, auth_required=True, auth_require_tls=False
    )
    try:
        yield server
    finally:
        controller.stop()


def with_smtp(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"smtp_url": url, "mail_from": "Engine <robot@example.org>"})


async def test_mailer_delivers_over_smtp(settings: Settings, smtp_server: SmtpServer) -> None:
    mailer = Mailer(with_smtp(settings, f"smtp://127.0.0.1:{smtp_server.port}?timeout=10"))

    await mailer.send(build_message("Bob <bob@example.com>", "Welcome aboard", "Hello Bob"))

    (envelope,) = smtp_server.inbox.envelopes
    assert envelope.mail_from == "robot@example.org"
    assert envelope.rcpt_tos == ["bob@example.com"]
    received = smtp_server.inbox.message()
    assert received["Subject"] == "Welcome aboard"
    assert received["To"] == "Bob <bob@example.com>"
    assert received["From"] == "Engine <robot@example.org>"
    assert received.get_content().strip() == "Hello Bob"
    # Nothing falls back to files when SMTP is configured.
    assert not (settings.data_dir / "mail").exists()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_mailer_logs_in_with_the_url_credentials(
    settings: Settings, smtp_server_with_auth: SmtpServer
) -> None:
    port = smtp_server_with_auth.port
    url = f"smtp://mailer%40example.com:s3cret%3A%2F%40@127.0.0.1:{port}"
    await Mailer(with_smtp(settings, url)).send(
        build_message("carol@example.com", "Signed in", "ok", sender="ops@example.org")
    )

    (envelope,) = smtp_server_with_auth.inbox.envelopes
    assert envelope.mail_from == "ops@example.org"
    assert envelope.rcpt_tos == ["carol@example.com"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_wrong_credentials_fail_the_send(
    settings: Settings, smtp_server_with_auth: SmtpServer
) -> None:
    url = f"smtp://mailer%40example.com:wrong@127.0.0.1:{smtp_server_with_auth.port}"
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await Mailer(with_smtp(settings, url)).send(build_message("c@example.com", "x", "y"))
    assert smtp_server_with_auth.inbox.envelopes == []


async def test_send_email_job_delivers_through_the_in_process_queue(
    settings: Settings, smtp_server: SmtpServer
) -> None:
    platform = make_platform(with_smtp(settings, f"smtp://127.0.0.1:{smtp_server.port}"))
    jobs: Jobs = platform.jobs
    await jobs.start()
    try:
        job_id = await send_email(
            jobs,
            to="dana@example.com",
            subject="Verify your email",
            text="Your code is 123456",
            html="<p>Your code is <b>123456</b></p>",
        )
        assert job_id
        async with asyncio.timeout(WAIT_SECONDS):
            while jobs.queue_depth():  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.02)
    finally:
        await jobs.stop()

    (envelope,) = smtp_server.inbox.envelopes
    assert envelope.rcpt_tos == ["dana@example.com"]
    assert envelope.mail_from == "robot@example.org"
    received = smtp_server.inbox.message()
    assert received["Subject"] == "Verify your email"
    assert received["Message-ID"] == f"<{job_id}@example.org>"
    html = received.get_body(preferencelist=("html",))
    assert html is not None
    assert "<b>123456</b>" in html.get_content()


async def test_a_temporary_smtp_failure_is_retried(
    settings: Settings, smtp_server: SmtpServer
) -> None:
    smtp_server.inbox.refuse = 1
    platform = make_platform(with_smtp(settings, f"smtp://127.0.0.1:{smtp_server.port}"))
    await platform.jobs.start()
    try:
        job_id = await send_email(platform.jobs, to="erin@example.com", subject="s", text="t")
        async with asyncio.timeout(WAIT_SECONDS):
            while not smtp_server.inbox.envelopes:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.02)
    finally:
        await platform.jobs.stop()

    assert smtp_server.inbox.refused == 1
    (envelope,) = smtp_server.inbox.envelopes
    assert envelope.rcpt_tos == ["erin@example.com"]
    assert smtp_server.inbox.message()["Message-ID"] == f"<{job_id}@example.org>"


async def test_send_email_validates_before_queueing(settings: Settings) -> None:
    platform = make_platform(settings)
    await platform.jobs.start()
    try:
        with pytest.raises(ValueError, match="line breaks"):
            await send_email(platform.jobs, to="a@example.com", subject="x\r\nBcc: e@x.y", text="")
        assert platform.jobs.queue_depth() == 0
    finally:
        await platform.jobs.stop()


@dataclass
class _MailPlatform:
    """The part of Platform the email job uses, until the whole kernel imports."""

    settings: Settings
    mailer: Mailer
    jobs: Jobs = field(init=False)


def make_platform(settings: Settings) -> Any:
    platform = _MailPlatform(settings, Mailer(settings))
    platform.jobs = Jobs(settings, platform, retry_delay=0)  # type: ignore[arg-type]
    platform.jobs.register(SEND_EMAIL_JOB)
    return platform
