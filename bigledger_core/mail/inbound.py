"""Inbound e-mail: raw RFC 5322 bytes parsed into an `InboundMessage`.

Parsing uses the stdlib `email` package with the modern policy and is lenient the way mail readers
are: GB2312 and GBK labels are read as GB18030 (real mail labelled gb2312 often holds GBK characters),
raw 8-bit headers and unknown charsets are decoded as UTF-8, then GB18030, then UTF-8 with
replacement characters, and nothing short of input that is not an e-mail raises.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors as email_errors
from email.header import decode_header
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any

MAX_MESSAGE_BYTES = 25 * 1024 * 1024

_GB_LABELS = frozenset({
    "gb2312", "gb_2312", "gb_2312-80", "gb2312-80", "gb2312-1980", "csgb2312", "euc-cn", "euccn",
    "x-euc-cn", "chinese", "iso-ir-58", "gbk", "x-gbk", "cp936", "ms936", "windows-936", "gb18030",
})
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_GB_RFC2231 = re.compile(r"(\*\s*=\s*\"?)(gb2312|gbk|x-gbk|cp936|euc-cn)(')", re.IGNORECASE)
_SURROGATE = re.compile("[\udc80-\udcff]")
_MSG_ID = re.compile(r"<\s*([^<>\s]+)\s*>")
_HEADER_ERRORS = (
    ValueError, TypeError, IndexError, AttributeError, LookupError, email_errors.MessageError,
)


class _InboundPolicy(EmailPolicy):
    """The default policy, with raw header values repaired before the header registry parses them."""

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        """Decode raw 8-bit bytes and re-encode encoded-words as UTF-8, then parse as usual."""
        if isinstance(value, str) and not hasattr(value, "name"):
            value = _GB_RFC2231.sub(r"\1gb18030\3", _reencode_words(_clean(value)))
        return super().header_fetch_parse(name, value)


_POLICY = _InboundPolicy()


@dataclass(frozen=True)
class Attachment:
    """A file attached to a message, with its decoded name and content."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class InboundMessage:
    """A parsed inbound e-mail. Message ids carry no angle brackets; addresses are lower-cased."""

    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    sender: tuple[str, str]
    to: tuple[tuple[str, str], ...]
    cc: tuple[tuple[str, str], ...]
    subject: str
    date: datetime | None
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    # a delivery status notification (a bounce): the Message-ID of the message it reports on, and the
    # recipients it could not be delivered to as (address, status, diagnostic)
    bounce_of: str | None = None
    failed_recipients: tuple[tuple[str, str, str], ...] = ()

    def as_payload(self) -> dict[str, Any]:
        """JSON-safe data: every field, the date as an ISO 8601 string, attachments without content."""
        return {
            "message_id": self.message_id,
            "in_reply_to": self.in_reply_to,
            "references": list(self.references),
            "sender": list(self.sender),
            "to": [list(address) for address in self.to],
            "cc": [list(address) for address in self.cc],
            "subject": self.subject,
            "date": self.date.isoformat() if self.date else None,
            "text": self.text,
            "html": self.html,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": len(a.data)}
                for a in self.attachments
            ],
            "bounce": {"message_id": self.bounce_of,
                       "failed": [{"recipient": r, "status": st, "diagnostic": d}
                                  for r, st, d in self.failed_recipients]} if self.failed_recipients else None,
        }


def parse_message(raw: bytes) -> InboundMessage:
    """Parse one raw RFC 5322 message. Raises ValueError only for input that is not an e-mail."""
    raw = bytes(raw)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message is larger than {MAX_MESSAGE_BYTES} bytes ({len(raw)} bytes)")
    if not raw.strip():
        raise ValueError("message is empty: expected the raw bytes of an e-mail")
    msg = BytesParser(policy=_POLICY).parsebytes(raw)
    if not msg.keys():
        raise ValueError("input is not an e-mail message: it has no header fields")
    if not isinstance(msg, EmailMessage):  # pragma: no cover - the policy always builds EmailMessage
        raise TypeError("unexpected message class")

    text_part = _body_part(msg, "plain")
    html_part = _body_part(msg, "html")
    html = _part_text(html_part) if html_part is not None else None
    text = _part_text(text_part) if text_part is not None else html_to_text(html) if html else ""
    ids = _message_ids(_header(msg, "message-id"))
    reply_ids = _message_ids(_header(msg, "in-reply-to"))
    senders = _addresses(msg, "from") or _addresses(msg, "sender")
    bounce_of, failed = _delivery_report(msg)
    return InboundMessage(
        message_id=ids[0] if ids else _stable_id(raw),
        in_reply_to=reply_ids[0] if reply_ids else None,
        references=tuple(dict.fromkeys(_message_ids(_header(msg, "references")))),
        sender=senders[0] if senders else ("", ""),
        to=tuple(_addresses(msg, "to")),
        cc=tuple(_addresses(msg, "cc")),
        subject=" ".join(_header(msg, "subject").split()),
        date=_date(msg),
        text=text,
        html=html,
        attachments=tuple(_attachments(msg, (text_part, html_part))),
        bounce_of=bounce_of,
        failed_recipients=failed,
    )


def _delivery_report(msg: EmailMessage) -> tuple[str | None, tuple[tuple[str, str, str], ...]]:
    """For a delivery status notification (RFC 3464: multipart/report; report-type=delivery-status), the
    Message-ID of the original message and the recipients whose delivery failed; else (None, ())."""
    if msg.get_content_type() != "multipart/report" or \
            str(msg.get_param("report-type", "")).lower() != "delivery-status":
        return None, ()
    original: str | None = None
    failed: list[tuple[str, str, str]] = []
    try:
        for part in msg.walk():
            kind = part.get_content_type()
            if kind in ("message/delivery-status", "message/global-delivery-status"):
                for block in part.get_payload() or []:
                    if not isinstance(block, Message) or str(block.get("Action", "")).strip().lower() != "failed":
                        continue
                    recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
                    address = recipient.split(";", 1)[-1].strip().strip("<>").lower()
                    if address:
                        failed.append((address[:320], str(block.get("Status", "")).strip()[:20],
                                       " ".join(str(block.get("Diagnostic-Code", "")).split())[:500]))
            elif kind in ("message/rfc822", "message/global") and original is None:
                inner = part.get_payload()
                inner = inner[0] if isinstance(inner, list) and inner else inner
                if isinstance(inner, Message):
                    ids = _message_ids(str(inner.get("Message-ID", "")))
                    original = ids[0] if ids else None
            elif kind in ("text/rfc822-headers", "message/global-headers") and original is None:
                match = re.search(r"^message-id:\s*(.+)$", _part_text(part), re.IGNORECASE | re.MULTILINE)
                ids = _message_ids(match.group(1)) if match else []
                original = ids[0] if ids else None
    except _HEADER_ERRORS:
        return None, ()
    return original, tuple(failed)


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of an HTML body, made with the stdlib HTML parser."""
    renderer = _TextRenderer()
    renderer.feed(html)
    renderer.close()
    return renderer.text()


class _TextRenderer(HTMLParser):
    """Collects the visible text of an HTML document: paragraphs apart, list items and rows on lines."""

    _PARAGRAPHS = frozenset({
        "address", "article", "aside", "blockquote", "div", "dl", "fieldset", "figure", "footer", "form",
        "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p", "section", "table",
        "ul",
    })
    _LINES = frozenset({"br", "dd", "dt", "figcaption", "li", "tr"})
    _HIDDEN = frozenset({"head", "script", "style", "template", "title", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "pre":
            self._pre += 1
            self._chunks.append("\n")
        elif tag in self._PARAGRAPHS or tag in self._LINES:
            self._chunks.append("\n- " if tag == "li" else "\n")
        elif tag in ("td", "th"):
            self._chunks.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not self._hidden:
                self._chunks.append(f"[{alt}]")
        elif tag == "a":
            href = dict(attrs).get("href")
            self._links.append(href if href and href.startswith(("http:", "https:", "mailto:")) else None)
            self._chunks.append("\x00")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            return
        self.handle_starttag(tag, attrs)
        if tag in self._HIDDEN:
            self._hidden -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._chunks.append("\n")
        elif tag in self._PARAGRAPHS:
            self._chunks.append("\n")
        elif tag == "a" and self._links:
            self._close_link(self._links.pop())

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self._chunks.append(data if self._pre else re.sub(r"\s+", " ", data))

    def _close_link(self, href: str | None) -> None:
        """Append the target after the link text, unless the text already shows it."""
        start = max(i for i, chunk in enumerate(self._chunks) if chunk == "\x00")
        label = "".join(self._chunks[start + 1:]).strip()
        self._chunks[start] = ""
        if href:
            target = href.removeprefix("mailto:")
            if target and target not in label:
                self._chunks.append(f" ({target})" if label else target)

    def text(self) -> str:
        """The collected text: trimmed lines, at most one blank line in a row."""
        joined = "".join(chunk for chunk in self._chunks if chunk != "\x00").replace("\xa0", " ")
        lines = [re.sub(r"[ \t]+", " ", line).strip() for line in joined.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode text in a declared charset, falling back to UTF-8, GB18030, then replacement characters."""
    label = (charset or "").strip().strip("\"'").lower()
    codec = "gb18030" if label in _GB_LABELS else label
    if codec:
        try:
            return data.decode(codec)
        except (ValueError, LookupError):  # undecodable bytes, or a label that is no codec name
            pass
    for fallback in ("utf-8", "gb18030"):
        try:
            return data.decode(fallback)
        except UnicodeDecodeError:
            continue
    try:
        if codec and codecs.lookup(codec):
            return data.decode(codec, errors="replace")
    except (ValueError, LookupError):
        pass
    return data.decode("utf-8", errors="replace")


def _clean(value: str) -> str:
    """Repair text still holding surrogate-escaped bytes (e.g. from an unknown charset label)."""
    if not _SURROGATE.search(value):
        return value
    return _decode_bytes(value.encode("utf-8", "surrogateescape"), None)


def _reencode_words(value: str) -> str:
    """Rewrite RFC 2047 encoded-words as UTF-8 ones, decoded with this module's charset rules.

    Adjacent words in one charset are decoded together, so a character split between two words
    survives, and GB2312 labels, unknown labels and mislabelled text are read as `_decode_bytes` does.
    """
    if "=?" not in value:
        return value
    pieces: list[str] = []
    position = 0
    run: list[re.Match[str]] = []

    def flush() -> None:
        if run:
            data = b"".join(_word_bytes(word) for word in run)
            text = _decode_bytes(data, run[0].group(1))
            pieces.append("=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?=")
            run.clear()

    for word in _ENCODED_WORD.finditer(value):
        between = value[position:word.start()]
        if run and (between.strip() or word.group(1).lower() != run[0].group(1).lower()):
            flush()
        if not run:
            pieces.append(between)
        run.append(word)
        position = word.end()
    flush()
    pieces.append(value[position:])
    return "".join(pieces)


def _word_bytes(word: re.Match[str]) -> bytes:
    """The bytes carried by one encoded-word, tolerating missing base64 padding."""
    payload = word.group(3).encode("utf-8")
    if word.group(2) in "qQ":
        return binascii.a2b_qp(payload, header=True)
    try:
        return base64.b64decode(payload + b"=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        return payload


def _header(msg: Message, name: str) -> str:
    """A header's decoded value, or "" when it is missing or cannot be read at all."""
    try:
        value = msg.get(name)
    except _HEADER_ERRORS:
        return ""
    return _clean(str(value)).strip() if value is not None else ""


def _decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words in text that the header registry did not parse (e.g. file names)."""
    if "=?" not in value:
        return value
    try:
        pieces = decode_header(value)
    except _HEADER_ERRORS:
        return value
    return "".join(
        _decode_bytes(piece, charset) if isinstance(piece, bytes) else piece for piece, charset in pieces
    )


def _message_ids(value: str) -> list[str]:
    """The message ids in a Message-ID, In-Reply-To or References value, without angle brackets."""
    ids = _MSG_ID.findall(value)
    if not ids and value.strip():
        ids = [token.strip("<>") for token in value.split() if "@" in token]
    return ids


def _stable_id(raw: bytes) -> str:
    """A message id derived from the content, stable whatever line endings the message travelled with."""
    digest = hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()
    return f"sha256-{digest}@bigledger.local"


def _addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs from every occurrence of an address header."""
    found: list[tuple[str, str]] = []
    try:
        headers = msg.get_all(name) or []
    except _HEADER_ERRORS:
        headers = []
    for header in headers:
        try:
            pairs = [(a.display_name, a.addr_spec) for a in getattr(header, "addresses", None) or ()]
        except _HEADER_ERRORS:
            pairs = []
        if not pairs:
            pairs = getaddresses([str(header)])
        for display_name, address in pairs:
            address = _clean(address).strip().strip("<>").lower()
            if address and address != "<>":
                found.append((" ".join(_clean(display_name).split()), address))
    return found


def _date(msg: Message) -> datetime | None:
    """The Date header in UTC; a date without a usable zone is taken as UTC."""
    try:
        header = msg.get("date")
        moment = getattr(header, "datetime", None)
        if moment is None and header is not None:
            moment = parsedate_to_datetime(str(header))
    except _HEADER_ERRORS:
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _body_part(msg: EmailMessage, subtype: str) -> MIMEPart | None:
    """The message's text/<subtype> body part, following multipart/alternative and related."""
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except _HEADER_ERRORS:
        return None
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    return part


def _part_text(part: Message) -> str:
    """A text part's content as str with "\\n" line endings."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    return _decode_bytes(data, part.get_content_charset()).replace("\r\n", "\n").replace("\r", "\n")


def _leaves(part: MIMEPart) -> Iterator[MIMEPart]:
    """Every non-multipart part in document order; an attached message counts as one part."""
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for child in part.iter_parts():
            yield from _leaves(child)
    else:
        yield part


def _attachments(msg: EmailMessage, bodies: tuple[Message | None, ...]) -> Iterator[Attachment]:
    """Files in the message: named parts, parts marked as attachments, and non-text parts."""
    number = 0
    for part in _leaves(msg):
        if any(part is body for body in bodies):
            continue
        filename = _filename(part)
        maintype = part.get_content_maintype()
        if maintype == "text" and not filename and not part.is_attachment():
            continue
        number += 1
        yield Attachment(
            filename=filename or f"attachment-{number}",
            content_type=part.get_content_type(),
            data=_part_bytes(part),
        )


def _filename(part: Message) -> str:
    """The decoded base name of a part's file name, or "" when it has none."""
    try:
        name = part.get_filename()
    except _HEADER_ERRORS:
        name = None
    if not name:
        return ""
    name = _decode_words(_clean(name))
    name = re.split(r"[\\/]", name)[-1]
    return "".join(ch for ch in name if ch.isprintable()).strip()


def _part_bytes(part: MIMEPart) -> bytes:
    """The decoded content of a part; an attached message as its raw bytes."""
    if part.is_multipart():
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message):
            try:
                return inner.as_bytes()
            except (*_HEADER_ERRORS, UnicodeError):
                return b""
        return b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""
