"""The SMTP sender against a real local SMTP server (aiosmtpd) with STARTTLS and login."""

from __future__ import annotations

import email
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from campaigns.providers.smtp import SmtpEmailSender
from campaigns.rules.ports import (
    ConfigurationError,
    InvalidAddressError,
    OutgoingEmail,
    RetryableError,
)

USER, PASSWORD = "clinic", "s3cret-pass"


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("refused@"):
            return "550 5.1.1 no such user"
        if address.startswith("later@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted"


def authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(),
        auth_data.password.decode(),
    ) == (USER, PASSWORD)
    return AuthResult(success=ok, handled=False)  # let the server answer 535 itself


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[tuple[Mailbox, int, ssl.SSLContext]]:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    mailbox = Mailbox()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    client_tls = ssl.create_default_context(cafile=str(cert))
    yield mailbox, port, client_tls
    controller.stop()


def sender(port: int, tls: ssl.SSLContext, password: str = PASSWORD) -> SmtpEmailSender:
    return SmtpEmailSender(
        "127.0.0.1",
        port,
        from_email="hello@santi.example",
        from_name="Santi Clinic",
        username=USER,
        password=password,
        starttls=True,
        timeout=5,
        tls_context=tls,
    )


def outgoing(to: str = "pat@example.com") -> OutgoingEmail:
    return OutgoingEmail(
        9,
        to,
        "Your Santi leg-care tip",
        "<p>Hello <b>Pat</b></p>",
        "Hello Pat",
        "leg-cramps:welcome",
        "https://clinic.example/u/TOKEN",
    )


def test_a_multipart_message_with_unsubscribe_headers_is_delivered(
    smtp_server: tuple[Mailbox, int, ssl.SSLContext],
) -> None:
    mailbox, port, tls = smtp_server
    receipt = sender(port, tls).send_email(outgoing())
    [message] = mailbox.messages
    assert receipt.provider == "smtp"
    assert receipt.provider_id == message["Message-ID"]
    assert message["To"] == "pat@example.com"
    assert message["List-Unsubscribe"] == "<https://clinic.example/u/TOKEN>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    parts = [p.get_content_type() for p in message.walk() if not p.is_multipart()]
    assert parts == ["text/plain", "text/html"]


def test_a_wrong_password_stops_the_channel(
    smtp_server: tuple[Mailbox, int, ssl.SSLContext],
) -> None:
    _, port, tls = smtp_server
    with pytest.raises(ConfigurationError):
        sender(port, tls, password="wrong").send_email(outgoing())


def test_a_refused_recipient_is_an_invalid_address_and_a_deferral_is_retried(
    smtp_server: tuple[Mailbox, int, ssl.SSLContext],
) -> None:
    mailbox, port, tls = smtp_server
    with pytest.raises(InvalidAddressError) as refused:
        sender(port, tls).send_email(outgoing("refused@example.com"))
    assert refused.value.code == "550"
    with pytest.raises(RetryableError) as later:
        sender(port, tls).send_email(outgoing("later@example.com"))
    assert later.value.code == "451"
    assert mailbox.messages == []


def test_no_server_is_safe_to_retry() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RetryableError):
        sender(port, ssl.create_default_context()).send_email(outgoing())
