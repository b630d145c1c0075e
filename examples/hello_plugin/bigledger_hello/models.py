"""The plugin's one table. OwnedMixin gives each greeting an owner and a team."""
import datetime as dt

from flask_appbuilder import Model
from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bigledger_core.db import utcnow
from bigledger_core.models import OwnedMixin


class HelloGreeting(OwnedMixin, Model):
    __tablename__ = "hello_greeting"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message: Mapped[str] = mapped_column(String(500), nullable=False)
    language: Mapped[str] = mapped_column(String(8), nullable=False, default="en")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    def __repr__(self) -> str:
        return self.message
