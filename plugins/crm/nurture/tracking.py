"""Open and click tracking with signed tokens, the unsubscribe link and the suppression list.

Interface used by the scheduler (services.py) — keep these names and signatures:

    address_hash(address: str) -> str
    unsubscribe_url(*, enrollment_id: int | None = None, step_id: int | None = None,
                    address: str | None = None) -> str
    finish(html: str, text: str, *, enrollment_id: int, step_id: int, unsubscribe_url: str,
           language: str) -> tuple[str, str, list[str]]      # (html, text, links)
    suppressed(session, addresses: Iterable[str]) -> set[str]
    suppress(session, address: str, *, reason: str, source: str, lead_id: int | None = None,
             by_id: int | None = None, note: str | None = None) -> Suppression

and by the public pages: `read_open_token`, `read_click_token`, `read_unsubscribe_token`, `record_open`,
`record_click`, `click_target`, `unsubscribe_address`, `unsubscribe`.

Tokens are signed with the application's secret key (itsdangerous), one salt per purpose, so a token made for
one purpose is refused for another. An open or click token carries only (enrollment, step[, link index]) and
the time it was made; the address a click goes to is looked up in the step run's stored links, never taken
from the request. Unsubscribe tokens do not expire.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import html as html_lib
import logging
import re
from collections.abc import Iterable

from flask import current_app
from flask_babel import force_locale, gettext
from itsdangerous import BadData, Signer, TimestampSigner
from itsdangerous.encoding import base64_encode, int_to_bytes, want_bytes
from markupsafe import escape
from sqlalchemy import case, literal, select, update
from sqlalchemy.orm import Session

from bigledger_core.db import insert_rows, utcnow
from bigledger_core.errors import BigLedgerError
from bigledger_core.models import Message

from ..leads.models import Lead
from ..normalize import address_hash
from .models import (
    SUPPRESSION_REASONS,
    ConsentRecord,
    Enrollment,
    EnrollmentStep,
    Suppression,
)

log = logging.getLogger(__name__)

PREFIX = "/crm/t"  # where the public blueprint (public_views.py) answers
OPEN_SALT, CLICK_SALT, UNSUBSCRIBE_SALT = "bigledger.nurture.open", "bigledger.nurture.click", \
    "bigledger.nurture.unsubscribe"
MAX_TOKEN = 600  # characters; anything longer is not one of ours
CHUNK = 2000  # addresses per query when checking the suppression list
# what an exit from the sequences is called for each reason an address is suppressed
EXIT_REASON = {"unsubscribed": "unsubscribed", "complaint": "unsubscribed", "bounced": "bounced",
               "manual": "manual", "erased": "erased"}


class TrackingError(BigLedgerError):
    """A suppression or unsubscribe that cannot be done (bad address, unknown reason); says which."""


# -- addresses --------------------------------------------------------------------------------------------

def normalized(address: str) -> str:
    """The form an address is compared and hashed in: trimmed, lower case."""
    return (address or "").strip().lower()


def mask(address: str) -> str:
    """`w***@example.com`: enough for a person to recognize their address on a public page."""
    local, _, domain = (address or "").partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


# -- tokens -----------------------------------------------------------------------------------------------

class _CachedKey:
    """Derive the signing key and key the HMAC once: the scheduler signs several links per e-mail, 100,000
    e-mails a run. Signatures are the same as itsdangerous makes (and checks)."""

    def get_signature(self, value) -> bytes:
        mac = self.__dict__.get("_mac")
        if mac is None:
            mac = self._mac = hmac.new(self.derive_key(), digestmod=self.digest_method)
        mac = mac.copy()
        mac.update(want_bytes(value))
        return base64_encode(mac.digest())


class _TimedSigner(_CachedKey, TimestampSigner):
    def stamp(self) -> str:
        """Now, as the signer writes it; one per e-mail serves all its links."""
        return base64_encode(int_to_bytes(self.get_timestamp())).decode("ascii")

    def sign_stamped(self, value: str, stamp: str) -> str:
        """The token `TimestampSigner.sign(value)` makes at the time `stamp`."""
        signed = f"{value}.{stamp}"
        return f"{signed}.{self.get_signature(signed).decode('ascii')}"


class _PlainSigner(_CachedKey, Signer):
    pass


_signers: dict[tuple[str, str], Signer] = {}


def _signer(salt: str, kind: type[Signer] = _TimedSigner) -> Signer:
    secret = current_app.config["SECRET_KEY"]
    signer = _signers.get((secret, salt))
    if signer is None:
        signer = _signers[(secret, salt)] = kind(secret, salt=salt, digest_method=hashlib.sha256)
    return signer


def _base() -> str:
    return str(current_app.config["BIGLEDGER_PUBLIC_URL"]).rstrip("/") + PREFIX


def _ints(value: bytes, count: int) -> tuple[int, ...] | None:
    parts = value.split(b".")
    if len(parts) != count or not all(p.isdigit() and len(p) < 12 for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _read(token: str, salt: str, count: int) -> tuple[tuple[int, ...], dt.datetime] | None:
    if not token or len(token) > MAX_TOKEN:
        return None
    try:
        value, issued = _signer(salt).unsign(token, return_timestamp=True)
    except (BadData, ValueError, TypeError):
        return None
    ids = _ints(value, count)
    return (ids, issued) if ids is not None else None


def read_open_token(token: str) -> tuple[int, int, dt.datetime] | None:
    """(enrollment id, step id, when the e-mail was made) of a genuine open token, else None."""
    found = _read(token, OPEN_SALT, 2)
    return (*found[0], found[1]) if found else None


def read_click_token(token: str) -> tuple[int, int, int, dt.datetime] | None:
    """(enrollment id, step id, link index, when the e-mail was made) of a genuine click token, else None."""
    found = _read(token, CLICK_SALT, 3)
    return (*found[0], found[1]) if found else None


def counted(issued: dt.datetime) -> bool:
    """Whether an open or click of an e-mail made at `issued` still counts (BIGLEDGER_TRACKING_MAX_DAYS)."""
    days = int(current_app.config["BIGLEDGER_TRACKING_MAX_DAYS"])
    return utcnow() - issued <= dt.timedelta(days=days)


def unsubscribe_url(*, enrollment_id: int | None = None, step_id: int | None = None,
                    address: str | None = None) -> str:
    """The absolute unsubscribe address (under BIGLEDGER_PUBLIC_URL) for a step run and/or an address; it
    serves the page with the confirm button and RFC 8058 one-click POSTs. It does not expire."""
    encoded = base64.urlsafe_b64encode(normalized(address).encode("utf-8")).rstrip(b"=").decode("ascii") \
        if address else ""
    value = f"{enrollment_id if enrollment_id is not None else ''}.{step_id if step_id is not None else ''}.{encoded}"
    return f"{_base()}/u/{_signer(UNSUBSCRIBE_SALT, _PlainSigner).sign(value).decode('ascii')}"


def read_unsubscribe_token(token: str) -> tuple[int | None, int | None, str | None] | None:
    """(enrollment id, step id, address) of a genuine unsubscribe token, else None."""
    if not token or len(token) > MAX_TOKEN:
        return None
    try:
        value = _signer(UNSUBSCRIBE_SALT, _PlainSigner).unsign(token).decode("ascii")
        enrollment, step, encoded = value.split(".")
        address = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8") if encoded else None
        ids = [int(v) if v else None for v in (enrollment, step)]
    except (BadData, ValueError, TypeError, UnicodeDecodeError):
        return None
    if not (ids[0] or address):
        return None
    return ids[0], ids[1], address


# -- finishing an e-mail ----------------------------------------------------------------------------------

# `<a … href="…">` with the value in double, single or no quotes; `data-href` and the like do not match
_ANCHOR = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_footers: dict[str, tuple[str, str]] = {}
URL_MARK = "\x00url\x00"


def _footer(language: str) -> tuple[str, str]:
    """The visible unsubscribe footer (HTML, text; URL_MARK where the address goes) in `language`."""
    language = "en" if (language or "").lower().startswith("en") else "zh"
    found = _footers.get(language)
    if found is None:
        with force_locale(language):
            question = gettext("Don't want to receive these e-mails any more?")
            action = gettext("Unsubscribe")
        html_part = (f'<p style="margin:24px 0 0;font-size:12px;color:#777">{escape(question)} '
                     f'<a href="{URL_MARK}" style="color:#777">{escape(action)}</a></p>')
        found = _footers[language] = (html_part, f"\n\n--\n{question} {action}: {URL_MARK}\n")
    return found


def finish(html: str, text: str, *, enrollment_id: int, step_id: int, unsubscribe_url: str,
           language: str) -> tuple[str, str, list[str]]:
    """Make a rendered e-mail trackable: every http(s) link in the HTML goes through a click address whose
    token names (enrollment, step, link index) — the original addresses are returned as `links`, in index
    order, for the step run to keep; mailto:, tel:, #anchors and the unsubscribe link are left alone. Adds
    the 1×1 open pixel, and the visible unsubscribe footer (HTML and text) when the template did not show the
    unsubscribe link. Returns (html, text, links)."""
    links: list[str] = []
    index: dict[str, int] = {}
    base = _base()
    signer = _signer(CLICK_SALT)
    stamp = signer.stamp()
    prefix = f"{enrollment_id}.{step_id}."

    def rewrite(match: re.Match) -> str:
        value = match.group(2)
        if value is None:
            value = match.group(3)
            if value is None:
                value = match.group(4)
        url = (html_lib.unescape(value) if "&" in value else value).strip()
        scheme = url[:8].lower()
        if not scheme.startswith(("https://", "http://")) or url == unsubscribe_url:
            return match.group(0)
        position = index.get(url)
        if position is None:
            position = index[url] = len(links)
            links.append(url)
        token = signer.sign_stamped(f"{prefix}{position}", stamp)
        return f'{match.group(1)}"{base}/c/{token}"'

    html = html or ""
    if "href" in html:
        html = _ANCHOR.sub(rewrite, html)
    pixel_token = _signer(OPEN_SALT).sign_stamped(f"{enrollment_id}.{step_id}", stamp)
    extra = (f'<img src="{base}/o/{pixel_token}.gif" width="1" height="1" alt="" '
             f'style="display:block;width:1px;height:1px;border:0">')
    footer_html, footer_text = _footer(language)
    safe_url = str(escape(unsubscribe_url))
    if unsubscribe_url not in html and safe_url not in html:
        extra = footer_html.replace(URL_MARK, safe_url) + extra
    end = html.rfind("</body>")
    if end < 0:
        found = _BODY_END.search(html)
        end = found.start() if found else -1
    html = html[:end] + extra + html[end:] if end >= 0 else html + extra
    text = text or ""
    if unsubscribe_url not in text:
        text = text.rstrip("\n") + footer_text.replace(URL_MARK, unsubscribe_url)
    return html, text, links


# -- the suppression list ---------------------------------------------------------------------------------

def suppressed(session: Session, addresses: Iterable[str]) -> set[str]:
    """Which of `addresses` (as given) are on the suppression list: one query per 2,000, by hash."""
    by_hash: dict[str, list[str]] = {}
    for address in addresses:
        if address:
            by_hash.setdefault(address_hash(address), []).append(address)
    found: set[str] = set()
    hashes = list(by_hash)
    for start in range(0, len(hashes), CHUNK):
        for digest in session.scalars(select(Suppression.address_hash)
                                      .where(Suppression.address_hash.in_(hashes[start:start + CHUNK]))):
            found.update(by_hash[digest])
    return found


def _insert_suppression(session: Session, values: dict) -> bool:
    """Insert the row unless its hash is there already (also when two requests race). True when inserted."""
    return bool(insert_rows(session, Suppression, [values], conflict=["address_hash"], returning=("id",)))


def suppress_once(session: Session, address: str, *, reason: str, source: str, lead_id: int | None = None,
                  by_id: int | None = None, note: str | None = None) -> tuple[Suppression, bool]:
    """Put an address on the suppression list unless it is there (race-free), without ending enrollments.
    Returns (the row, whether it was added now). Raises TrackingError for a bad address or reason."""
    address = normalized(address)
    if "@" not in address or len(address) > 320:
        raise TrackingError(gettext("%(value)s is not a valid e-mail address", value=address))
    if reason not in SUPPRESSION_REASONS:
        raise TrackingError(gettext("reason: must be one of %(values)s", values=", ".join(SUPPRESSION_REASONS)))
    digest = address_hash(address)
    created = _insert_suppression(session, {
        "address_hash": digest, "address": address, "reason": reason,
        "source": (source or "")[:100] or None, "note": (note or "").strip()[:500] or None, "lead_id": lead_id,
        "created_by_id": by_id, "created_at": utcnow()})
    row = session.scalars(select(Suppression).where(Suppression.address_hash == digest)
                          .execution_options(populate_existing=True)).one()
    return row, created


def _exit(session: Session, address: str, reason: str) -> int:
    from .services import exit_for_address

    return exit_for_address(session, normalized(address), EXIT_REASON.get(reason, "manual"))


def suppress(session: Session, address: str, *, reason: str, source: str, lead_id: int | None = None,
             by_id: int | None = None, note: str | None = None) -> Suppression:
    """Put an address on the suppression list (once: an address already there keeps its first record) and
    end the running enrollments of leads with that address. Raises TrackingError for a bad address or
    reason. Does not commit."""
    row, _created = suppress_once(session, address, reason=reason, source=source, lead_id=lead_id, by_id=by_id,
                              note=note)
    _exit(session, address, reason)
    return row


def unsuppress(session: Session, address: str) -> bool:
    """Take an address off the suppression list (allow e-mail to it again). True when it was there."""
    row = session.scalar(select(Suppression).where(Suppression.address_hash == address_hash(address)))
    if row is None:
        return False
    session.delete(row)
    log.info("suppression %s removed (address allowed again)", row.address_hash[:12])
    return True


# -- unsubscribing ----------------------------------------------------------------------------------------

def unsubscribe_address(session: Session, enrollment_id: int | None, step_id: int | None,
                        address: str | None) -> str | None:
    """The address an unsubscribe token stands for: the one in the token, else the one the step run's
    message went to, else the enrolled lead's."""
    if address:
        return normalized(address)
    if enrollment_id is None:
        return None
    if step_id is not None:
        sent = session.scalar(select(Message.to_address).join(EnrollmentStep, EnrollmentStep.message_id == Message.id)
                              .where(EnrollmentStep.enrollment_id == enrollment_id,
                                     EnrollmentStep.step_id == step_id))
        if sent and "@" in sent:
            return normalized(sent)
    email = session.scalar(select(Lead.email).join(Enrollment, Enrollment.lead_id == Lead.id)
                           .where(Enrollment.id == enrollment_id))
    return normalized(email) if email else None


def unsubscribe(session: Session, address: str, *, source: str, enrollment_id: int | None = None,
                step_id: int | None = None) -> Suppression:
    """Unsubscribe an address now: on the suppression list (reason "unsubscribed"), consent withdrawn on
    every lead with that address (and a consent record of it), the step run marked unsubscribed, running
    enrollments ended. Doing it again changes nothing. Does not commit."""
    address = normalized(address)
    lead_id = session.scalar(select(Enrollment.lead_id).where(Enrollment.id == enrollment_id)) \
        if enrollment_id is not None else None
    row, created = suppress_once(session, address, reason="unsubscribed", source=source, lead_id=lead_id)
    withdrawn = session.execute(update(Lead).where(Lead.email == address, Lead.consent.is_(True))
                                .values(consent=False, version=Lead.version + 1)
                                .execution_options(synchronize_session=False)).rowcount
    if created or withdrawn:
        session.add(ConsentRecord(address_hash=row.address_hash, lead_id=lead_id or row.lead_id,
                                  action="withdrawn", source=source[:100], at=utcnow()))
    if enrollment_id is not None and step_id is not None:
        session.execute(update(EnrollmentStep).where(
            EnrollmentStep.enrollment_id == enrollment_id, EnrollmentStep.step_id == step_id,
            EnrollmentStep.unsubscribed_at.is_(None)).values(unsubscribed_at=utcnow()))
    _exit(session, address, "unsubscribed")
    return row


# -- opens and clicks -------------------------------------------------------------------------------------

def _first(column, now: dt.datetime):
    return case((column.is_(None), literal(now, column.type)), else_=column)


def _lead_for_update(session: Session, enrollment_id: int) -> Lead | None:
    lead_id = session.scalar(select(Enrollment.lead_id).where(Enrollment.id == enrollment_id))
    if lead_id is None:
        return None
    # locked and fresh: two opens at once add up instead of failing the optimistic lock
    return session.get(Lead, lead_id, with_for_update=True, populate_existing=True)


def _facts(session: Session, enrollment_id: int, *facts: str) -> None:
    from ..leads.services import record_fact

    lead = _lead_for_update(session, enrollment_id)
    if lead is not None:
        for fact in facts:
            record_fact(session, lead, fact, source="tracking")


def record_open(session: Session, enrollment_id: int, step_id: int) -> bool:
    """Count an open of the step run's e-mail (opens, first opened_at) and on the lead (`email_opens`, which
    the scoring rule 邮件开启 reads; the lead is rescored). False when there is no such step run. Does not
    commit."""
    done = session.execute(update(EnrollmentStep).where(
        EnrollmentStep.enrollment_id == enrollment_id, EnrollmentStep.step_id == step_id).values(
        opens=EnrollmentStep.opens + 1, opened_at=_first(EnrollmentStep.opened_at, utcnow()))
        .execution_options(synchronize_session=False)).rowcount
    if not done:
        return False
    _facts(session, enrollment_id, "email_open")
    return True


def click_target(session: Session, enrollment_id: int, step_id: int, index: int) -> str | None:
    """The address link number `index` of the step run's e-mail pointed to (only http(s)), else None."""
    links = session.scalar(select(EnrollmentStep.links).where(EnrollmentStep.enrollment_id == enrollment_id,
                                                              EnrollmentStep.step_id == step_id))
    if not isinstance(links, list) or not 0 <= index < len(links):
        return None
    target = links[index]
    if not isinstance(target, str) or not target[:8].lower().startswith(("https://", "http://")):
        return None
    return target


def record_click(session: Session, enrollment_id: int, step_id: int, index: int) -> str | None:
    """Count a click on link `index` of the step run's e-mail (clicks, first clicked_at; the lead's
    `email_clicks`, rescored) and return the link's address; None (nothing counted) for an unknown link.
    A click on an e-mail whose open was not seen (images blocked) counts as its open too. Does not commit."""
    target = click_target(session, enrollment_id, step_id, index)
    if target is None:
        return None
    now = utcnow()
    where = (EnrollmentStep.enrollment_id == enrollment_id, EnrollmentStep.step_id == step_id)
    session.execute(update(EnrollmentStep).where(*where).values(
        clicks=EnrollmentStep.clicks + 1, clicked_at=_first(EnrollmentStep.clicked_at, now))
        .execution_options(synchronize_session=False))
    implied_open = session.execute(update(EnrollmentStep).where(*where, EnrollmentStep.opens == 0).values(
        opens=1, opened_at=_first(EnrollmentStep.opened_at, now))
        .execution_options(synchronize_session=False)).rowcount
    _facts(session, enrollment_id, "email_click", *(["email_open"] if implied_open else []))
    return target

