"""A real SMTP server for tests (aiosmtpd on 127.0.0.1), recording every message it accepts."""
from __future__ import annotations

import email
import email.policy
import socket
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Recorder:
    """Accepts every recipient except those starting with "nobody@" (answered 550)."""

    def __init__(self):
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 queued as test"

    def messages(self) -> list[EmailMessage]:
        return [email.message_from_bytes(raw, policy=email.policy.default) for _f, _t, raw in self.received]


class SmtpServer:
    def __init__(self):
        self.port = free_port()
        self.recorder = Recorder()
        self.controller: Controller | None = None

    def start(self) -> SmtpServer:
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        self.controller = None

    def config(self) -> dict:
        return {"BIGLEDGER_MAIL_PROVIDER": "smtp", "BIGLEDGER_SMTP_HOST": "127.0.0.1",
                "BIGLEDGER_SMTP_PORT": self.port, "BIGLEDGER_SMTP_SECURITY": "none", "BIGLEDGER_SMTP_TIMEOUT": 5}


@pytest.fixture
def smtp_server():
    """A running SMTP server; `stop()` / `start()` it to simulate an outage on the same port."""
    server = SmtpServer().start()
    yield server
    server.stop()
