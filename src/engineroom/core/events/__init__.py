"""Events: a transactional outbox and a relay that delivers to subscribers at least once."""

from engineroom.core.events.outbox import publish, publish_now
from engineroom.core.events.relay import OutboxRelay, OutboxStats
from engineroom.core.events.types import Event, EventHandler, Subscription

__all__ = [
    "Event",
    "EventHandler",
    "OutboxRelay",
    "OutboxStats",
    "Subscription",
    "publish",
    "publish_now",
]
