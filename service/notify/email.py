"""The email channel: one readable message, plain text and HTML (multipart/alternative), over
SMTP with smtplib (RFC 5321), optionally upgraded with STARTTLS and authenticated.

The message's Message-ID is made from the notification's id, so a resend after a crash carries
the same Message-ID and a mail system that deduplicates shows it once.
"""
from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

from service.notify.channels import Outcome


@dataclass(frozen=True)
class SmtpSettings:
    """Where mail goes: TOH_SMTP_HOST / PORT / FROM / USER / PASSWORD / STARTTLS."""

    host: str | None
    port: int = 25
    sender: str = "toh-service@localhost"
    user: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0


@dataclass(frozen=True)
class EmailMessageParts:
    """What one email says: its subject, plain text and HTML bodies."""

    subject: str
    text: str
    html: str


def build_message(settings: SmtpSettings, to: str, parts: EmailMessageParts, msg_id: str) -> EmailMessage:
    """The MIME message (multipart/alternative: text/plain, then text/html)."""
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = to
    message["Subject"] = parts.subject
    message["Date"] = formatdate(usegmt=True)
    domain = settings.sender.rpartition("@")[2] or "toh-service"
    message["Message-ID"] = f"<{msg_id}@{domain}>"
    message.set_content(parts.text)
    message.add_alternative(parts.html, subtype="html")
    return message


class SmtpSender:
    """Sends one message per call over a new SMTP connection; never raises for the server's or
    the network's faults (see Outcome)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def send(self, to: str, parts: EmailMessageParts, *, msg_id: str) -> Outcome:
        """Deliver to one address (a mailto: URL's address)."""
        settings = self.settings
        if not settings.host:
            return Outcome(False, "no SMTP server is configured (TOH_SMTP_HOST)")
        message = build_message(settings, to, parts, msg_id)
        try:
            with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
                if settings.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if settings.user:
                    smtp.login(settings.user, settings.password or "")
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            return Outcome(False, f"the SMTP server refused {to}: {_codes(exc.recipients)}", permanent=True)
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600
            return Outcome(False, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=permanent)
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}")
        if refused:
            return Outcome(False, f"the SMTP server refused {to}: {_codes(refused)}", permanent=True)
        return Outcome(True)


def _codes(refused: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{code} {reply.decode(errors='replace')}" for code, reply in refused.values())
