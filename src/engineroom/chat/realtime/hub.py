"""The hub: this process's connections and channels, fed by the broker.

Connections subscribe through the hub; the hub subscribes the process to a channel at the
broker when its first local subscriber arrives and leaves it with the last one. Every
publication comes back from the broker as push text, encoded once, and the hub queues that
same string on each subscriber's connection.

A subscriber is attached before its subscribe reply is built and its pushes are buffered
until the reply (with the recovered publications) is queued; then the buffered pushes that
are newer than the reply's position follow. So a subscriber sees every publication once,
in offset order, whatever arrives while it subscribes.

The hub watches each channel's offsets: a gap means this process missed publications (a
broker connection dropped), and the recoverable subscribers of that channel are told to
resubscribe ("insufficient state"), which recovers the gap from the history.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Protocol

import orjson
import structlog

from engineroom.chat.realtime.auth import TokenVerifier
from engineroom.chat.realtime.broker import Broker, HistoryPage, StreamPosition
from engineroom.chat.realtime.channels import ChannelRegistry
from engineroom.chat.realtime.connection import (
    Connection,
    ConnectionLimits,
    Handler,
    Subscription,
    Transport,
)
from engineroom.chat.realtime.protocol import (
    JSON,
    Disconnect,
    DisconnectCode,
    UnsubscribeCode,
    encode_push,
    publication_body,
    shared,
)
from engineroom.core.auth import Principal

logger = structlog.get_logger("engineroom.chat.realtime")

CONTROL_DISCONNECT = "disconnect"
CONTROL_UNSUBSCRIBE = "unsubscribe"


class RpcHandler(Protocol):
    async def __call__(self, principal: Principal, data: JSON) -> JSON: ...


@dataclass(eq=False, slots=True)
class _Channel:
    ready: asyncio.Future[None]
    """Done once the broker delivers this channel to the process."""
    subscribers: dict[Connection, Subscription] = field(default_factory=dict)
    epoch: str = ""
    offset: int = 0
    """The last offset delivered here (0: none yet)."""


class Hub:
    def __init__(
        self,
        broker: Broker,
        registry: ChannelRegistry,
        verifier: TokenVerifier,
        limits: ConnectionLimits,
        handlers: dict[str, Handler],
        *,
        presence_ttl: float = 60.0,
        version: str = "",
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.verifier = verifier
        self.limits = limits
        self.presence_ttl = presence_ttl
        self.version = version
        self.rpc_handlers: dict[str, RpcHandler] = {}
        self.connections: set[Connection] = set()
        self._handlers = handlers
        self._users: dict[str, set[Connection]] = {}
        self._channels: dict[str, _Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._presence_task: asyncio.Task[None] | None = None
        self._user_listeners: list[Callable[[], None]] = []
        self.accepting = False

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self._presence_task = asyncio.get_running_loop().create_task(self._refresh_presence())
        self.accepting = True

    async def shutdown(self, wait: float = 5.0) -> None:
        """Tell every client to reconnect (to another process) and wait for the frames."""
        self.accepting = False
        connections = list(self.connections)
        for connection in connections:
            connection.close(DisconnectCode.SHUTDOWN)
        if connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await asyncio.gather(*(c.closed() for c in connections))
        logger.info("chat_hub_drained", connections=len(connections))

    async def close(self) -> None:
        self.accepting = False
        for connection in list(self.connections):
            connection.release()
        if self._presence_task is not None:
            self._presence_task.cancel()
        tasks = [*self._tasks, *([self._presence_task] if self._presence_task else [])]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.broker.close()

    # ---- connections -----------------------------------------------------------------

    def open(self, transport: Transport) -> Connection:
        connection = Connection(self, transport, self.limits, self._handlers)
        self.connections.add(connection)
        connection.open()
        return connection

    def on_users_changed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously: it must only take note) whenever a connection
        authenticates or an authenticated one ends."""
        self._user_listeners.append(listener)

    def _users_changed(self) -> None:
        for listener in self._user_listeners:
            listener()

    def register_user(self, connection: Connection) -> None:
        self._users.setdefault(connection.user, set()).add(connection)
        self._users_changed()

    def remove(self, connection: Connection) -> None:
        """Forget a connection that ended; clean its presence and leaves in the background."""
        connection.release()
        self.connections.discard(connection)
        users = self._users.get(connection.user)
        if users is not None:
            users.discard(connection)
            if not users:
                del self._users[connection.user]
            self._users_changed()
        subscriptions = list(connection.subscriptions.values())
        connection.subscriptions.clear()
        for subscription in subscriptions:
            self.detach(connection, subscription)
        if subscriptions:
            self.spawn(
                self._after_unsubscribe(connection.client_id, connection.info, subscriptions)
            )

    def spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("chat_background_failed", error=repr(task.exception()))

    # ---- subscriptions ---------------------------------------------------------------

    async def attach(self, connection: Connection, subscription: Subscription) -> None:
        """Add a buffering subscriber; returns once the broker delivers the channel."""
        channel = subscription.channel
        state = self._channels.get(channel)
        if state is None:
            ready = asyncio.ensure_future(self.broker.subscribe(channel))
            state = _Channel(ready=ready)
            self._channels[channel] = state
        state.subscribers[connection] = subscription
        try:
            await asyncio.shield(state.ready)
        except BaseException:
            self.detach(connection, subscription)
            raise

    def activate(self, connection: Connection, subscription: Subscription, after: int) -> None:
        """The reply is queued: send the buffered pushes newer than ``after``, then go live."""
        buffered = subscription.buffer or []
        subscription.buffer = None
        for offset, push in buffered:
            if offset == 0 or offset > after:
                connection.push(push)

    def detach(self, connection: Connection, subscription: Subscription) -> None:
        channel = subscription.channel
        state = self._channels.get(channel)
        if state is None or state.subscribers.get(connection) is not subscription:
            return
        del state.subscribers[connection]
        if not state.subscribers:
            del self._channels[channel]
            ready = state.ready
            if ready.done() and not ready.cancelled() and ready.exception() is None:
                self.spawn(self.broker.unsubscribe(channel))

    async def after_subscribe(self, connection: Connection, subscription: Subscription) -> None:
        options = subscription.options
        if options.presence:
            await self.broker.add_presence(
                subscription.channel, connection.client_id, connection.info, self.presence_ttl
            )
        if options.join_leave:
            push = encode_push(
                subscription.channel, "join", {"info": orjson.Fragment(connection.info)}
            )
            await self.broker.publish_join_leave(subscription.channel, push)

    async def _after_unsubscribe(
        self, client_id: str, info: bytes, subscriptions: list[Subscription]
    ) -> None:
        for subscription in subscriptions:
            channel = subscription.channel
            if subscription.options.presence:
                await self.broker.remove_presence(channel, client_id)
            if subscription.options.join_leave:
                push = encode_push(channel, "leave", {"info": orjson.Fragment(info)})
                await self.broker.publish_join_leave(channel, push)

    def unsubscribe(self, connection: Connection, channel: str) -> bool:
        subscription = connection.subscriptions.pop(channel, None)
        if subscription is None:
            return False
        self.detach(connection, subscription)
        self.spawn(self._after_unsubscribe(connection.client_id, connection.info, [subscription]))
        return True

    # ---- from the broker ---------------------------------------------------------------

    def handle_publication(self, channel: str, offset: int, epoch: str, push: str) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        if offset:
            if state.offset and state.epoch == epoch:
                if offset <= state.offset:
                    return  # already delivered
                if offset != state.offset + 1:
                    self._resync(channel, state)
            state.epoch, state.offset = epoch, offset
        push = shared(push)
        for connection, subscription in state.subscribers.items():
            buffer = subscription.buffer
            if buffer is None:
                connection.push(push)
            else:
                buffer.append((offset, push))

    def handle_join_leave(self, channel: str, push: str) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        push = shared(push)
        for connection, subscription in state.subscribers.items():
            if subscription.join_leave and subscription.buffer is None:
                connection.push(push)

    def handle_control(self, message: dict[str, object]) -> None:
        user = message.get("user")
        connections = list(self._users.get(user, ())) if isinstance(user, str) else []
        kind = message.get("type")
        if kind == CONTROL_DISCONNECT:
            code, reason = message.get("code"), message.get("reason")
            if isinstance(code, int) and isinstance(reason, str):
                for connection in connections:
                    connection.close(Disconnect(code, reason))
        elif kind == CONTROL_UNSUBSCRIBE:
            channel = message.get("channel")
            if isinstance(channel, str):
                code, reason = UnsubscribeCode.SERVER
                push = encode_push(channel, "unsubscribe", {"code": code, "reason": reason})
                for connection in connections:
                    if self.unsubscribe(connection, channel):
                        connection.push(push)

    def handle_reset(self) -> None:
        for channel, state in list(self._channels.items()):
            state.offset = 0
            self._resync(channel, state)

    def _resync(self, channel: str, state: _Channel) -> None:
        """Publications were lost on the way here: recoverable subscribers resubscribe."""
        logger.warning("chat_channel_resync", channel=channel)
        code, reason = UnsubscribeCode.INSUFFICIENT_STATE
        push = encode_push(channel, "unsubscribe", {"code": code, "reason": reason})
        for connection, subscription in list(state.subscribers.items()):
            if subscription.options.recoverable and subscription.buffer is None:
                connection.push(push)
                connection.subscriptions.pop(channel, None)
                del state.subscribers[connection]
                # The client left as far as others can tell; its resubscribe joins again.
                self.spawn(
                    self._after_unsubscribe(connection.client_id, connection.info, [subscription])
                )
        if not state.subscribers and self._channels.get(channel) is state:
            del self._channels[channel]
            self.spawn(self.broker.unsubscribe(channel))

    # ---- server side API -------------------------------------------------------------

    async def publish(
        self, channel: str, data: JSON, *, tags: dict[str, str] | None = None
    ) -> StreamPosition:
        """Publish from the server (no client info); the channel's namespace must exist."""
        options = self.registry.options(channel)
        return await self.broker.publish(channel, publication_body(data, tags=tags), options)

    async def history(
        self,
        channel: str,
        *,
        limit: int,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryPage:
        options = self.registry.options(channel)
        return await self.broker.history(
            channel, options, since=since, limit=limit, reverse=reverse
        )

    async def presence(self, channel: str) -> dict[str, bytes]:
        self.registry.options(channel)
        return await self.broker.presence(channel)

    async def disconnect_user(self, user: str, disconnect: Disconnect) -> None:
        await self.broker.publish_control(
            {
                "type": CONTROL_DISCONNECT,
                "user": user,
                "code": disconnect.code,
                "reason": disconnect.reason,
            }
        )

    async def unsubscribe_user(self, user: str, channel: str) -> None:
        """Remove a user from a channel on every process (a kick, a lost membership)."""
        await self.broker.publish_control(
            {"type": CONTROL_UNSUBSCRIBE, "user": user, "channel": channel}
        )

    def subscriber_count(self, channel: str) -> int:
        state = self._channels.get(channel)
        return len(state.subscribers) if state is not None else 0

    # ---- presence upkeep ---------------------------------------------------------------

    async def _refresh_presence(self) -> None:
        """Re-add this process's presence entries before they expire in a shared broker."""
        interval = max(1.0, self.presence_ttl / 3)
        while True:
            await asyncio.sleep(interval)
            for connection in list(self.connections):
                for subscription in list(connection.subscriptions.values()):
                    if not subscription.options.presence:
                        continue
                    try:
                        await self.broker.add_presence(
                            subscription.channel,
                            connection.client_id,
                            connection.info,
                            self.presence_ttl,
                        )
                    except Exception:
                        logger.warning("chat_presence_refresh_failed", exc_info=True)
