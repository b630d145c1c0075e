"""Settings: every one is read from an environment variable, documented in one place.

`SETTINGS` is the single list; the README's configuration table is checked against it by a test.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError

# Used only when BIGLEDGER_SECRET_KEY is unset; refused outside development.
DEFAULT_SECRET_KEY = "bigledger-development-only-secret-key"


@dataclass(frozen=True)
class Setting:
    env: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _list(value: str) -> list[str]:
    return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]


SETTINGS: list[Setting] = [
    Setting("BIGLEDGER_ENV", "production",
            "`development` or `production`. Production refuses the default secret key."),
    Setting("BIGLEDGER_INSTANCE_PATH", None,
            "Instance folder for the SQLite database, files and logs (`logs/bigledger.log`); default `./instance`."),
    Setting("BIGLEDGER_DATABASE_URL", None,
            "SQLAlchemy URL of the database, e.g. `postgresql+psycopg://user@host/db` "
            "(default: SQLite file `bigledger.db` in the instance folder)."),
    Setting("BIGLEDGER_SECRET_KEY", None, "Secret used to sign sessions, CSRF and JWT tokens."),
    Setting("BIGLEDGER_MODULES", None,
            "Comma-separated modules this deployment offers (default: every installed module). "
            "Admins switch them on and off on the Modules screen.", _list),
    Setting("BIGLEDGER_STRICT_PLUGINS", True,
            "`1` (default) refuses to start when a plugin is broken; `0` starts without it and "
            "shows it as failed on the Modules screen.", _bool),
    Setting("BIGLEDGER_EXTRA_PLUGINS", [],
            "Comma-separated import paths of plugin modules to load without packaging them.", _list),
    Setting("BIGLEDGER_ADMIN_PASSWORD", None,
            "Password for the admin created by `make run` (otherwise one is generated and printed once)."),
    Setting("BIGLEDGER_DEMO_PASSWORD", None,
            "Password of the demo users made by `bigledger demo` (otherwise generated and printed once)."),
    Setting("BIGLEDGER_DEFAULT_LOCALE", "zh", "Language used when the browser asks for none we have."),
    Setting("BIGLEDGER_PHONE_REGION", "CN",
            "Region of phone numbers written without a country code (ISO 3166 code, e.g. CN, MY, SG)."),
    Setting("BIGLEDGER_DOCUMENT_MAX_MB", 20, "Largest document that may be uploaded, in MB.", int),
    Setting("BIGLEDGER_DOCUMENT_TYPES",
            ["pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "txt", "csv", "rtf", "png", "jpg",
             "jpeg", "gif", "webp", "zip", "eml", "msg"],
            "Comma-separated file extensions documents may have.", _list),
    Setting("BIGLEDGER_LIST_COUNT_CAP", 1000,
            "Lists and the REST API count matching records up to this many; past it they show \"more than\" the "
            "cap (the API answers `count_capped: true`). `0` counts every row.", int),
    Setting("BIGLEDGER_SEARCH_TIMEOUT", 2.0,
            "Seconds one search statement may run on PostgreSQL before it is stopped and the user is asked to "
            "search more precisely (`0`: no limit).", float),
    Setting("BIGLEDGER_LEAD_DEFAULT_TEAM", None,
            "Team (id, Chinese or English name) whose round robin receives new leads that no assignment rule "
            "routes and that have no team of their own (default: such leads stay unassigned)."),
    Setting("BIGLEDGER_LOGIN_RATE_LIMIT", "10 per 20 second", "Login attempts allowed per client address."),
    Setting("BIGLEDGER_RATELIMIT_STORAGE_URI", "memory://",
            "Where rate-limit counters live; use `redis://…` when several web workers run."),
    # -- lead capture
    Setting("BIGLEDGER_FORM_RATE_LIMIT", "20 per minute",
            "Web form submissions allowed per client address (all public lead forms together)."),
    Setting("BIGLEDGER_FORM_MAX_KB", 64, "Largest web form submission read, in KB; a bigger one is refused (413).",
            int),
    Setting("BIGLEDGER_FORM_MIN_SECONDS", 2.0,
            "Seconds a web form must be open before it may be sent (faster is refused as scripted).", float),
    Setting("BIGLEDGER_FORM_MAX_HOURS", 24.0, "Hours a web form stays valid after it was shown.", float),
    Setting("BIGLEDGER_LEAD_INBOX", [],
            "Comma-separated e-mail addresses whose incoming mail becomes leads (none when unset).", _list),
    # -- events and scheduler
    Setting("BIGLEDGER_EVENT_FIRST_ATTEMPT", "background",
            "How the process that commits an event tries to deliver it: `background` (a thread, right after "
            "commit), `inline` (before `commit()` returns) or `off` (leave it to `bigledger scheduler`).",
            lambda v: _choice(v, "BIGLEDGER_EVENT_FIRST_ATTEMPT", {"background", "inline", "off"})),
    Setting("BIGLEDGER_EVENT_TIMEOUT", 30.0, "Seconds a subscriber may take before its delivery counts as failed.",
            float),
    Setting("BIGLEDGER_EVENT_MAX_ATTEMPTS", 8, "Delivery attempts before a delivery is marked dead.", int),
    Setting("BIGLEDGER_EVENT_RETRY_SECONDS", 30.0,
            "First retry delay; it doubles with every failed attempt (at most 6 hours).", float),
    Setting("BIGLEDGER_EVENT_RETENTION_DAYS", 30,
            "Days a fully delivered event (and finished job runs) are kept before the nightly purge.", int),
    Setting("BIGLEDGER_SCHEDULER_POLL_SECONDS", 1.0,
            "How often a standby scheduler tries to become the active one, and the active one checks in.", float),
    # -- outgoing mail
    Setting("BIGLEDGER_MAIL_PROVIDER", None,
            "`smtp`, `file` (writes `.eml` files under `instance/mail/outbox`) or a provider from a plugin. "
            "Development defaults to `file`; production refuses to start until it is set."),
    Setting("BIGLEDGER_MAIL_FROM", "BigLedger CRM <noreply@example.com>",
            "Sender of outgoing e-mail (set it to an address of your domain)."),
    Setting("BIGLEDGER_SMTP_HOST", "localhost", "SMTP server."),
    Setting("BIGLEDGER_SMTP_PORT", 25, "SMTP port (587 for STARTTLS, 465 for TLS).", int),
    Setting("BIGLEDGER_SMTP_SECURITY", "none", "`none`, `starttls` or `tls`.",
            lambda v: _choice(v, "BIGLEDGER_SMTP_SECURITY", {"none", "starttls", "tls"})),
    Setting("BIGLEDGER_SMTP_USERNAME", None, "SMTP user name (no authentication when unset)."),
    Setting("BIGLEDGER_SMTP_PASSWORD", None, "SMTP password."),
    Setting("BIGLEDGER_SMTP_TIMEOUT", 30.0, "Seconds to wait for the SMTP server.", float),
    Setting("BIGLEDGER_SMTP_CA_FILE", None,
            "PEM file of the certificate authorities to trust for SMTP TLS (e.g. an internal CA); "
            "default: the system's."),
    Setting("BIGLEDGER_MAIL_RATE_PER_MINUTE", 60, "Messages a provider may send per minute.", int),
    Setting("BIGLEDGER_MAIL_MAX_ATTEMPTS", 8, "Send attempts before a message is marked failed.", int),
    # -- incoming mail
    Setting("BIGLEDGER_IMAP_HOST", None, "IMAP server to poll for incoming mail (polling is off when unset)."),
    Setting("BIGLEDGER_IMAP_PORT", 993, "IMAP port (143 for STARTTLS or plain).", int),
    Setting("BIGLEDGER_IMAP_SECURITY", "ssl", "`ssl`, `starttls` or `none`.",
            lambda v: _choice(v, "BIGLEDGER_IMAP_SECURITY", {"ssl", "starttls", "none"})),
    Setting("BIGLEDGER_IMAP_USERNAME", None, "IMAP user name."),
    Setting("BIGLEDGER_IMAP_PASSWORD", None, "IMAP password."),
    Setting("BIGLEDGER_IMAP_MAILBOX", "INBOX", "Mailbox (folder) to read."),
    Setting("BIGLEDGER_IMAP_POLL_SECONDS", 60, "Seconds between two IMAP polls.", int),
    Setting("BIGLEDGER_IMAP_MARK_SEEN", True, "`1` marks processed messages as read on the server.", _bool),
    # -- nurturing
    Setting("BIGLEDGER_PUBLIC_URL", "http://127.0.0.1:8080",
            "Address at which recipients reach this server (e.g. `https://crm.example.com`): the base of "
            "unsubscribe, open and click links in e-mails."),
    Setting("BIGLEDGER_NURTURE_TIMEZONE", "Asia/Shanghai",
            "Time zone of a lead whose own (or phone number's) time zone is unknown."),
    Setting("BIGLEDGER_NURTURE_QUIET_HOURS", "21:00-08:00",
            "Recipient's local hours in which sequences send no e-mail (`HH:MM-HH:MM`; empty: none). "
            "A sequence may set its own."),
    Setting("BIGLEDGER_NURTURE_HOLIDAYS", [],
            "Comma-separated dates (`2027-02-16`) that are not business days for sequence waits.", _list),
    Setting("BIGLEDGER_NURTURE_WORKDAYS", [],
            "Comma-separated weekend dates that are business days (调休 make-up working days).", _list),
    Setting("BIGLEDGER_NURTURE_REQUIRE_CONSENT", False,
            "`1` sends marketing e-mail only to leads who gave consent.", _bool),
    Setting("BIGLEDGER_NURTURE_BATCH", 1000, "Enrollments a scheduler run handles per transaction.", int),
    Setting("BIGLEDGER_TRACKING_MAX_DAYS", 365,
            "Days an open or click link in an e-mail is counted; an older one still redirects.", int),
    Setting("BIGLEDGER_PUBLIC_RATE_LIMIT", "120 per minute",
            "Requests per client address to the public tracking and unsubscribe pages."),
    # -- POS bridge
    Setting("BIGLEDGER_POS_CREATE_CONTACTS", True,
            "`1` (default) creates a contact for a POS sale whose loyalty card, phone and e-mail match none; `0` "
            "keeps such sales unmatched.", _bool),
    Setting("BIGLEDGER_POS_CURRENCY", "CNY",
            "Currency (ISO 4217) of POS sales posted without one, and of segment conditions on store spending."),
    # -- finance bridge
    Setting("BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS", 30,
            "Payment terms (days, 0–365) of the draft invoice for a won deal, unless the company has its own on "
            "Finance → Credit holds and terms.",
            lambda value: _whole("BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS", value, 0, 365)),
]


def _whole(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {number}")
    return number


def _choice(value: str, name: str, allowed: set[str]) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(sorted(allowed))}, not {value!r}")
    return value


RUNTIME_SETTINGS = [item.env for item in SETTINGS
                    if item.env.startswith(("BIGLEDGER_EVENT_", "BIGLEDGER_SCHEDULER_", "BIGLEDGER_MAIL_",
                                            "BIGLEDGER_SMTP_", "BIGLEDGER_IMAP_", "BIGLEDGER_NURTURE_",
                                            "BIGLEDGER_TRACKING_", "BIGLEDGER_PUBLIC_"))]


def setting(env: str) -> Any:
    """Value of one setting from the environment, parsed, or its default."""
    for item in SETTINGS:
        if item.env == env:
            raw = os.environ.get(env)
            if raw is None or raw == "":
                return item.default
            return item.parse(raw)
    raise KeyError(env)


def instance_path() -> Path:
    """The instance folder (database, files, logs), created if missing."""
    path = Path(setting("BIGLEDGER_INSTANCE_PATH") or Path.cwd() / "instance").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url(instance: Path) -> str:
    """The database URL, validated; `postgres://` and plain `postgresql://` use psycopg 3."""
    raw = setting("BIGLEDGER_DATABASE_URL")
    if not raw:
        return f"sqlite:///{instance / 'bigledger.db'}"
    return normalize_database_url(raw, "BIGLEDGER_DATABASE_URL")


def normalize_database_url(raw: str, source: str) -> str:
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(f"{source} is not a valid database URL: {raw!r} "
                          "(expected e.g. postgresql+psycopg://user@host:5432/db)") from None
    if url.drivername in {"postgres", "postgresql"}:
        url = url.set(drivername="postgresql+psycopg")
    if not url.drivername.startswith(("postgresql", "sqlite")):
        raise ConfigError(f"{source}: unsupported database {url.drivername!r} "
                          "(use postgresql+psycopg or sqlite)")
    return url.render_as_string(hide_password=False)


def build_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Flask/FAB configuration from the environment, then `overrides` on top."""
    overrides = dict(overrides or {})
    env = overrides.pop("BIGLEDGER_ENV", None) or setting("BIGLEDGER_ENV")
    if env not in {"development", "production"}:
        raise ConfigError(f"BIGLEDGER_ENV must be 'development' or 'production', not {env!r}")
    instance = Path(overrides.pop("INSTANCE_PATH", None) or instance_path())
    instance.mkdir(parents=True, exist_ok=True)
    url = overrides.pop("SQLALCHEMY_DATABASE_URI", None)
    url = normalize_database_url(url, "SQLALCHEMY_DATABASE_URI") if url else database_url(instance)
    secret = overrides.pop("SECRET_KEY", None) or setting("BIGLEDGER_SECRET_KEY") or DEFAULT_SECRET_KEY
    if env != "development" and secret == DEFAULT_SECRET_KEY:
        raise ConfigError("BIGLEDGER_SECRET_KEY is not set: refusing to start in production with the "
                          "default secret key (set BIGLEDGER_ENV=development for a local trial)")
    mail_provider = overrides.pop("BIGLEDGER_MAIL_PROVIDER", None) or setting("BIGLEDGER_MAIL_PROVIDER")
    if not mail_provider:
        if env != "development":
            raise ConfigError("BIGLEDGER_MAIL_PROVIDER is not set: choose `smtp` (with BIGLEDGER_SMTP_HOST…) or, "
                              "to keep mail in files under the instance folder, `file`")
        mail_provider = "file"
    config: dict[str, Any] = {
        "BIGLEDGER_ENV": env,
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": url,
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "APP_NAME": "BigLedger",
        "APP_ICON": "",
        "BIGLEDGER_MODULES": setting("BIGLEDGER_MODULES"),
        "BIGLEDGER_STRICT_PLUGINS": setting("BIGLEDGER_STRICT_PLUGINS"),
        "BIGLEDGER_PHONE_REGION": setting("BIGLEDGER_PHONE_REGION").upper(),
        "BIGLEDGER_DOCUMENT_MAX_MB": setting("BIGLEDGER_DOCUMENT_MAX_MB"),
        "BIGLEDGER_DOCUMENT_TYPES": setting("BIGLEDGER_DOCUMENT_TYPES"),
        "BIGLEDGER_EXTRA_PLUGINS": setting("BIGLEDGER_EXTRA_PLUGINS"),
        "BIGLEDGER_LIST_COUNT_CAP": setting("BIGLEDGER_LIST_COUNT_CAP"),
        "BIGLEDGER_SEARCH_TIMEOUT": setting("BIGLEDGER_SEARCH_TIMEOUT"),
        "BIGLEDGER_LEAD_DEFAULT_TEAM": setting("BIGLEDGER_LEAD_DEFAULT_TEAM"),
        # Schema comes from Alembic migrations; FAB must not create tables or sync
        # permissions on every start (`bigledger db upgrade` does it once).
        "FAB_CREATE_DB": False,
        "FAB_UPDATE_PERMS": False,
        "FAB_SECURITY_MANAGER_CLASS": "bigledger_core.security.BigLedgerSecurityManager",
        "FAB_ADD_SECURITY_API": True,
        "FAB_API_SWAGGER_UI": True,
        "FAB_API_KEY_ENABLED": True,
        "FAB_API_MAX_PAGE_SIZE": 100,
        "AUTH_TYPE": 1,  # AUTH_DB
        "AUTH_ROLE_ADMIN": "Admin",
        "AUTH_ROLE_PUBLIC": "Public",
        "AUTH_RATE_LIMITED": True,
        "AUTH_RATE_LIMIT": setting("BIGLEDGER_LOGIN_RATE_LIMIT"),
        "RATELIMIT_ENABLED": True,
        "RATELIMIT_STORAGE_URI": setting("BIGLEDGER_RATELIMIT_STORAGE_URI"),
        "BIGLEDGER_FORM_RATE_LIMIT": setting("BIGLEDGER_FORM_RATE_LIMIT"),
        "BIGLEDGER_FORM_MAX_KB": setting("BIGLEDGER_FORM_MAX_KB"),
        "BIGLEDGER_FORM_MIN_SECONDS": setting("BIGLEDGER_FORM_MIN_SECONDS"),
        "BIGLEDGER_FORM_MAX_HOURS": setting("BIGLEDGER_FORM_MAX_HOURS"),
        "BIGLEDGER_LEAD_INBOX": setting("BIGLEDGER_LEAD_INBOX"),
        "BIGLEDGER_POS_CREATE_CONTACTS": setting("BIGLEDGER_POS_CREATE_CONTACTS"),
        "BIGLEDGER_POS_CURRENCY": setting("BIGLEDGER_POS_CURRENCY").upper(),
        "BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS": setting("BIGLEDGER_FINANCE_PAYMENT_TERMS_DAYS"),
        "WTF_CSRF_ENABLED": True,
        # no request body above this is read at all (imports take up to 50 MB, documents less)
        "MAX_CONTENT_LENGTH": 64 * 1024 * 1024,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "BABEL_DEFAULT_LOCALE": setting("BIGLEDGER_DEFAULT_LOCALE"),
        "LANGUAGES": {"zh": {"flag": "cn", "name": "中文"}, "en": {"flag": "gb", "name": "English"}},
        "FAB_BASE_TEMPLATE": "bigledger/baselayout.html",
        "FAB_INDEX_VIEW": "bigledger_core.views.HomeView",
        "FAB_MENU": "bigledger_core.modules.ModuleMenu",
    }
    config.update({name: setting(name) for name in RUNTIME_SETTINGS})
    config["BIGLEDGER_MAIL_PROVIDER"] = mail_provider
    config.update(overrides)
    return config
