"""What the chat domain plugs into a starting transport: the ``room`` namespace's
authorizer and the RPC methods. Each part of the domain adds its installer here."""

from __future__ import annotations

from collections.abc import Callable

from engineroom.chat import activity, authorizer, messages_rpc
from engineroom.chat.realtime.runtime import ChatRuntime
from engineroom.core.platform import Platform

Installer = Callable[[Platform, ChatRuntime], None]

INSTALLERS: tuple[Installer, ...] = (authorizer.install, messages_rpc.install, activity.install)
