"""Language: the user's choice from the menu, else the browser's Accept-Language, else the default."""
from __future__ import annotations

import os
from pathlib import Path

from flask import current_app, has_request_context, request, session
from flask_babel import get_locale

# The catalogs of the host and the built-in modules (translations/ at the top of the project).
TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent / "translations"


def select_locale() -> str:
    """Locale selector for Flask-Babel."""
    languages = current_app.config["LANGUAGES"]
    default = current_app.config["BABEL_DEFAULT_LOCALE"]
    if not has_request_context():
        # Command line: follow the terminal's language when we have it.
        lang = (os.environ.get("LC_ALL") or os.environ.get("LANG") or "")[:2].lower()
        return lang if lang in languages else default
    asked = request.args.get("_l_")
    if asked in languages:
        return asked
    chosen = session.get("locale")
    if chosen in languages:
        return chosen
    best = request.accept_languages.best_match(list(languages)) or _prefix_match(languages)
    return best or default


def _prefix_match(languages) -> str | None:
    # "zh-CN", "zh-Hans-CN", "en-GB" match our "zh" and "en".
    for value, _quality in request.accept_languages:
        prefix = value.split("-")[0].split("_")[0].lower()
        if prefix in languages:
            return prefix
    return None


def current_locale() -> str:
    """Language in use now ('zh' or 'en')."""
    locale = get_locale()
    return locale.language if locale is not None else "en"
