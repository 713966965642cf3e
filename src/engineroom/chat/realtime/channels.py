"""Channel names, namespaces and the permission hook the chat domain fills.

A channel name is ``[namespace:]rest``; ``rest`` may end with ``#user1,user2`` to make a
user-limited channel only those users may subscribe to (``#<user id>`` is a user's personal
channel, in the default namespace ``""``). Each namespace has options (history size and TTL,
presence, join/leave, whether subscribers may publish) and a ``ChannelAuthorizer`` that
decides who may subscribe and publish. Unknown namespaces are refused with "unknown
channel".

Built in: ``public:`` (anyone authenticated), ``room:`` (refused until the chat domain
registers its membership authorizer) and personal channels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from engineroom.chat.realtime.protocol import ErrorCode, ReplyError
from engineroom.core.auth import Principal

MAX_CHANNEL_LENGTH = 255
NAMESPACE_SEPARATOR = ":"
USER_SEPARATOR = "#"
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Printable ASCII without spaces: channel names end up in Redis keys, logs and URLs.
_CHANNEL = re.compile(rf"[\x21-\x7e]{{1,{MAX_CHANNEL_LENGTH}}}")


class ChannelAction(StrEnum):
    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"


@dataclass(frozen=True, slots=True)
class ChannelName:
    name: str
    namespace: str
    """``""`` for the default namespace."""
    users: frozenset[str] | None
    """The users allowed on a user-limited channel (after ``#``), else ``None``."""


@dataclass(frozen=True)
class NamespaceOptions:
    history_size: int = 0
    """Publications kept per channel for history and recovery (0: none)."""
    history_ttl: float = 0.0
    """Seconds a publication stays in the history."""
    presence: bool = False
    join_leave: bool = False
    """Publish join/leave events to subscribers that ask for them."""
    client_publish: bool = False
    """Subscribers may publish from their connection (else only the server API may)."""

    @property
    def recoverable(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0


class ChannelAuthorizer(Protocol):
    """Decides whether a principal may act on a channel of one namespace."""

    async def authorize(
        self, principal: Principal, channel: ChannelName, action: ChannelAction
    ) -> bool: ...


class AllowAuthenticated:
    """Every authenticated principal may subscribe; publishing follows the namespace."""

    async def authorize(
        self, principal: Principal, channel: ChannelName, action: ChannelAction
    ) -> bool:
        return True


class DenyAll:
    """The placeholder for namespaces whose owner has not registered its authorizer."""

    async def authorize(
        self, principal: Principal, channel: ChannelName, action: ChannelAction
    ) -> bool:
        return False


class PersonalChannels:
    """The default namespace only holds user-limited channels (``#<user id>``)."""

    async def authorize(
        self, principal: Principal, channel: ChannelName, action: ChannelAction
    ) -> bool:
        # The user list itself is checked by the registry before any authorizer.
        return channel.users is not None


@dataclass
class Namespace:
    name: str
    options: NamespaceOptions
    authorizer: ChannelAuthorizer


def parse_channel(name: str) -> ChannelName:
    """Split a channel name; raise a bad-request ``ReplyError`` when it is malformed."""
    if not _CHANNEL.fullmatch(name):
        raise ReplyError(ErrorCode.BAD_REQUEST, "invalid channel name")
    namespace, separator, _rest = name.partition(NAMESPACE_SEPARATOR)
    if not separator:
        namespace = ""
    elif not _NAMESPACE.fullmatch(namespace):
        raise ReplyError(ErrorCode.UNKNOWN_CHANNEL)
    users: frozenset[str] | None = None
    if USER_SEPARATOR in name:
        listed = name.rpartition(USER_SEPARATOR)[2]
        users = frozenset(user for user in listed.split(",") if user)
    return ChannelName(name=name, namespace=namespace, users=users)


class ChannelRegistry:
    """The namespaces a hub serves, with their options and authorizers."""

    def __init__(self, namespaces: Iterable[Namespace]) -> None:
        self._namespaces = {namespace.name: namespace for namespace in namespaces}

    def register(self, namespace: Namespace) -> None:
        self._namespaces[namespace.name] = namespace

    def set_authorizer(self, namespace: str, authorizer: ChannelAuthorizer) -> None:
        """Let a domain decide access to one namespace (the chat rooms, for ``room``)."""
        self.namespace(namespace).authorizer = authorizer

    def namespace(self, name: str) -> Namespace:
        try:
            return self._namespaces[name]
        except KeyError:
            raise ReplyError(ErrorCode.UNKNOWN_CHANNEL) from None

    def resolve(self, channel: str) -> tuple[ChannelName, Namespace]:
        parsed = parse_channel(channel)
        return parsed, self.namespace(parsed.namespace)

    def options(self, channel: str) -> NamespaceOptions:
        return self.resolve(channel)[1].options

    async def check(
        self, principal: Principal, channel: ChannelName, action: ChannelAction
    ) -> Namespace:
        """Raise "permission denied" unless ``principal`` may do ``action`` on ``channel``."""
        namespace = self.namespace(channel.namespace)
        if channel.users is not None and principal.subject not in channel.users:
            raise ReplyError(ErrorCode.PERMISSION_DENIED)
        if action is ChannelAction.PUBLISH and not namespace.options.client_publish:
            raise ReplyError(ErrorCode.PERMISSION_DENIED)
        if not await namespace.authorizer.authorize(principal, channel, action):
            raise ReplyError(ErrorCode.PERMISSION_DENIED)
        return namespace
