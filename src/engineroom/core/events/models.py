"""Tables of the transactional outbox: events, per-subscriber deliveries, dead letters.

Types stay portable across SQLite, PostgreSQL and MariaDB: ``Uuid``, ``JSON``, bounded
``String`` and ``Text``, and ``UTCDateTime`` for timezone-aware timestamps.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from engineroom.core.clock import new_id, utcnow
from engineroom.core.models import Base, UTCDateTime

EVENT_TYPE_LENGTH = 200
SUBSCRIBER_LENGTH = 200

STATUS_PENDING = "pending"
STATUS_DONE = "done"
STATUS_DEAD = "dead"


class OutboxEvent(Base):
    """An event written in the same transaction as the state change it describes."""

    __tablename__ = "core_outbox"

    # The event id; UUIDv7 so that primary-key order is publication order.
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(EVENT_TYPE_LENGTH), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON())
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set once a delivery row exists for every matching subscriber.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)


class EventDelivery(Base):
    """One event owed to one subscriber: the unit of retry and of idempotency."""

    __tablename__ = "core_event_delivery"
    __table_args__ = (
        UniqueConstraint("event_id", "subscriber"),
        # The relay's "due work" query filters on both; done rows (kept until purged)
        # would otherwise sit in the range of a plain next_attempt_at index.
        Index("ix_core_event_delivery_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=new_id)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    subscriber: Mapped[str] = mapped_column(String(SUBSCRIBER_LENGTH))
    status: Mapped[str] = mapped_column(String(16), default=STATUS_PENDING)
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DeadLetter(Base):
    """A delivery that failed ``outbox_max_attempts`` times, kept for inspection and replay."""

    __tablename__ = "core_dead_letter"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=new_id)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid(), index=True)
    subscriber: Mapped[str] = mapped_column(String(SUBSCRIBER_LENGTH))
    event_type: Mapped[str] = mapped_column(String(EVENT_TYPE_LENGTH))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON())
    error: Mapped[str] = mapped_column(Text())
    attempts: Mapped[int] = mapped_column(Integer())
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
