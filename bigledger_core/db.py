"""The database handle shared by the host and every plugin."""
from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla.base import SQLA

db = SQLA()


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC: every timestamp is stored in UTC."""
    return dt.datetime.now(dt.UTC)
