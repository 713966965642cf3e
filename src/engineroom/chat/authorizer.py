"""Who may subscribe to a room's channel, and ending the subscriptions of those who lost it.

``room:<room id>`` may be subscribed to by whoever may read the room
(``access.readable_room``: members; for public rooms any signed-in user who is not
banned; platform moderators). Each check reads the database in a transaction of its own.
Clients never publish to a room channel (messages are persisted first, through REST or
RPC), and user-limited forms (``room:<id>#...``) and malformed ids are refused.

When someone leaves, is kicked or banned, the event carries ``unsubscribe`` (user ids);
``end_room_subscriptions`` runs after the commit and asks the transport to unsubscribe
those users from the room's channel on every process (the broker's control channel:
Redis or NATS between processes), with the protocol's server unsubscribe push (code 2000).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import access
from engineroom.chat.errors import RealtimeUnavailable
from engineroom.chat.realtime.channels import ChannelAction, ChannelName
from engineroom.chat.realtime.runtime import ROOM_NAMESPACE, ChatRuntime, runtime_of_session
from engineroom.core.auth import Principal
from engineroom.core.db import Database
from engineroom.core.errors import AppError
from engineroom.core.events import Event
from engineroom.core.platform import Platform

_PREFIX = f"{ROOM_NAMESPACE}:"


def room_id_of(channel: ChannelName) -> uuid.UUID | None:
    """The room of a ``room:<uuid>`` channel; ``None`` for anything else."""
    if channel.users is not None or not channel.name.startswith(_PREFIX):
        return None
    text = channel.name.removeprefix(_PREFIX)
    try:
        room_id = uuid.UUID(text)
    except ValueError:
        return None
    # Only the canonical spelling: one room, one channel name.
    return room_id if str(room_id) == text else None


class RoomAuthorizer:
    """The ``room`` namespace's ``ChannelAuthorizer``."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def authorize(
        self, principal: Principal, channel: ChannelName, action: ChannelAction
    ) -> bool:
        room_id = room_id_of(channel)
        if action is not ChannelAction.SUBSCRIBE or room_id is None:
            return False
        try:
            async with self._reading() as session:
                await access.readable_room(session, room_id, principal)
        except (AppError, ValueError):
            # ValueError: a principal that is not a user (its subject is no user id).
            return False
        return True

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncSession]:
        if self._database.settings.database_replica_urls:
            # A replica may lag behind the join a client made a moment ago: subscribing
            # right after joining must not be refused, so read the primary.
            async with self._database.session() as session, session.begin():
                yield session
                await session.rollback()
        else:
            async with self._database.read_only() as session:
                yield session


def install(platform: Platform, runtime: ChatRuntime) -> None:
    """Plug the room authorizer into a starting transport."""
    runtime.registry.set_authorizer(ROOM_NAMESPACE, RoomAuthorizer(platform.database))


async def end_room_subscriptions(event: Event, session: AsyncSession) -> None:
    """After a member left or was removed: end their live subscriptions to the room."""
    users = event.payload.get("unsubscribe")
    if not users:
        return
    runtime = runtime_of_session(session)
    if runtime is None:
        # Retried by the relay, like the live delivery of the same event.
        raise RealtimeUnavailable("The real-time transport does not run in this process.")
    channel = f"{_PREFIX}{event.payload['room_id']}"
    for user in users:
        await runtime.hub.unsubscribe_user(str(user), channel)
