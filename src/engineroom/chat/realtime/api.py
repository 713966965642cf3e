"""The server HTTP API: ``POST /api/v1/chat/realtime/{publish,broadcast,history,presence,
presence_stats,disconnect}``, for backends and other services.

Callers authenticate with an API key (``X-API-Key``) or a token whose principal holds
``chat:realtime:publish``. Publications sent here carry no client info.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from engineroom.chat.errors import (
    FeatureNotAvailable,
    InvalidChannel,
    RealtimeUnavailable,
    UnknownChannel,
    UnrecoverablePosition,
)
from engineroom.chat.realtime import service
from engineroom.chat.realtime.broker import StoredPublication, StreamPosition
from engineroom.chat.realtime.commands import count_users
from engineroom.chat.realtime.runtime import ChatRuntime
from engineroom.core.auth import require
from engineroom.core.errors import AppError, Forbidden, Unauthorized, error_responses

PUBLISH_PERMISSION = "chat:realtime:publish"
MAX_BROADCAST_CHANNELS = 1000

Channel = Annotated[str, Field(min_length=1, max_length=255)]
Tags = Annotated[dict[str, str], Field(max_length=32)]


def _runtime(request: Request) -> ChatRuntime:
    return service.runtime_or_503(getattr(request.app.state, "platform", None))


RuntimeDep = Annotated[ChatRuntime, Depends(_runtime)]

router = APIRouter(
    prefix="/api/v1/chat/realtime",
    tags=["chat"],
    dependencies=[Depends(require(PUBLISH_PERMISSION))],
)


def _responses(*errors: type[AppError]) -> dict[int | str, dict[str, object]]:
    return dict(error_responses(Unauthorized, Forbidden, RealtimeUnavailable, *errors))


class Position(BaseModel):
    offset: int = Field(ge=0)
    epoch: str = Field(max_length=64)


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    data: JsonValue
    tags: Tags | None = None


class BroadcastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[Channel] = Field(min_length=1, max_length=MAX_BROADCAST_CHANNELS)
    data: JsonValue
    tags: Tags | None = None


class BroadcastItem(BaseModel):
    channel: str
    result: Position | None = None
    error: str | None = None
    """The error code when this channel could not be published to."""


class BroadcastResult(BaseModel):
    responses: list[BroadcastItem]


class HistoryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    limit: int = Field(default=10, ge=-1, le=100_000)
    """How many publications (-1: all the channel keeps, 0: only the position)."""
    since: Position | None = None
    reverse: bool = False


class PublicationRead(BaseModel):
    offset: int
    data: JsonValue
    info: dict[str, JsonValue] | None = None
    tags: dict[str, str] | None = None


class HistoryResult(BaseModel):
    publications: list[PublicationRead]
    offset: int
    epoch: str


class ChannelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel


class PresenceResult(BaseModel):
    presence: dict[str, dict[str, JsonValue]]


class PresenceStatsResult(BaseModel):
    num_clients: int
    num_users: int


class DisconnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=255)
    code: int = Field(default=3503, ge=3000, le=4999)
    """3000-3499 and 4000-4499 let the clients reconnect; the others do not."""
    reason: str = Field(default="force disconnect", max_length=100)


def _position(position: StreamPosition) -> Position:
    return Position(offset=position.offset, epoch=position.epoch)


def _publication(stored: StoredPublication) -> PublicationRead:
    fields = orjson.loads(b"{" + stored.body + b"}")
    return PublicationRead(offset=stored.offset, **fields)


@router.post(
    "/publish", response_model=Position, responses=_responses(UnknownChannel, InvalidChannel)
)
async def publish(body: PublishRequest, runtime: RuntimeDep) -> Position:
    return _position(await service.publish(runtime, body.channel, body.data, body.tags))


@router.post(
    "/broadcast",
    response_model=BroadcastResult,
    responses=_responses(),
)
async def broadcast(body: BroadcastRequest, runtime: RuntimeDep) -> BroadcastResult:
    results = await service.broadcast(runtime, body.channels, body.data, body.tags)
    return BroadcastResult(
        responses=[
            BroadcastItem(channel=channel, result=_position(result))
            if isinstance(result, StreamPosition)
            else BroadcastItem(channel=channel, error=result.code)
            for channel, result in zip(body.channels, results, strict=True)
        ]
    )


@router.post(
    "/history",
    response_model=HistoryResult,
    responses=_responses(
        UnknownChannel, InvalidChannel, FeatureNotAvailable, UnrecoverablePosition
    ),
)
async def history(body: HistoryRequest, runtime: RuntimeDep) -> HistoryResult:
    since = StreamPosition(body.since.offset, body.since.epoch) if body.since else None
    page = await service.history(
        runtime, body.channel, limit=body.limit, since=since, reverse=body.reverse
    )
    return HistoryResult(
        publications=[_publication(item) for item in page.publications],
        offset=page.position.offset,
        epoch=page.position.epoch,
    )


@router.post(
    "/presence",
    response_model=PresenceResult,
    responses=_responses(UnknownChannel, InvalidChannel, FeatureNotAvailable),
)
async def presence(body: ChannelRequest, runtime: RuntimeDep) -> PresenceResult:
    clients = await service.presence(runtime, body.channel)
    return PresenceResult(presence={client: orjson.loads(info) for client, info in clients.items()})


@router.post(
    "/presence_stats",
    response_model=PresenceStatsResult,
    responses=_responses(UnknownChannel, InvalidChannel, FeatureNotAvailable),
)
async def presence_stats(body: ChannelRequest, runtime: RuntimeDep) -> PresenceStatsResult:
    clients = await service.presence(runtime, body.channel)
    return PresenceStatsResult(num_clients=len(clients), num_users=count_users(clients))


@router.post("/disconnect", status_code=204, responses=_responses())
async def disconnect(body: DisconnectRequest, runtime: RuntimeDep) -> None:
    await service.disconnect(runtime, body.user, body.code, body.reason)
