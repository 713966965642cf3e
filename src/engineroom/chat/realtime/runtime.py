"""The transport of one platform: broker, channel registry and hub, started and stopped
with the platform, and found again from the platform by the routes."""

from __future__ import annotations

import weakref
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from engineroom import __version__
from engineroom.chat.config import ChatSettings
from engineroom.chat.realtime.auth import TokenVerifier
from engineroom.chat.realtime.broker import Broker
from engineroom.chat.realtime.broker_memory import MemoryBroker
from engineroom.chat.realtime.channels import (
    AllowAuthenticated,
    ChannelRegistry,
    DenyAll,
    Namespace,
    NamespaceOptions,
    PersonalChannels,
)
from engineroom.chat.realtime.commands import HANDLERS
from engineroom.chat.realtime.connection import ConnectionLimits
from engineroom.chat.realtime.hub import Hub
from engineroom.core.platform import Platform
from engineroom.settings import Settings

VerifierFactory = Callable[[Platform], TokenVerifier]

PUBLIC_NAMESPACE = "public"
ROOM_NAMESPACE = "room"
PERSONAL_NAMESPACE = ""
TYPING_NAMESPACE = "typing"
STATUS_NAMESPACE = "status"


def default_registry(chat: ChatSettings) -> ChannelRegistry:
    """``public:`` for everyone, ``room:`` for the chat domain, ``#<user>`` per user."""
    return ChannelRegistry(
        [
            Namespace(
                PUBLIC_NAMESPACE,
                NamespaceOptions(
                    history_size=chat.public_history_size,
                    history_ttl=chat.public_history_ttl,
                    presence=True,
                    join_leave=True,
                    client_publish=True,
                ),
                AllowAuthenticated(),
            ),
            Namespace(
                ROOM_NAMESPACE,
                NamespaceOptions(
                    history_size=chat.room_history_size,
                    history_ttl=chat.room_history_ttl,
                    presence=True,
                    join_leave=True,
                ),
                DenyAll(),
            ),
            # Ephemeral chat activity (chat.activity): typing indicators per room and user
            # status changes per user; no history, filled in by the chat domain.
            Namespace(TYPING_NAMESPACE, NamespaceOptions(), DenyAll()),
            Namespace(STATUS_NAMESPACE, NamespaceOptions(), DenyAll()),
            Namespace(
                PERSONAL_NAMESPACE,
                NamespaceOptions(
                    history_size=chat.personal_history_size,
                    history_ttl=chat.personal_history_ttl,
                ),
                PersonalChannels(),
            ),
        ]
    )


def limits_of(chat: ChatSettings) -> ConnectionLimits:
    return ConnectionLimits(
        max_frame_bytes=chat.max_frame_bytes,
        max_subscriptions=chat.max_subscriptions,
        command_rate=chat.command_rate,
        command_burst=chat.command_burst,
        max_queue_bytes=chat.max_queue_bytes,
        ping_interval=chat.ping_interval,
        connect_timeout=chat.connect_timeout,
        expiry_grace=chat.expiry_grace,
    )


def create_broker(settings: Settings, chat: ChatSettings) -> Broker:
    kind = chat.broker
    redis_url = chat.redis_url or settings.redis_url
    if kind == "auto":
        kind = "redis" if redis_url else "memory"
    if kind == "memory":
        return MemoryBroker()
    if kind == "redis":
        from engineroom.chat.realtime.broker_redis import RedisBroker

        if not redis_url:
            raise ValueError("ENGINEROOM_CHAT_BROKER=redis needs ENGINEROOM_REDIS_URL")
        return RedisBroker(redis_url, prefix=chat.redis_prefix)
    from engineroom.chat.realtime.broker_nats import NatsBroker

    if not chat.nats_url:
        raise ValueError("ENGINEROOM_CHAT_BROKER=nats needs ENGINEROOM_CHAT_NATS_URL")
    return NatsBroker(chat.nats_url, prefix=chat.redis_prefix)


class ChatRuntime:
    def __init__(self, platform: Platform, chat: ChatSettings, verifier: TokenVerifier) -> None:
        self.chat = chat
        self.broker = create_broker(platform.settings, chat)
        self.registry = default_registry(chat)
        self.hub = Hub(
            self.broker,
            self.registry,
            verifier,
            limits_of(chat),
            HANDLERS,
            presence_ttl=chat.presence_ttl,
            version=f"engineroom {__version__}",
        )

    async def start(self) -> None:
        await self.hub.start()

    async def drain(self) -> None:
        await self.hub.shutdown(self.chat.drain_timeout)

    async def stop(self) -> None:
        await self.hub.shutdown(self.chat.drain_timeout)
        await self.hub.close()


_RUNTIMES: weakref.WeakKeyDictionary[Platform, ChatRuntime] = weakref.WeakKeyDictionary()
# Event handlers get a session, not the platform: the session's engine leads back to it.
_BY_ENGINE: weakref.WeakKeyDictionary[AsyncEngine, ChatRuntime] = weakref.WeakKeyDictionary()


def register(platform: Platform, runtime: ChatRuntime) -> None:
    _RUNTIMES[platform] = runtime
    _BY_ENGINE[platform.database.engine] = runtime


def unregister(platform: Platform) -> None:
    _RUNTIMES.pop(platform, None)
    _BY_ENGINE.pop(platform.database.engine, None)


def runtime_of_session(session: AsyncSession) -> ChatRuntime | None:
    """The transport running beside the database ``session`` writes to, if any."""
    bind = session.bind
    return _BY_ENGINE.get(bind) if isinstance(bind, AsyncEngine) else None


def find_runtime(platform: object) -> ChatRuntime | None:
    """The running transport of ``platform``, if the chat module runs in it."""
    if not isinstance(platform, Platform):
        return None
    return _RUNTIMES.get(platform)
