"""The chat module's facade: what other modules may use.

Other modules publish to real-time channels through ``publish``; subscribers of the
channel receive the data at once, and it stays in the channel's history for recovery.
"""

from __future__ import annotations

from engineroom.chat.realtime import service
from engineroom.chat.realtime.broker import StreamPosition
from engineroom.chat.realtime.protocol import JSON
from engineroom.core.platform import Platform


async def publish(
    platform: Platform, channel: str, data: JSON, *, tags: dict[str, str] | None = None
) -> StreamPosition:
    """Publish ``data`` to ``channel`` from the server.

    Raises ``UnknownChannel`` / ``InvalidChannel`` for a channel no namespace serves, and
    ``RealtimeUnavailable`` when the transport does not run in this process or its broker
    cannot be reached.
    """
    return await service.publish(service.runtime_or_503(platform), channel, data, tags)


__all__ = ["StreamPosition", "publish"]
