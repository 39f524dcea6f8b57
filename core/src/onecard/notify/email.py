"""The built-in ``email`` channel: one SMTP connection per message, UTF-8 subject and body."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

from onecard.notify.registry import Message, NotifyError

if TYPE_CHECKING:
    from onecard.config import Settings


class EmailChannel:
    """Sends through ``smtp_host:smtp_port`` (STARTTLS and login when configured)."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise NotifyError("smtp_host is not set: e-mail cannot be sent", field="smtp_host")
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.user = settings.smtp_user
        self.password = settings.smtp_password
        self.sender = settings.smtp_from
        self.starttls = settings.smtp_starttls
        self.timeout = settings.notify_timeout

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def build(self, message: Message) -> EmailMessage:
        """The e-mail as it is sent (UTF-8; the subject is one line)."""
        recipient = message.recipient.strip()
        if "@" not in recipient or any(c.isspace() for c in recipient):
            raise NotifyError(f"not an e-mail address: {recipient!r}", field="recipient")
        mail = EmailMessage()
        try:
            mail["From"] = self.sender
            mail["To"] = recipient
        except (ValueError, IndexError) as exc:
            raise NotifyError(f"bad address in From or To: {exc}", field="recipient") from exc
        mail["Subject"] = " ".join(message.subject.split())
        mail["Date"] = formatdate(localtime=True)
        mail["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2].strip("> ") or None)
        mail.set_content(message.body, charset="utf-8")
        return mail

    def send(self, message: Message) -> None:
        mail = self.build(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reason = next(iter(exc.recipients.values()))
            raise NotifyError(
                f"the SMTP server {self.server} refused the recipient {message.recipient}: "
                f"{code} {_text(reason)}"
            ) from exc
        except smtplib.SMTPSenderRefused as exc:
            raise NotifyError(
                f"the SMTP server {self.server} refused the sender {self.sender}: "
                f"{exc.smtp_code} {_text(exc.smtp_error)}"
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(
                f"the SMTP server {self.server} refused the login of {self.user}: "
                f"{exc.smtp_code} {_text(exc.smtp_error)}"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise NotifyError(f"the SMTP server {self.server}: {exc}") from exc
        except smtplib.SMTPResponseException as exc:
            raise NotifyError(
                f"the SMTP server {self.server} answered {exc.smtp_code} {_text(exc.smtp_error)}"
            ) from exc
        except smtplib.SMTPException as exc:
            raise NotifyError(f"the SMTP server {self.server}: {exc}") from exc
        except TimeoutError as exc:
            raise NotifyError(
                f"the SMTP server {self.server} did not answer within {self.timeout:g} s"
            ) from exc
        except ssl.SSLError as exc:
            raise NotifyError(f"STARTTLS with the SMTP server {self.server} failed: {exc}") from exc
        except OSError as exc:
            raise NotifyError(
                f"cannot reach the SMTP server {self.server}: {exc.strerror or exc}"
            ) from exc


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
