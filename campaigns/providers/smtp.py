"""Plain SMTP (STARTTLS, login) for clinics without SendGrid.

The provider id is the Message-ID we generate. A refused recipient marks the address invalid;
a 4xx reply or a connection failure before DATA is retried; a failure after the message was
handed over is an unknown outcome, never resent blindly. An SMTP server cannot be asked later
whether it took a message, so every lookup is UNSUPPORTED and such a row waits for an operator.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from campaigns.rules.ports import (
    Attempt,
    ConfigurationError,
    InvalidAddressError,
    Lookup,
    LookupVerdict,
    OutgoingEmail,
    PermanentError,
    RetryableError,
    SendReceipt,
    UnknownOutcomeError,
)


class SmtpEmailSender:
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        from_email: str,
        from_name: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.from_email, self.from_name = from_email, from_name
        self.username, self._password = username, password
        self.starttls = starttls
        self.tls_context = tls_context or ssl.create_default_context()

    def build(self, message: OutgoingEmail, message_id: str) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = formataddr((self.from_name, self.from_email))
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = message_id
        mail["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        return mail

    def send_email(self, message: OutgoingEmail) -> SendReceipt:
        message_id = make_msgid(
            idstring=f"m{message.message_id}", domain=self.from_email.rpartition("@")[2] or None
        )
        mail = self.build(message, message_id)
        try:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except OSError:
            raise RetryableError("connection_error", "could not reach the SMTP server") from None
        handing_over = False
        try:
            with connection:
                if self.starttls:
                    connection.starttls(context=self.tls_context)
                if self.username:
                    connection.login(self.username, self._password or "")
                handing_over = True
                connection.send_message(mail)
        except smtplib.SMTPAuthenticationError as exc:
            raise ConfigurationError(str(exc.smtp_code), "SMTP login refused") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ConfigurationError("starttls", str(exc)) from None
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            if 400 <= code < 500:
                raise RetryableError(str(code), "recipient deferred") from None
            raise InvalidAddressError(str(code), "recipient refused") from None
        except smtplib.SMTPDataError as exc:
            # The server answered the message itself: a 4xx is a deferral, a 5xx a refusal.
            if 400 <= exc.smtp_code < 500:
                raise RetryableError(str(exc.smtp_code), "message deferred") from None
            raise PermanentError(str(exc.smtp_code), "message refused") from None
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise RetryableError(str(exc.smtp_code), "server busy") from None
            raise PermanentError(str(exc.smtp_code), "server refused") from None
        except (smtplib.SMTPServerDisconnected, TimeoutError, OSError):
            if not handing_over:
                raise RetryableError("disconnected", "the SMTP session broke early") from None
            raise UnknownOutcomeError("disconnected", "the SMTP session broke") from None
        return SendReceipt(self.name, message_id)

    def find_email(self, attempt: Attempt) -> Lookup:
        return Lookup(LookupVerdict.UNSUPPORTED, evidence="SMTP servers keep no searchable record")
