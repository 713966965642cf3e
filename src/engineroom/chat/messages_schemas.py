"""Request and response bodies of messages (REST, and the data of the RPC methods), and
the one function that shapes a message as JSON for every channel (REST, RPC, live)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engineroom.chat.messages_repository import ReactionCount
from engineroom.chat.models import Message
from engineroom.core.clock import isoformat_z

URL_LENGTH = 2048
NAME_LENGTH = 255
_MAX_LISTED_ATTACHMENTS = 100
"""A bound on the work one request may cause; the setting (default 10) is the rule."""


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttachmentIn(_Input):
    """A link to a file kept elsewhere: an ``http``/``https`` URL and what it is."""

    url: str = Field(min_length=1, max_length=URL_LENGTH, examples=["https://example.com/a.png"])
    name: str | None = Field(default=None, min_length=1, max_length=NAME_LENGTH)
    content_type: str | None = Field(
        default=None,
        max_length=NAME_LENGTH,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$",
        examples=["image/png"],
    )
    size: int | None = Field(default=None, ge=0, description="Bytes.")


class MessageCreate(_Input):
    body: str = Field(examples=["Hello @bob, see the plan attached."])
    thread_root_id: uuid.UUID | None = Field(
        default=None, description="Reply in the thread of this message (a reply's root)."
    )
    attachments: list[AttachmentIn] = Field(
        default_factory=list, max_length=_MAX_LISTED_ATTACHMENTS
    )


class MessageUpdate(_Input):
    body: str


class SendData(MessageCreate):
    """``chat.send``: a message for ``room_id``."""

    room_id: uuid.UUID


class EditData(MessageUpdate):
    """``chat.edit``."""

    message_id: uuid.UUID


class MessageRef(_Input):
    """``chat.delete``."""

    message_id: uuid.UUID


class ReactionData(_Input):
    """``chat.react`` and ``chat.unreact``."""

    message_id: uuid.UUID
    emoji: str = Field(max_length=256)


# ---- responses ---------------------------------------------------------------------------


class UserRef(BaseModel):
    id: uuid.UUID
    username: str | None = Field(description="``null`` once the account is gone.")


class AttachmentRead(BaseModel):
    url: str
    name: str | None
    content_type: str | None
    size: int | None


class ReactionRead(BaseModel):
    emoji: str
    count: int
    me: bool = Field(description="Whether the caller is one of those who reacted.")


class MessageRead(BaseModel):
    id: uuid.UUID
    room_id: uuid.UUID
    seq: int = Field(description="The message's number in its room: 1, 2, 3, ...")
    author: UserRef
    body: str = Field(description="Empty once deleted.")
    thread_root_id: uuid.UUID | None
    reply_count: int
    last_reply_at: datetime | None
    mentions: list[UserRef]
    attachments: list[AttachmentRead]
    reactions: list[ReactionRead]
    created_at: datetime
    edited_at: datetime | None
    deleted: bool


class MessagePage(BaseModel):
    messages: list[MessageRead]
    has_more: bool = Field(description="More messages lie beyond this page, same direction.")


class ThreadPage(MessagePage):
    root: MessageRead


class SearchResults(BaseModel):
    messages: list[MessageRead] = Field(description="The best match first.")


# ---- JSON --------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return isoformat_z(moment) if moment is not None else None


def user_json(user_id: uuid.UUID, names: dict[uuid.UUID, str]) -> dict[str, Any]:
    return {"id": str(user_id), "username": names.get(user_id)}


def message_json(
    message: Message,
    names: dict[uuid.UUID, str],
    reactions: list[ReactionCount],
    *,
    live: bool = False,
) -> dict[str, Any]:
    """The message as every API shows it. ``names``: usernames by user id (author and
    mentioned users). Live data is the same for every subscriber, so its reactions carry
    no ``me``."""
    return {
        "id": str(message.id),
        "room_id": str(message.room_id),
        "seq": message.seq,
        "author": user_json(message.author_id, names),
        "body": message.body,
        "thread_root_id": str(message.thread_root_id) if message.thread_root_id else None,
        "reply_count": message.reply_count,
        "last_reply_at": _iso(message.last_reply_at),
        "mentions": [user_json(uuid.UUID(user), names) for user in message.mentions],
        "attachments": [dict(attachment) for attachment in message.attachments],
        "reactions": [
            {"emoji": r.emoji, "count": r.count}
            if live
            else {"emoji": r.emoji, "count": r.count, "me": r.me}
            for r in reactions
        ],
        "created_at": _iso(message.created_at),
        "edited_at": _iso(message.edited_at),
        "deleted": message.deleted_at is not None,
    }
