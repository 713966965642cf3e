"""The chat domain's events, and how they reach live clients.

Every change in the domain is recorded with ``record`` in the same transaction as the
change (the outbox). Its payload carries the room, the data live clients need
(``live``) and the users to tell personally (``users``). One subscriber, ``forward_live``,
publishes ``live`` to the room's channel ``room:<room id>`` and to each listed user's
personal channel ``#<user id>`` once the transaction has committed. Delivery is at least
once: the published data carries the event id (``event_id``) so clients can drop a
repeat, and message data carries the room's ``seq`` so clients can order.

Event types (payload keys besides ``room_id``, ``live`` and ``users`` are listed in
docs/chat.md): ``chat.room.created``, ``.updated``, ``.deleted``;
``chat.member.joined``, ``.left``, ``.kicked``, ``.banned``, ``.unbanned``, ``.muted``,
``.unmuted``, ``.role_changed``, ``chat.invite.created``, ``.accepted``, ``.declined``;
``chat.message.sent``, ``.edited``, ``.deleted``; ``chat.reaction.added``, ``.removed``;
``chat.read.updated``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat.authorizer import end_room_subscriptions
from engineroom.chat.errors import RealtimeUnavailable
from engineroom.chat.realtime.runtime import runtime_of_session
from engineroom.chat.search import forget_deleted_room
from engineroom.core.events import Event, Subscription, publish
from engineroom.identity.public import EVENT_USER_DELETED

ROOM_CREATED = "chat.room.created"
ROOM_UPDATED = "chat.room.updated"
ROOM_DELETED = "chat.room.deleted"
MEMBER_JOINED = "chat.member.joined"
MEMBER_LEFT = "chat.member.left"
MEMBER_KICKED = "chat.member.kicked"
MEMBER_BANNED = "chat.member.banned"
MEMBER_UNBANNED = "chat.member.unbanned"
MEMBER_MUTED = "chat.member.muted"
MEMBER_UNMUTED = "chat.member.unmuted"
MEMBER_ROLE_CHANGED = "chat.member.role_changed"
INVITE_CREATED = "chat.invite.created"
INVITE_ACCEPTED = "chat.invite.accepted"
INVITE_DECLINED = "chat.invite.declined"
MESSAGE_SENT = "chat.message.sent"
MESSAGE_EDITED = "chat.message.edited"
MESSAGE_DELETED = "chat.message.deleted"
REACTION_ADDED = "chat.reaction.added"
REACTION_REMOVED = "chat.reaction.removed"
READ_UPDATED = "chat.read.updated"

_EVENT_PREFIX = "chat."
ROOM_NAMESPACE = "room"


def room_channel(room_id: uuid.UUID) -> str:
    return f"{ROOM_NAMESPACE}:{room_id}"


def user_channel(user_id: uuid.UUID) -> str:
    return f"#{user_id}"


def live_type(event_type: str) -> str:
    """``chat.message.sent`` -> ``message.sent``: the ``type`` field live clients see."""
    return event_type.removeprefix(_EVENT_PREFIX)


def record(
    session: AsyncSession,
    event_type: str,
    *,
    room_id: uuid.UUID,
    live: Mapping[str, Any] | None,
    users: Iterable[uuid.UUID] = (),
    to_room: bool = True,
    **extra: Any,
) -> Event:
    """Add ``event_type`` to the transaction; after commit ``live`` goes to the room's
    channel (unless ``to_room`` is false) and to the personal channel of each of ``users``.

    ``live`` must be JSON-ready; ``None`` records the event without telling live clients.
    """
    payload: dict[str, Any] = {"room_id": str(room_id), **extra}
    if live is not None:
        payload["live"] = {"type": live_type(event_type), "room_id": str(room_id), **live}
        payload["to_room"] = to_room
        payload["users"] = sorted({str(user) for user in users})
    return publish(session, event_type, payload)


async def forward_live(event: Event, session: AsyncSession) -> None:
    live = event.payload.get("live")
    if not isinstance(live, Mapping):
        return
    runtime = runtime_of_session(session)
    if runtime is None:
        # Retried by the relay, and dead-lettered if this process never runs the chat
        # transport (run the chat module in every process that relays its events).
        raise RealtimeUnavailable("The real-time transport does not run in this process.")
    data = {**live, "event_id": str(event.id)}
    if event.payload.get("to_room", True):
        await runtime.hub.publish(f"{ROOM_NAMESPACE}:{event.payload['room_id']}", data)
    for user in event.payload.get("users", ()):
        await runtime.hub.publish(f"#{user}", data)


async def forget_deleted_user(event: Event, session: AsyncSession) -> None:
    """identity.user.deleted: the account's memberships, invites and bans go."""
    # Imported here because membership records its events through this module.
    from engineroom.chat.membership import forget_user

    await forget_user(session, uuid.UUID(str(event.payload["user_id"])))


SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription("chat.live_delivery", f"{_EVENT_PREFIX}*", forward_live),
    Subscription("chat.rooms.end_subscriptions", "chat.member.*", end_room_subscriptions),
    Subscription("chat.rooms.forget_deleted_user", EVENT_USER_DELETED, forget_deleted_user),
    Subscription("chat.messages.forget_room_index", ROOM_DELETED, forget_deleted_room),
)
"""Modules of the domain add their handlers for other modules' events here."""
