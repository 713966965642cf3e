"""Event and subscription types shared by the outbox, the relay and the modules."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.clock import new_id, utcnow


@dataclass(frozen=True)
class Event:
    """A fact a module publishes, e.g. ``identity.user.registered``."""

    type: str
    payload: Mapping[str, Any]
    id: uuid.UUID = field(default_factory=new_id)
    occurred_at: datetime = field(default_factory=utcnow)


EventHandler = Callable[[Event, AsyncSession], Awaitable[None]]
"""A subscriber. It runs inside a transaction that also records its delivery, so what it
writes through the session commits together with "delivered" (exactly-once effects on the
database); anything it does outside the database must tolerate a repeat."""


@dataclass(frozen=True)
class Subscription:
    name: str
    """Stable, unique name: deliveries and idempotency are recorded under it."""
    event_type: str
    """An exact type, or a prefix ending in ``*`` (``identity.user.*``), or ``*``."""
    handler: EventHandler

    def matches(self, event_type: str) -> bool:
        if self.event_type == "*":
            return True
        if self.event_type.endswith("*"):
            return event_type.startswith(self.event_type[:-1])
        return event_type == self.event_type
