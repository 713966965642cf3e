"""Email building, SMTP URL parsing and the .eml fallback used without ENGINEROOM_SMTP_URL."""

from __future__ import annotations

import email
import email.policy
import stat
from email.message import EmailMessage
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engineroom.core.mail import Mailer, SmtpConfig, build_message
from engineroom.settings import Settings


def read_eml(path: Path) -> EmailMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


async def test_without_smtp_url_the_message_is_written_as_eml(settings: Settings) -> None:
    message = build_message(
        "Ada Lovelace <ada@example.com>",
        "Verify your address",
        "Open https://example.test/verify?t=abc",
        html="<p>Open <a href='https://example.test/verify?t=abc'>this link</a></p>",
    )

    with capture_logs() as logs:
        await Mailer(settings).send(message)

    (path,) = (settings.data_dir / "mail").glob("*.eml")
    saved = read_eml(path)
    assert saved["To"] == "Ada Lovelace <ada@example.com>"
    assert saved["Subject"] == "Verify your address"
    assert saved["From"] == settings.mail_from
    assert saved["Date"] is not None
    assert saved["Message-ID"].endswith("@localhost>")
    text = saved.get_body(preferencelist=("plain",))
    html = saved.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert "https://example.test/verify?t=abc" in text.get_content()
    assert "<a href='https://example.test/verify?t=abc'>" in html.get_content()
    # Mail carries sign-in links: readable by the owner only, and no temporary leftovers.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert [e["path"] for e in logs if e["event"] == "mail_written"] == [str(path)]


async def test_each_message_gets_its_own_file(settings: Settings) -> None:
    mailer = Mailer(settings)
    for n in range(3):
        await mailer.send(build_message("bob@example.com", f"n{n}", "body", sender="x@y.org"))

    files = sorted((settings.data_dir / "mail").glob("*.eml"))
    assert len(files) == 3
    assert sorted(read_eml(f)["Subject"] for f in files) == ["n0", "n1", "n2"]
    assert {read_eml(f)["From"] for f in files} == {"x@y.org"}
    assert {read_eml(f)["Message-ID"].split("@")[1] for f in files} == {"y.org>"}


def test_plain_text_only_message_has_no_html_part() -> None:
    message = build_message("bob@example.com", "Hi", "just text")
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "just text"
    assert message["From"] is None  # filled in by the Mailer from ENGINEROOM_MAIL_FROM


@pytest.mark.parametrize(
    ("to", "subject"),
    [
        ("bob@example.com\r\nBcc: eve@example.com", "Hi"),
        ("bob@example.com\nBcc: eve@example.com", "Hi"),
        ("bob@example.com", "Hi\r\nBcc: eve@example.com"),
        ("bob@example.com", "Hi\nX-Injected: yes"),
        ("bob@example.com", "Hi\rthere"),
    ],
)
def test_header_injection_is_rejected(to: str, subject: str) -> None:
    with pytest.raises(ValueError, match="line breaks"):
        build_message(to, subject, "body")


@pytest.mark.parametrize(
    "to",
    ["", "bob", "bob@", "@example.com", "bob@@example.com", "a@b.c, d@e.f", "bob @example.com"],
)
def test_invalid_recipients_are_rejected(to: str) -> None:
    with pytest.raises(ValueError, match="not a single valid email address"):
        build_message(to, "Hi", "body")


def test_invalid_sender_is_rejected() -> None:
    with pytest.raises(ValueError, match="sender"):
        build_message("bob@example.com", "Hi", "body", sender="not an address")


def test_smtp_url_with_credentials_and_starttls() -> None:
    config = SmtpConfig.from_url(
        "smtp://mailer%40example.com:p%3Ass%2Fword@smtp.example.com:587?starttls=true&timeout=5"
    )
    assert config.hostname == "smtp.example.com"
    assert config.port == 587
    assert config.username == "mailer@example.com"
    assert config.password == "p:ss/word"
    assert config.start_tls is True
    assert config.use_tls is False
    assert config.timeout == 5.0


def test_smtp_url_defaults() -> None:
    plain = SmtpConfig.from_url("smtp://localhost")
    assert (plain.port, plain.use_tls, plain.start_tls, plain.username) == (25, False, False, None)
    assert plain.timeout > 0
    implicit_tls = SmtpConfig.from_url("smtps://relay.example.com")
    assert (implicit_tls.port, implicit_tls.use_tls) == (465, True)


def test_mailer_refuses_a_url_without_host(settings: Settings) -> None:
    with pytest.raises(ValueError, match="ENGINEROOM_SMTP_URL"):
        Mailer(settings.model_copy(update={"smtp_url": "smtp://"}))
