"""A real IMAP server for tests: Debian's Dovecot run from a generated configuration.

A pytest plugin (``pytest_plugins = ["tests.imap_server"]``) providing the ``imap_server`` fixture.
One Dovecot per test session (per xdist worker) listens on 127.0.0.1 on a free port with plain-text
login and Maildir storage in a temporary directory; each test logs in as a user of its own, so it
starts with an empty INBOX. Without Dovecot the fixture skips the test and says what to install.
"""
from __future__ import annotations

import grp
import imaplib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from bigledger_core.mail.imap import ImapSettings

PASSWORD = "imap-Secret-1"
INSTALL_HINT = "apt-get install dovecot-imapd"
_users = itertools.count(1)


@dataclass
class ImapTestServer:
    """One test's mailbox on the running server: settings to reach it and helpers to inspect it."""

    settings: ImapSettings

    def append(self, raw: bytes) -> None:
        """Append a message to INBOX with IMAP APPEND."""
        with self._connection() as conn:
            status, data = conn.append("INBOX", None, None, raw)
            if status != "OK":
                raise RuntimeError(f"APPEND failed: {data!r}")

    def seen_uids(self) -> set[int]:
        """UIDs of the INBOX messages that carry the \\Seen flag."""
        return self._search("SEEN")

    def uids(self) -> set[int]:
        """UIDs of every message in INBOX."""
        return self._search("ALL")

    def _search(self, criterion: str) -> set[int]:
        with self._connection() as conn:
            conn.select("INBOX", readonly=True)
            status, data = conn.uid("SEARCH", criterion)
            if status != "OK":
                raise RuntimeError(f"UID SEARCH {criterion} failed: {data!r}")
            return {int(uid) for line in data if line for uid in line.split()}

    def _connection(self) -> _Connection:
        return _Connection(self.settings)


class _Connection:
    """A logged-in imaplib connection used as a context manager."""

    def __init__(self, settings: ImapSettings) -> None:
        self._settings = settings
        self._conn: imaplib.IMAP4 | None = None

    def __enter__(self) -> imaplib.IMAP4:
        self._conn = imaplib.IMAP4(self._settings.host, self._settings.port, timeout=self._settings.timeout)
        self._conn.login(self._settings.username, self._settings.password)
        return self._conn

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            with suppress(OSError, imaplib.IMAP4.error):
                self._conn.logout()


class DovecotProcess:
    """A Dovecot master process with its own configuration, sockets, logs and Maildirs."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        # /tmp rather than pytest's private temp dir: the mail processes run as another user, and
        # Dovecot's socket paths must stay short
        self.root = Path(tempfile.mkdtemp(prefix="bigledger-dovecot-", dir="/tmp" if os.path.isdir("/tmp") else None))
        self.port = 0
        self.log = self.root / "dovecot.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Write the configuration and start Dovecot, retrying on another port if one was taken."""
        mail = self.root / "mail"
        mail.mkdir()
        internal_user, login_user, mail_user = _process_users()
        self.root.chmod(0o711)  # the mail processes run as `mail_user` and must reach mail/
        os.chown(mail, mail_user.pw_uid, mail_user.pw_gid)
        last_error = ""
        for _attempt in range(3):
            self.port = _free_port()
            config = self.root / "dovecot.conf"
            config.write_text(_config(self.root, self.port, internal_user, login_user, mail_user))
            with self.log.open("ab") as log:
                self._process = subprocess.Popen(
                    [self.binary, "-F", "-c", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT,
                )
            last_error = self._wait_until_ready()
            if not last_error:
                return
            self.stop(remove=False)
        raise RuntimeError(f"dovecot did not start: {last_error}\n--- {self.log} ---\n{self._log_tail()}")

    def stop(self, remove: bool = True) -> None:
        """Stop Dovecot and, unless told otherwise, delete its directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def settings(self, username: str) -> ImapSettings:
        """Settings for logging in to this server as `username`."""
        return ImapSettings(host="127.0.0.1", port=self.port, security="none", username=username,
                            password=PASSWORD, timeout=10)

    def _wait_until_ready(self, timeout: float = 20) -> str:
        """An empty string once the server greets on its port, else the reason it did not."""
        deadline = time.monotonic() + timeout
        error = "no greeting"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return "the dovecot process exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    greeting = sock.recv(200)
                if greeting.startswith(b"* OK"):
                    return ""
                error = f"unexpected greeting {greeting!r}"
            except OSError as exc:
                error = str(exc)
            time.sleep(0.1)
        return f"no IMAP greeting on 127.0.0.1:{self.port} within {timeout:.0f}s ({error})"

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"


def _dovecot_binary() -> str:
    """The path of the dovecot binary, or skip the test with what to install."""
    binary = shutil.which("dovecot") or next(
        (path for path in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(path, os.X_OK)), None
    )
    if binary is None:
        pytest.skip(f"dovecot is not installed: {INSTALL_HINT} (Debian's IMAP server, for the IMAP tests)")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    if not version.startswith("2.3."):
        pytest.skip(f"dovecot {version or '(unknown version)'} found; these tests configure Dovecot 2.3 "
                    f"(Debian 12: {INSTALL_HINT})")
    return binary


def _process_users() -> tuple[pwd.struct_passwd, pwd.struct_passwd, pwd.struct_passwd]:
    """(internal, login, mail) users: Dovecot's own accounts and `nobody` as root, else the caller."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return me, me, me
    try:
        return pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull"), pwd.getpwnam("nobody")
    except KeyError as exc:
        pytest.skip(f"dovecot's system user {exc} is missing: reinstall with {INSTALL_HINT}")


def _config(root: Path, port: int, internal: pwd.struct_passwd, login: pwd.struct_passwd,
            mail: pwd.struct_passwd) -> str:
    """A Dovecot 2.3 configuration: IMAP only, no TLS, one password for any user name, Maildir."""
    chroot = "" if os.geteuid() != 0 else "login"
    return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = bigledger-test-{port}
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal.pw_name}
default_internal_group = {grp.getgrgid(internal.pw_gid).gr_name}
default_login_user = {login.pw_name}
first_valid_uid = {mail.pw_uid}
first_valid_gid = {mail.pw_gid}
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={root}/mail/%u
}}
service imap-login {{
  chroot = {chroot}
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot = {"empty" if chroot else ""}
  # no listener the auth process can open: no growing delays after the wrong-password tests
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def dovecot_process() -> Iterator[DovecotProcess]:
    """The session's Dovecot server (skips when Dovecot is not installed)."""
    server = DovecotProcess(_dovecot_binary())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def imap_server(dovecot_process: DovecotProcess) -> ImapTestServer:
    """A fresh, empty INBOX on the real IMAP server, for one test."""
    return ImapTestServer(dovecot_process.settings(f"user{next(_users)}"))
