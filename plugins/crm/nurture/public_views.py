"""The public addresses in nurturing e-mails, reached without login at `/crm/t/…`:

* `GET /crm/t/o/<token>.gif` — the open pixel: always a 1×1 GIF; a genuine token made within
  BIGLEDGER_TRACKING_MAX_DAYS counts an open.
* `GET /crm/t/c/<token>` — a click: redirects to the link with that index stored for that step run (never to an
  address taken from the request); counted within BIGLEDGER_TRACKING_MAX_DAYS, still redirected after.
  A tampered or unknown token gets a plain page saying the link is not valid.
* `GET /crm/t/u/<token>` — the unsubscribe page with a confirm button (mail scanners open links, so a GET
  changes nothing); `POST` — unsubscribes at once: the button, or a mail client's RFC 8058 one-click POST
  (`List-Unsubscribe=One-Click`).

The signed token is the only authority these requests carry (there is no signed-in user whose session a
forged request could borrow), so the blueprint is exempt from the session's CSRF check. Every address is
rate-limited per client (BIGLEDGER_PUBLIC_RATE_LIMIT) and refuses bodies over a few kilobytes unread.
"""
from __future__ import annotations

import base64
import logging

from flask import Blueprint, current_app, redirect, render_template, request
from flask_babel import force_locale
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from bigledger_core.db import db
from bigledger_core.i18n import current_locale

from . import tracking

log = logging.getLogger(__name__)
LANGUAGES = ("zh", "en")
MAX_BODY = 4096  # bytes: a one-click POST is 26
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
public = Blueprint("crm_tracking", __name__, url_prefix=tracking.PREFIX)

INVALID = _l("This link is not valid. It may have been copied incompletely.")
GONE = _l("This link no longer leads anywhere.")
TITLE_LINK = _l("Link")
TITLE_UNSUBSCRIBE = _l("Unsubscribe")


def _language() -> str:
    asked = (request.args.get("lang") or "").strip().lower()[:5]
    return asked if asked in LANGUAGES else ("en" if current_locale() == "en" else "zh")


def _page(state: str, title, message, *, status: int = 200):
    """A small page in the visitor's language; what it shows comes from the code, never from the request."""
    language = _language()
    with force_locale(language):
        html = render_template("crm/nurture_public.html", language=language, state=state, title=str(title),
                               message=str(message))
    response = current_app.make_response((html, status))
    _private(response)
    response.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'self'; form-action 'self'; "
                                                   "base-uri 'none'; frame-ancestors 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _private(response):
    response.headers["Cache-Control"] = "no-store, private"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _gif(status: int = 200):
    response = current_app.make_response((GIF, status))
    response.mimetype = "image/gif"
    return _private(response)


@public.before_request
def _limit_body():
    """Refuse a body over 4 KB before anything reads it (and cap what is read)."""
    request.max_content_length = MAX_BODY
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise RequestEntityTooLarge()


@public.errorhandler(413)
def _too_large(_error):
    return _page("refused", TITLE_LINK, _l("What was sent is too large."), status=413)


@public.errorhandler(429)
def _too_many(_error):
    if request.endpoint == "crm_tracking.pixel":
        return _gif(429)
    return _page("refused", TITLE_LINK, _l("Too many requests from your address. Please try again in a minute."),
                 status=429)


@public.route("/o/<token>.gif", methods=["GET"])
def pixel(token: str):
    """The open pixel: a GIF whatever happens; counts an open for a genuine, recent token."""
    found = tracking.read_open_token(token)
    if found is not None and request.method == "GET" and tracking.counted(found[2]):
        try:
            tracking.record_open(db.session, found[0], found[1])
            db.session.commit()
        except SQLAlchemyError:
            db.session.rollback()
            log.exception("open of enrollment %s step %s not counted", found[0], found[1])
    return _gif()


@public.route("/c/<token>", methods=["GET"])
def click(token: str):
    """A click: to the link stored for the step run under the token's index; counted while recent."""
    found = tracking.read_click_token(token)
    if found is None:
        return _page("refused", TITLE_LINK, INVALID, status=404)
    enrollment_id, step_id, index, issued = found
    target = tracking.click_target(db.session, enrollment_id, step_id, index)
    if target is None:
        return _page("refused", TITLE_LINK, GONE, status=404)
    if request.method == "GET" and tracking.counted(issued):  # a HEAD only checks the link
        try:
            tracking.record_click(db.session, enrollment_id, step_id, index)
            db.session.commit()
        except SQLAlchemyError:
            db.session.rollback()
            log.exception("click of enrollment %s step %s not counted", enrollment_id, step_id)
    return _private(redirect(target, 302))


@public.route("/u/<token>", methods=["GET", "POST"])
def unsubscribe(token: str):
    """GET: the page with the confirm button. POST: unsubscribe now (the button, or RFC 8058 one-click)."""
    found = tracking.read_unsubscribe_token(token)
    address = tracking.unsubscribe_address(db.session, *found) if found else None
    if address is None:
        return _page("refused", TITLE_UNSUBSCRIBE, INVALID, status=404)
    if request.method != "POST":  # GET, and HEAD from link checkers, change nothing
        if tracking.suppressed(db.session, [address]):
            return _page("done", TITLE_UNSUBSCRIBE, _l("%(address)s is unsubscribed: no more of these e-mails "
                                                       "are sent to it.", address=tracking.mask(address)))
        return _page("confirm", TITLE_UNSUBSCRIBE, _l("Stop sending these e-mails to %(address)s?",
                                                      address=tracking.mask(address)))
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    try:
        tracking.unsubscribe(db.session, address, source="one-click" if one_click else "link",
                             enrollment_id=found[0], step_id=found[1])
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("unsubscribe of enrollment %s failed", found[0])
        return _page("refused", TITLE_UNSUBSCRIBE, _l("Unsubscribing did not work this time. Please try again "
                                                      "in a minute."), status=503)
    return _page("done", TITLE_UNSUBSCRIBE, _l("Done: %(address)s is unsubscribed and will receive no more of "
                                               "these e-mails.", address=tracking.mask(address)))


def _exempt_from_session_csrf() -> None:
    """The public pages prove themselves with their signed tokens, not with the session's CSRF token (a mail
    client's one-click POST has no session). Registered before Flask-WTF's check."""
    if request.blueprint == public.name:
        csrf = current_app.extensions.get("csrf")
        if csrf is not None:
            csrf.exempt(public)


def register(appbuilder) -> None:
    """Add the public open, click and unsubscribe addresses, rate-limited per client."""
    current_app.register_blueprint(public)
    current_app.before_request(_exempt_from_session_csrf)
    appbuilder.sm.limiter.limit(lambda: current_app.config["BIGLEDGER_PUBLIC_RATE_LIMIT"])(public)
