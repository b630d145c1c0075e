"""The built-in e-mail providers: `smtp` (a real mail server) and `file` (`.eml` files, for development)."""
from __future__ import annotations

import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from .outbound import OutgoingMessage, PermanentFailure, TemporaryFailure


def _address(name: str | None, address: str) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=name or "", username=local, domain=domain)


def build_mime(message: OutgoingMessage) -> EmailMessage:
    """A multipart/alternative (text + HTML) e-mail; non-ASCII subjects and names are RFC 2047 encoded."""
    mime = EmailMessage()
    mime["Subject"] = message.subject
    mime["From"] = _address(message.from_name, message.from_address)
    mime["To"] = _address(message.to_name, message.to_address)
    if message.reply_to:
        mime["Reply-To"] = message.reply_to
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    mime["Message-ID"] = f"<{message.message_id}>"
    for name, value in message.headers.items():
        mime[name] = value
    # base64 keeps the message 7-bit clean for servers without 8BITMIME
    mime.set_content(message.text or "", subtype="plain", charset="utf-8", cte="base64")
    if message.html:
        mime.add_alternative(message.html, subtype="html", charset="utf-8", cte="base64")
    return mime


def send_file(message: OutgoingMessage, folder: Path) -> str:
    """Write the message as `<folder>/<id>-<message-id>.eml`; returns its Message-ID."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{message.id:08d}-{message.message_id.split('@')[0]}.eml"
    target.write_bytes(bytes(build_mime(message)))
    return message.message_id


def send_smtp(message: OutgoingMessage, config: dict) -> str:
    """Send through the configured SMTP server; returns the Message-ID.

    Connection problems and 4xx answers raise TemporaryFailure (the message stays queued); 5xx answers
    and refused recipients raise PermanentFailure.
    """
    host, port = config["BIGLEDGER_SMTP_HOST"], int(config["BIGLEDGER_SMTP_PORT"])
    security, timeout = config["BIGLEDGER_SMTP_SECURITY"], float(config["BIGLEDGER_SMTP_TIMEOUT"])
    mime = build_mime(message)
    try:
        context = ssl.create_default_context(cafile=config.get("BIGLEDGER_SMTP_CA_FILE") or None)
        if security == "tls":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if security == "starttls":
                client.starttls(context=context)
            if config.get("BIGLEDGER_SMTP_USERNAME"):
                client.login(config["BIGLEDGER_SMTP_USERNAME"], config.get("BIGLEDGER_SMTP_PASSWORD") or "")
            client.send_message(mime, from_addr=message.from_address, to_addrs=[message.to_address])
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentFailure(f"recipient refused: {exc.recipients}") from None
    except smtplib.SMTPResponseException as exc:
        detail = f"SMTP {exc.smtp_code}: {exc.smtp_error.decode(errors='replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
        if 400 <= exc.smtp_code < 500:
            raise TemporaryFailure(detail) from None
        raise PermanentFailure(detail) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise TemporaryFailure(f"SMTP {host}:{port} unavailable: {exc}") from None
    return message.message_id
