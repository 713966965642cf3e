"""The demo module's one table."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from engineroom.core.clock import new_id, utcnow
from engineroom.core.models import Base, UTCDateTime


class DemoNote(Base):
    __tablename__ = "demo_note"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
