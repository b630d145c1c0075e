"""A small IMAP client on the stdlib `imaplib`: fetch new messages by UID and mark them seen.

Callers keep the mailbox's UIDVALIDITY and the last UID they processed; `fetch_since` returns what
came after it, starting again from the beginning when the server reports a new UIDVALIDITY (the old
UIDs then mean nothing). Messages are fetched with BODY.PEEK[] so fetching does not mark them read.
"""
from __future__ import annotations

import base64
import imaplib
import re
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

SECURITY_MODES = ("ssl", "starttls", "none")
_UID = re.compile(rb"\bUID (\d+)")
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")


class MailboxError(Exception):
    """The IMAP server could not be reached, refused the login, or failed a mailbox command."""


@dataclass
class ImapSettings:
    """Where and how to reach one IMAP mailbox. `security` is "ssl", "starttls" or "none"."""

    host: str
    port: int
    security: str
    username: str
    password: str
    mailbox: str = "INBOX"
    timeout: float = 30


def fetch_since(
    settings: ImapSettings, last_uid: int, uidvalidity: int | None, limit: int = 100
) -> tuple[int, list[tuple[int, bytes]]]:
    """Messages with a UID above `last_uid`, oldest first, at most `limit`, with the UIDVALIDITY.

    When `uidvalidity` is given and the mailbox now reports another one, every message is new again.
    Returns (uidvalidity, [(uid, raw RFC 822 bytes), ...]).
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    with _session(settings) as conn:
        current = _uidvalidity(conn, settings)
        if uidvalidity is not None and uidvalidity != current:
            last_uid = 0
        last_uid = max(0, last_uid)
        found = _check(settings, "UID SEARCH", *conn.uid("SEARCH", "UID", f"{last_uid + 1}:*"))
        uids = sorted({int(token) for line in found if line for token in line.split()})
        # "n:*" always matches the highest UID, even when it is below n: keep only the new ones.
        wanted = [uid for uid in uids if uid > last_uid][:limit]
        if not wanted:
            return current, []
        data = _check(settings, "UID FETCH", *conn.uid("FETCH", _uid_set(wanted), "(UID BODY.PEEK[])"))
        bodies = dict(_fetched_bodies(data))
        return current, [(uid, bodies[uid]) for uid in wanted if uid in bodies]


def mark_seen(settings: ImapSettings, uids: list[int]) -> None:
    """Set the \\Seen flag on the messages with these UIDs."""
    if not uids:
        return
    with _session(settings) as conn:
        _check(settings, "UID STORE", *conn.uid("STORE", _uid_set(uids), "+FLAGS.SILENT", r"(\Seen)"))


@contextmanager
def _session(settings: ImapSettings) -> Iterator[imaplib.IMAP4]:
    """A logged-in connection with the mailbox selected read-write, logged out afterwards."""
    where = f"{settings.host}:{settings.port}"
    conn = _connect(settings)
    try:
        try:
            _login(conn, settings)
        except imaplib.IMAP4.error as exc:
            raise MailboxError(
                f"IMAP login failed for {settings.username!r} on {where}: {_text(exc)}"
            ) from exc
        try:
            status, data = conn.select(_quote_mailbox(settings.mailbox), readonly=False)
        except imaplib.IMAP4.error as exc:
            status, data = "NO", [str(exc).encode()]
        if status != "OK":
            raise MailboxError(
                f"cannot select mailbox {settings.mailbox!r} on {where}: {_text(data)}"
            )
        yield conn
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"IMAP error on {where} (mailbox {settings.mailbox!r}): {_text(exc)}") from exc
    finally:
        with suppress(OSError, imaplib.IMAP4.error):
            conn.logout()


def _connect(settings: ImapSettings) -> imaplib.IMAP4:
    """Open the connection, with TLS from the start ("ssl") or after STARTTLS ("starttls")."""
    where = f"{settings.host}:{settings.port}"
    if settings.security not in SECURITY_MODES:
        raise MailboxError(f"unknown IMAP security {settings.security!r} for {where}: use one of "
                           + ", ".join(SECURITY_MODES))
    try:
        if settings.security == "ssl":
            return imaplib.IMAP4_SSL(settings.host, settings.port, ssl_context=ssl.create_default_context(),
                                     timeout=settings.timeout)
        conn = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout)
        if settings.security == "starttls":
            try:
                conn.starttls(ssl_context=ssl.create_default_context())
            except Exception:
                conn.shutdown()
                raise
        return conn
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"cannot connect to IMAP server {where} ({settings.security}): {_text(exc)}") from exc


def _login(conn: imaplib.IMAP4, settings: ImapSettings) -> None:
    """LOGIN, or AUTHENTICATE PLAIN in UTF-8 for credentials that LOGIN cannot carry (non-ASCII)."""
    if (settings.username + settings.password).isascii():
        conn.login(settings.username, settings.password)
    else:
        token = f"\0{settings.username}\0{settings.password}".encode()
        conn.authenticate("PLAIN", lambda _challenge: token)


def _uidvalidity(conn: imaplib.IMAP4, settings: ImapSettings) -> int:
    """The selected mailbox's UIDVALIDITY, from the SELECT response or else from STATUS."""
    _, values = conn.response("UIDVALIDITY")
    for value in values or []:
        if value and value.strip().isdigit():
            return int(value)
    data = _check(settings, "STATUS", *conn.status(_quote_mailbox(settings.mailbox), "(UIDVALIDITY)"))
    for line in data:
        found = _UIDVALIDITY.search(line if isinstance(line, bytes) else b"")
        if found:
            return int(found.group(1))
    raise MailboxError(f"IMAP server {settings.host} reported no UIDVALIDITY for mailbox {settings.mailbox!r}")


def _fetched_bodies(data: list) -> Iterator[tuple[int, bytes]]:
    """(uid, body) pairs from a UID FETCH response, whether the UID comes before or after the body."""
    for index, item in enumerate(data):
        if not isinstance(item, tuple) or len(item) < 2:
            continue
        header, body = item[0], item[1]
        found = _UID.search(header)
        if not found and index + 1 < len(data) and isinstance(data[index + 1], bytes):
            found = _UID.search(data[index + 1])
        if found and isinstance(body, bytes):
            yield int(found.group(1)), body


def _check(settings: ImapSettings, command: str, status: str, data: list) -> list:
    """The response data of a command that must succeed."""
    if status != "OK":
        raise MailboxError(
            f"IMAP {command} failed on {settings.host} (mailbox {settings.mailbox!r}): {_text(data)}"
        )
    return data


def _uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP sequence set, e.g. [1, 2, 3, 7] -> "1:3,7"."""
    ranges: list[list[int]] = []
    for uid in sorted(set(uids)):
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges)


def _quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    encoded: list[str] = []
    pending = ""

    def flush() -> None:
        nonlocal pending
        if pending:
            b64 = base64.b64encode(pending.encode("utf-16-be")).decode("ascii").rstrip("=")
            encoded.append("&" + b64.replace("/", ",") + "-")
            pending = ""

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            encoded.append("&-" if char == "&" else char)
        else:
            pending += char
    flush()
    text = "".join(encoded).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _text(value: object) -> str:
    """A one-line description of a server response or exception."""
    if isinstance(value, BaseException) and value.args:
        value = value.args[0] if len(value.args) == 1 else str(value)
    if isinstance(value, list):
        value = b" ".join(v if isinstance(v, bytes) else str(v).encode() for v in value if v is not None)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return " ".join(str(value).split()) or "no details"
