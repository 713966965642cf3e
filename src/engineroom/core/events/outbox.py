"""Publishing: an event is a row added to the caller's transaction, never a network call.

Because the row commits (or rolls back) with the state change that caused it, an event
exists exactly when its cause does; the relay delivers it afterwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.clock import new_id, utcnow
from engineroom.core.events.models import EVENT_TYPE_LENGTH, OutboxEvent
from engineroom.core.events.types import Event

OUTBOX_DIRTY_KEY = "engineroom.outbox_dirty"
"""``session.info`` flag telling the relay's after-commit hook that this commit published."""
OUTBOX_TYPES_KEY = "engineroom.outbox_types"
"""``session.info`` set of the event types this commit published: the hook wakes the relay
only when one of them has a subscriber, the others wait for its next poll."""

_INSERT = insert(cast(Table, OutboxEvent.__table__))

_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


def validate_event_type(event_type: str) -> None:
    """Raise ``ValueError`` unless ``event_type`` is dotted lowercase (``blog.article.created``)."""
    if len(event_type) > EVENT_TYPE_LENGTH or not _EVENT_TYPE.fullmatch(event_type):
        raise ValueError(
            f"event type {event_type!r} must be dotted lowercase words, e.g. "
            f"'identity.user.registered', at most {EVENT_TYPE_LENGTH} characters"
        )


def _normalise_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    # Round-tripping through JSON fails here, in the caller's code, rather than at commit
    # time, and gives the handlers later exactly what the database will hand back (a copy
    # the caller can no longer mutate; tuples become lists). NaN is refused because
    # PostgreSQL's JSON type rejects it.
    try:
        encoded = json.dumps(dict(payload), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event payload is not JSON-serialisable: {exc}") from exc
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded


def _new_event(event_type: str, payload: Mapping[str, Any]) -> Event:
    validate_event_type(event_type)
    if not isinstance(payload, Mapping):
        raise ValueError("event payload must be a mapping")
    return Event(
        type=event_type, payload=_normalise_payload(payload), id=new_id(), occurred_at=utcnow()
    )


def _mark_published(session: AsyncSession, event_type: str) -> None:
    session.info[OUTBOX_DIRTY_KEY] = True
    session.info.setdefault(OUTBOX_TYPES_KEY, set()).add(event_type)


def publish(session: AsyncSession, event_type: str, payload: Mapping[str, Any]) -> Event:
    """Add an event to ``session``'s transaction; it is delivered only if that commits.

    Never flushes or commits: the unit of work that owns ``session`` does.
    """
    event = _new_event(event_type, payload)
    session.add(
        OutboxEvent(
            id=event.id,
            type=event.type,
            payload=dict(event.payload),
            occurred_at=event.occurred_at,
        )
    )
    _mark_published(session, event_type)
    return event


async def publish_now(session: AsyncSession, event_type: str, payload: Mapping[str, Any]) -> Event:
    """``publish``, with the row inserted at once by a prepared Core statement.

    Same transaction, same delivery; it skips the ORM unit of work (identity map, flush
    planning), which costs more than the insert itself on a path that publishes on every
    request (a login). Never commits.
    """
    event = _new_event(event_type, payload)
    await session.execute(
        _INSERT,
        {
            "id": event.id,
            "type": event.type,
            "payload": dict(event.payload),
            "occurred_at": event.occurred_at,
            "dispatched_at": None,
        },
    )
    _mark_published(session, event_type)
    return event
