"""A real SMTP server for tests (aiosmtpd on 127.0.0.1), recording every message it accepts."""
from __future__ import annotations

import email
import email.policy
import socket
import ssl
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


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


class Accounts:
    """SMTP AUTH against one user name and password."""

    def __init__(self, username: str, password: str):
        self.username, self.password = username.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == \
            (self.username, self.password)
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with the openssl command; returns (cert, key)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


class SmtpServer:
    """`security`: "none", "starttls" (required before AUTH and mail) or "tls" (implicit TLS)."""

    def __init__(self, security: str = "none", folder: Path | None = None, auth: tuple[str, str] | None = None):
        self.port = free_port()
        self.recorder = Recorder()
        self.controller: Controller | None = None
        self.security, self.auth = security, auth
        self.cert = None
        if security != "none":
            self.cert, key = self_signed(folder)
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(self.cert, key)

    def start(self) -> SmtpServer:
        options: dict = {}
        if self.security == "starttls":
            options.update(tls_context=self.tls, require_starttls=True)
        elif self.security == "tls":
            options.update(ssl_context=self.tls)
        if self.auth:
            # aiosmtpd does not count implicit TLS as TLS for AUTH; STARTTLS must come first
            options.update(authenticator=Accounts(*self.auth), auth_required=True, auth_exclude_mechanism=["LOGIN"],
                           auth_require_tls=self.security == "starttls")
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port,
                                     server_hostname="127.0.0.1", **options)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        self.controller = None

    def config(self) -> dict:
        config = {"BIGLEDGER_MAIL_PROVIDER": "smtp", "BIGLEDGER_SMTP_HOST": "127.0.0.1",
                  "BIGLEDGER_SMTP_PORT": self.port, "BIGLEDGER_SMTP_SECURITY": self.security,
                  "BIGLEDGER_SMTP_TIMEOUT": 5, "BIGLEDGER_SMTP_CA_FILE": str(self.cert) if self.cert else None}
        if self.auth:
            config.update(BIGLEDGER_SMTP_USERNAME=self.auth[0], BIGLEDGER_SMTP_PASSWORD=self.auth[1])
        return config


@pytest.fixture
def smtp_server():
    """A running SMTP server; `stop()` / `start()` it to simulate an outage on the same port."""
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server_factory(tmp_path):
    """Make SMTP servers with TLS and AUTH: `smtp_server_factory("starttls", auth=("crm", "pw"))`."""
    servers = []

    def make(security: str = "none", auth: tuple[str, str] | None = None) -> SmtpServer:
        folder = tmp_path / f"smtp{len(servers)}"
        folder.mkdir()
        server = SmtpServer(security, folder, auth)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()
