"""The database handle shared by the host and every plugin."""
from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla.base import SQLA
from sqlalchemy import event
from sqlalchemy.engine import Engine

db = SQLA()


@event.listens_for(Engine, "connect")
def _sqlite_foreign_keys(dbapi_connection, _record) -> None:
    """SQLite enforces foreign keys (and ON DELETE CASCADE) only when asked, per connection."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC: every timestamp is stored in UTC."""
    return dt.datetime.now(dt.UTC)
