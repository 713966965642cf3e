"""The server side of the transport, for the HTTP API and other modules.

Turns the protocol's errors into the module's ``AppError``s, and a broker that cannot be
reached into a 503, never a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from engineroom.chat.errors import (
    FeatureNotAvailable,
    InvalidChannel,
    RealtimeUnavailable,
    UnknownChannel,
    UnrecoverablePosition,
)
from engineroom.chat.realtime.broker import (
    BrokerError,
    HistoryPage,
    StreamPosition,
    UnrecoverablePositionError,
)
from engineroom.chat.realtime.protocol import JSON, Disconnect, ErrorCode, ReplyError
from engineroom.chat.realtime.runtime import ChatRuntime, find_runtime

logger = structlog.get_logger("engineroom.chat.realtime")


def runtime_or_503(platform: object) -> ChatRuntime:
    runtime = find_runtime(platform)
    if runtime is None:
        raise RealtimeUnavailable("The real-time transport is not running in this process.")
    return runtime


@asynccontextmanager
async def _errors(channel: str) -> AsyncIterator[None]:
    try:
        yield
    except ReplyError as error:
        if error.code is ErrorCode.UNKNOWN_CHANNEL:
            raise UnknownChannel(f"No channel namespace serves {channel!r}.") from None
        raise InvalidChannel(f"{channel!r} is not a valid channel name.") from None
    except UnrecoverablePositionError:
        raise UnrecoverablePosition(
            "The history no longer holds every publication after that position."
        ) from None
    except BrokerError as exc:
        logger.warning("chat_broker_unavailable", error=repr(exc))
        raise RealtimeUnavailable("The message broker cannot be reached.") from None


async def publish(
    runtime: ChatRuntime, channel: str, data: JSON, tags: dict[str, str] | None = None
) -> StreamPosition:
    async with _errors(channel):
        return await runtime.hub.publish(channel, data, tags=tags)


async def broadcast(
    runtime: ChatRuntime,
    channels: list[str],
    data: JSON,
    tags: dict[str, str] | None = None,
) -> list[StreamPosition | UnknownChannel | InvalidChannel]:
    """Publish to each channel; a bad channel is answered in its place, not for all."""
    results: list[StreamPosition | UnknownChannel | InvalidChannel] = []
    for channel in channels:
        try:
            results.append(await publish(runtime, channel, data, tags))
        except (UnknownChannel, InvalidChannel) as error:
            results.append(error)
    return results


async def history(
    runtime: ChatRuntime,
    channel: str,
    *,
    limit: int,
    since: StreamPosition | None,
    reverse: bool,
) -> HistoryPage:
    async with _errors(channel):
        options = runtime.registry.options(channel)
        if not options.recoverable:
            raise FeatureNotAvailable(f"Channel {channel!r} keeps no history.")
        if limit < 0 or limit > options.history_size:
            limit = options.history_size
        return await runtime.hub.history(channel, limit=limit, since=since, reverse=reverse)


async def presence(runtime: ChatRuntime, channel: str) -> dict[str, bytes]:
    async with _errors(channel):
        if not runtime.registry.options(channel).presence:
            raise FeatureNotAvailable(f"Channel {channel!r} keeps no presence.")
        return await runtime.hub.presence(channel)


async def disconnect(runtime: ChatRuntime, user: str, code: int, reason: str) -> None:
    async with _errors(""):
        await runtime.hub.disconnect_user(user, Disconnect(code, reason))
