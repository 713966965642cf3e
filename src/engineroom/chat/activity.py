"""Typing indicators and user presence: ephemeral chat activity.

Nothing here touches the outbox or a channel history: a typing flag or a status that
arrives late is worthless, and one that is lost is replaced by the next.

Typing: ``chat.typing`` (RPC) publishes ``{"type": "typing", "room_id", "user": {id,
username}, "typing"}`` on ``typing:<room id>`` (a namespace without history or presence
that the room's readers may subscribe to). Only members allowed to post may type, and one
user's ``typing: true`` goes out at most once per ``CHAT_TYPING_THROTTLE`` seconds per
room. Clients treat ``typing: true`` as lasting about five seconds unless renewed.

Presence (docs/adr/0020): every authenticated connection of a user is a device with an
entry in the transport's presence of the channel ``status:<user id>``; the entry carries
the device's status (``online`` until the device reports ``away`` with ``chat.presence``).
Each process keeps the entries of its own connections: it looks for opened and closed
connections every ``CHAT_PRESENCE_SCAN_INTERVAL`` seconds (the transport has no hook for
them), adds and removes entries accordingly and refreshes them before the presence TTL
runs out. The entries are shared through the broker (Redis, NATS), so the status
read by any process is the same: ``online`` if any entry is online, ``away`` if all are
away, ``offline`` without entries (a crashed process's entries expire after the TTL).
Status changes are published on ``status:<user id>``, which any signed-in user may
subscribe to; its subscribers do not join that presence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import receipts
from engineroom.chat.access import readable_room, user_id_of, writable_room
from engineroom.chat.activity_schemas import (
    DeviceStatus,
    PresenceRequest,
    PresenceStatus,
    RoomReadPosition,
    TypingRequest,
)
from engineroom.chat.errors import RealtimeUnavailable, UnknownConnection
from engineroom.chat.realtime.broker import BrokerError
from engineroom.chat.realtime.channels import ChannelAction, ChannelName
from engineroom.chat.realtime.connection import Connection
from engineroom.chat.realtime.hub import RpcHandler
from engineroom.chat.realtime.protocol import JSON, dumps_kept
from engineroom.chat.realtime.runtime import (
    STATUS_NAMESPACE,
    TYPING_NAMESPACE,
    ChatRuntime,
    find_runtime,
)
from engineroom.chat.receipts_repository import member_page
from engineroom.chat.rpc import reply_error, rpc_method, validation_reply
from engineroom.core.auth import Principal
from engineroom.core.db import Database
from engineroom.core.errors import AppError
from engineroom.core.platform import Platform
from engineroom.identity.public import get_user

logger = structlog.get_logger("engineroom.chat.activity")

_TICK = 0.1
"""Seconds between checks of whether the transport still runs (and a scan is due)."""
_WOKEN_SCAN_GAP = 0.05
"""Least time between two scans woken by connections (a burst of connects is one scan)."""
_START_GRACE = 120.0
"""A transport that has not started after this long never will (its start failed)."""
_STATUS_READS = 16
"""Presence reads in flight at once when many users' statuses are asked for."""
_THROTTLE_ENTRIES = 10_000


def typing_channel(room_id: uuid.UUID) -> str:
    return f"{TYPING_NAMESPACE}:{room_id}"


def status_channel(user_id: uuid.UUID | str) -> str:
    return f"{STATUS_NAMESPACE}:{user_id}"


def _id_in(channel: ChannelName) -> uuid.UUID | None:
    """The UUID a ``namespace:<uuid>`` channel is about, or ``None``."""
    rest = channel.name.partition(":")[2]
    try:
        parsed = uuid.UUID(rest)
    except ValueError:
        return None
    return parsed if str(parsed) == rest else None


@asynccontextmanager
async def reading(database: Database) -> AsyncIterator[AsyncSession]:
    """A read transaction for permission checks, on the primary when there are replicas:
    a replica may lag behind the join a client made a moment ago."""
    if database.settings.database_replica_urls:
        async with database.session() as session, session.begin():
            yield session
            await session.rollback()
    else:
        async with database.read_only() as session:
            yield session


# ---- channel permissions -------------------------------------------------------------------


class TypingChannels:
    """``typing:<room id>``: whoever may read the room may watch who types in it."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def authorize(
        self, principal: Principal, channel: ChannelName, action: ChannelAction
    ) -> bool:
        room_id = _id_in(channel)
        if action is not ChannelAction.SUBSCRIBE or room_id is None:
            return False
        try:
            async with reading(self._database) as session:
                await readable_room(session, room_id, principal)
        except (AppError, ValueError):
            # ValueError: a principal that is not a user (its subject is no user id).
            return False
        return True


class StatusChannels:
    """``status:<user id>``: any signed-in user may follow anyone's status changes."""

    async def authorize(
        self, principal: Principal, channel: ChannelName, action: ChannelAction
    ) -> bool:
        return action is ChannelAction.SUBSCRIBE and _id_in(channel) is not None


# ---- typing -------------------------------------------------------------------------------


class TypingThrottle:
    """At most one ``typing: true`` per user and room per ``interval`` seconds; a
    ``typing: false`` only after a ``true`` went out. In memory, per process: it bounds
    the fan-out, it does not need to be exact."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[tuple[str, uuid.UUID], tuple[float, bool]] = {}

    def allow(self, user: str, room_id: uuid.UUID, typing: bool) -> bool:
        now = self._clock()
        key = (user, room_id)
        at, was_typing = self._last.get(key, (float("-inf"), False))
        if typing:
            if was_typing and now - at < self._interval:
                return False
        elif not was_typing:
            return False
        if len(self._last) >= _THROTTLE_ENTRIES:
            self._prune(now)
        self._last[key] = (now, typing)
        return True

    def _prune(self, now: float) -> None:
        horizon = max(self._interval, 60.0)
        for key, (at, _) in list(self._last.items()):
            if now - at > horizon:
                del self._last[key]
        if len(self._last) >= _THROTTLE_ENTRIES:
            self._last.clear()


async def typing_payload(
    session: AsyncSession, principal: Principal, room_id: uuid.UUID, typing: bool
) -> dict[str, JSON]:
    """What ``typing:<room id>`` receives, once the principal may post in the room.

    Raises ``RoomNotFound``, ``NotAMember``, ``BannedFromRoom`` and ``MutedInRoom``.
    """
    await writable_room(session, room_id, principal)
    username = principal.username
    if username is None:
        user = await get_user(session, user_id_of(principal))
        username = user.username if user is not None else None
    return {
        "type": "typing",
        "room_id": str(room_id),
        "user": {"id": principal.subject, "username": username},
        "typing": typing,
    }


# ---- presence -----------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Device:
    connection: Connection
    user: str
    """The canonical user id."""
    status: DeviceStatus = DeviceStatus.ONLINE

    @property
    def client_id(self) -> str:
        return self.connection.client_id

    def info(self) -> bytes:
        # Kept by the in-process broker for as long as the device is connected.
        return dumps_kept({"user": self.user, "client": self.client_id, "status": self.status})


def status_of_entries(entries: Iterable[bytes]) -> PresenceStatus:
    """A user's status from the presence entries of their devices."""
    status = PresenceStatus.OFFLINE
    for entry in entries:
        try:
            decoded = orjson.loads(entry)
        except orjson.JSONDecodeError:
            continue
        device = decoded.get("status") if isinstance(decoded, dict) else None
        if device == DeviceStatus.ONLINE.value:
            return PresenceStatus.ONLINE
        if device == DeviceStatus.AWAY.value:
            status = PresenceStatus.AWAY
    return status


def _user_key(principal: Principal) -> str | None:
    """The canonical user id of a user principal (``None`` for services and keys)."""
    if principal.kind != "user":
        return None
    try:
        return str(uuid.UUID(principal.subject))
    except ValueError:
        return None


class PresenceBoard:
    """This process's devices in the shared presence of ``status:<user id>`` channels."""

    def __init__(self, runtime: ChatRuntime, *, scan_interval: float) -> None:
        self._hub = runtime.hub
        self._broker = runtime.broker
        self._ttl = runtime.chat.presence_ttl
        self._scan_interval = scan_interval
        self._devices: dict[str, _Device] = {}
        """Client id -> device."""
        self._by_principal: dict[int, _Device] = {}
        """``id()`` of the connection's principal -> device (an RPC knows only that)."""
        self._lock = asyncio.Lock()
        self._refreshed_at = time.monotonic()
        self._woken = asyncio.Event()
        # A connection that authenticates or ends wakes the scan at once: its device then
        # shows on every process within moments, not only at the next periodic scan.
        self._hub.on_users_changed(self._woken.set)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start_when_running(self, platform: Platform, runtime: ChatRuntime) -> None:
        """Wait until ``runtime`` serves ``platform``, then scan in a task of its hub (which
        waits for it when it closes, so the entries are cleared before the broker goes).

        Installers run before the transport starts and nothing tells them when it has;
        a transport that stops (or fails to start) before this noticed it never had
        entries here, and this gives up after ``_START_GRACE``.
        """
        waited = 0.0
        while waited < _START_GRACE:
            if find_runtime(platform) is runtime:
                runtime.hub.spawn(self.run(platform, runtime))
                return
            await asyncio.sleep(_TICK)
            waited += _TICK

    async def run(self, platform: Platform, runtime: ChatRuntime) -> None:
        """Scan while ``runtime`` serves ``platform``; clear this process's entries after."""
        next_scan = 0.0
        while find_runtime(platform) is runtime:
            now = time.monotonic()
            woken = self._woken.is_set()
            if woken or now >= next_scan:
                self._woken.clear()
                next_scan = now + self._scan_interval
                await self._logged(self.sync())
                if woken:
                    await asyncio.sleep(_WOKEN_SCAN_GAP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), _TICK)
        await self._logged(self.clear())

    async def _logged(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:
            # The broker may be down for a while; the next scan tries again.
            logger.warning("chat_presence_scan_failed", exc_info=True)

    # ---- scanning ------------------------------------------------------------------------

    async def sync(self) -> None:
        """Add the connections that opened, remove those that ended, refresh when due,
        and publish the status of every user whose devices changed."""
        async with self._lock:
            changed = await self._sync_locked()
            if time.monotonic() - self._refreshed_at >= self._ttl / 3:
                await self._refresh_locked()
        await self._publish_all(changed)

    async def clear(self) -> None:
        """Remove every entry of this process (the transport stops)."""
        async with self._lock:
            devices = list(self._devices.values())
            self._devices.clear()
            self._by_principal.clear()
            for device in devices:
                await self._broker.remove_presence(status_channel(device.user), device.client_id)
        await self._publish_all({device.user for device in devices})

    def _open_connections(self) -> dict[str, Connection]:
        return {
            connection.client_id: connection
            for connection in self._hub.connections
            if connection.principal is not None and not connection.closing
        }

    async def _sync_locked(self) -> set[str]:
        current = self._open_connections()
        changed: set[str] = set()
        for client_id, device in list(self._devices.items()):
            if client_id not in current:
                self._forget(device)
                changed.add(device.user)
                await self._broker.remove_presence(status_channel(device.user), client_id)
        for client_id, connection in current.items():
            if client_id in self._devices or connection.principal is None:
                continue
            user = _user_key(connection.principal)
            if user is None:
                continue
            device = _Device(connection, user)
            self._devices[client_id] = device
            self._by_principal[id(connection.principal)] = device
            changed.add(user)
            try:
                await self._write(device)
            except BrokerError:
                self._forget(device)  # found again, and retried, by the next scan
                raise
        return changed

    def _forget(self, device: _Device) -> None:
        self._devices.pop(device.client_id, None)
        principal = device.connection.principal
        if principal is not None and self._by_principal.get(id(principal)) is device:
            del self._by_principal[id(principal)]

    async def _write(self, device: _Device) -> None:
        await self._broker.add_presence(
            status_channel(device.user), device.client_id, device.info(), self._ttl
        )

    async def _refresh_locked(self) -> None:
        self._refreshed_at = time.monotonic()
        for device in list(self._devices.values()):
            await self._write(device)

    # ---- statuses ------------------------------------------------------------------------

    async def set_status(self, principal: Principal, status: DeviceStatus) -> PresenceStatus:
        """The status of the device whose connection ``principal`` belongs to (RPC
        handlers get the connection's own principal object); the user's resulting status."""
        async with self._lock:
            # Catch up with the connections opened since the last scan first: the caller's
            # own, and its user's other devices, count in the status answered.
            changed = await self._sync_locked()
            device = self._device_of(principal)
            if device is None:
                raise UnknownConnection("This connection does not report a status.")
            if device.status is not status:
                device.status = status
                changed.add(device.user)
                await self._write(device)
        await self._publish_all(changed - {device.user})
        return await self._publish(device.user)

    def _device_of(self, principal: Principal) -> _Device | None:
        device = self._by_principal.get(id(principal))
        if device is None or device.connection.principal is not principal:
            return None
        return device

    async def status(self, user_id: uuid.UUID | str) -> PresenceStatus:
        entries = await self._broker.presence(status_channel(user_id))
        return status_of_entries(entries.values())

    async def statuses(self, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, PresenceStatus]:
        """The status of each user, read from the shared presence."""
        gate = asyncio.Semaphore(_STATUS_READS)

        async def one(user_id: uuid.UUID) -> tuple[uuid.UUID, PresenceStatus]:
            async with gate:
                return user_id, await self.status(user_id)

        try:
            found = await asyncio.gather(*(one(user_id) for user_id in dict.fromkeys(user_ids)))
        except BrokerError as exc:
            logger.warning("chat_broker_unavailable", error=repr(exc))
            raise RealtimeUnavailable("The message broker cannot be reached.") from None
        return dict(found)

    async def _publish(self, user: str) -> PresenceStatus:
        status = await self.status(user)
        data: JSON = {"type": "presence", "user_id": user, "status": status.value}
        await self._hub.publish(status_channel(user), data)
        return status

    async def _publish_all(self, users: Iterable[str]) -> None:
        for user in sorted(users):
            await self._publish(user)


@dataclass(frozen=True, slots=True)
class StatusPage:
    statuses: dict[uuid.UUID, PresenceStatus]
    next_cursor: uuid.UUID | None


async def room_statuses(
    session: AsyncSession,
    principal: Principal,
    board: PresenceBoard,
    *,
    room_id: uuid.UUID,
    cursor: uuid.UUID | None,
    limit: int,
) -> StatusPage:
    """The statuses of a page of the room's members, for those who may read the room."""
    await readable_room(session, room_id, principal)
    members = await member_page(session, room_id, after=cursor, limit=limit + 1)
    page = members[:limit]
    return StatusPage(await board.statuses(page), page[-1] if len(members) > limit else None)


# ---- wiring -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Activity:
    """The typing throttle and the presence board of one running transport."""

    throttle: TypingThrottle
    presence: PresenceBoard
    starter: asyncio.Task[None]
    """Waits for the transport to run (kept here: the loop keeps only weak references)."""


_ACTIVITY: weakref.WeakKeyDictionary[ChatRuntime, Activity] = weakref.WeakKeyDictionary()


def activity_of(runtime: ChatRuntime) -> Activity | None:
    return _ACTIVITY.get(runtime)


def _typing_handler(
    database: Database, runtime: ChatRuntime, throttle: TypingThrottle
) -> RpcHandler:
    async def handle(principal: Principal, data: JSON) -> JSON:
        try:
            request = TypingRequest.model_validate(data)
            async with reading(database) as session:
                payload = await typing_payload(session, principal, request.room_id, request.typing)
            if not throttle.allow(principal.subject, request.room_id, request.typing):
                return {"sent": False}
            try:
                await runtime.hub.publish(typing_channel(request.room_id), payload)
            except BrokerError:
                raise RealtimeUnavailable("The message broker cannot be reached.") from None
        except AppError as error:
            raise reply_error(error) from None
        except ValidationError as error:
            raise validation_reply(error) from None
        return {"sent": True}

    return handle


def _presence_handler(board: PresenceBoard) -> RpcHandler:
    async def handle(principal: Principal, data: JSON) -> JSON:
        try:
            request = PresenceRequest.model_validate(data)
            try:
                status = await board.set_status(principal, request.status)
            except BrokerError:
                raise RealtimeUnavailable("The message broker cannot be reached.") from None
        except AppError as error:
            raise reply_error(error) from None
        except ValidationError as error:
            raise validation_reply(error) from None
        return {"status": status.value}

    return handle


async def _read(session: AsyncSession, principal: Principal, data: JSON) -> JSON:
    request = RoomReadPosition.model_validate(data)
    state = await receipts.mark_read(
        session,
        principal,
        room_id=request.room_id,
        message_id=request.message_id,
        seq=request.seq,
    )
    return receipts.read_state_json(state)


def install(platform: Platform, runtime: ChatRuntime) -> None:
    """Authorize ``typing:`` and ``status:``, register ``chat.read``, ``chat.typing`` and
    ``chat.presence``, and keep this process's presence entries while the transport runs."""
    chat = runtime.chat
    database = platform.database
    throttle = TypingThrottle(chat.typing_throttle)
    board = PresenceBoard(runtime, scan_interval=chat.presence_scan_interval)
    starter = asyncio.get_running_loop().create_task(board.start_when_running(platform, runtime))
    _ACTIVITY[runtime] = Activity(throttle, board, starter)
    runtime.registry.set_authorizer(TYPING_NAMESPACE, TypingChannels(database))
    runtime.registry.set_authorizer(STATUS_NAMESPACE, StatusChannels())
    handlers = runtime.hub.rpc_handlers
    handlers["chat.read"] = rpc_method(database, _read)
    handlers["chat.typing"] = _typing_handler(database, runtime, throttle)
    handlers["chat.presence"] = _presence_handler(board)
