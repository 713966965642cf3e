"""Payloads of read receipts, unread counts, typing and presence (REST and RPC)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engineroom.chat.receipts import ReadState, Receipt, ReceiptPage, UnreadSummary

MAX_PRESENCE_USERS = 100
PAGE_SIZE = 100
MAX_PAGE_SIZE = 500


class PresenceStatus(StrEnum):
    ONLINE = "online"
    """At least one connected device is in use."""
    AWAY = "away"
    """Connected, but every connected device reported ``away``."""
    OFFLINE = "offline"
    """No connection left."""


class DeviceStatus(StrEnum):
    """What one device may report about itself."""

    ONLINE = "online"
    AWAY = "away"


# ---- requests ------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadPosition(_In):
    """Read up to a message: give its id or its ``seq``, not both."""

    message_id: uuid.UUID | None = None
    seq: int | None = Field(default=None, ge=1, le=2**62)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.message_id is None) == (self.seq is None):
            raise ValueError("give either message_id or seq")
        return self


class RoomReadPosition(ReadPosition):
    """``chat.read`` over the WebSocket: the room and the position."""

    room_id: uuid.UUID


class TypingRequest(_In):
    """``chat.typing``: ``true`` when the user types in the room, ``false`` when they stop."""

    room_id: uuid.UUID
    typing: bool = Field(strict=True)


class PresenceRequest(_In):
    """``chat.presence``: what this device reports."""

    status: DeviceStatus


# ---- responses -----------------------------------------------------------------------------


class ReadStateRead(BaseModel):
    room_id: uuid.UUID
    last_read_seq: int = Field(description="Every message up to this seq is read.")
    last_seq: int = Field(description="The seq of the room's newest message.")
    unread: int = Field(description="Unread messages (see docs/chat.md for what counts).")
    mentions: int = Field(description="Unread messages that mention the caller.")

    @classmethod
    def of(cls, state: ReadState) -> ReadStateRead:
        return cls(
            room_id=state.room_id,
            last_read_seq=state.last_read_seq,
            last_seq=state.last_seq,
            unread=state.unread,
            mentions=state.mentions,
        )


class UnreadRead(BaseModel):
    rooms: list[ReadStateRead] = Field(description="Every room the caller is a member of.")
    unread: int = Field(description="The unread messages of all those rooms.")
    mentions: int = Field(description="The unread mentions of all those rooms.")

    @classmethod
    def of(cls, summary: UnreadSummary) -> UnreadRead:
        return cls(
            rooms=[ReadStateRead.of(state) for state in summary.rooms],
            unread=summary.unread,
            mentions=summary.mentions,
        )


class ReceiptRead(BaseModel):
    user_id: uuid.UUID
    last_read_seq: int
    last_read_at: datetime | None

    @classmethod
    def of(cls, receipt: Receipt) -> ReceiptRead:
        return cls(
            user_id=receipt.user_id,
            last_read_seq=receipt.last_read_seq,
            last_read_at=receipt.last_read_at,
        )


class ReceiptPageRead(BaseModel):
    receipts: list[ReceiptRead]
    next_cursor: uuid.UUID | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )

    @classmethod
    def of(cls, page: ReceiptPage) -> ReceiptPageRead:
        return cls(
            receipts=[ReceiptRead.of(receipt) for receipt in page.receipts],
            next_cursor=page.next_cursor,
        )


class PresenceRead(BaseModel):
    statuses: dict[uuid.UUID, PresenceStatus] = Field(description="User id -> status.")


class RoomPresenceRead(PresenceRead):
    next_cursor: uuid.UUID | None = Field(
        description="Pass as ?cursor= for the next page of members; null on the last page."
    )
