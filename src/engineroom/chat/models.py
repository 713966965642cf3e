"""The chat domain's tables (all prefixed ``chat_``).

Users live in the identity module: these tables store user ids only. Every room numbers
its messages with ``seq`` (1, 2, 3, ... taken from ``chat_room.last_seq`` under the room
row's lock), which makes cursors, read receipts and exact unread counts plain integer
comparisons. Indexed strings carry a length because MariaDB cannot index unbounded TEXT.

The message full-text index (``chat_message_fts``) is built by the migration with each
dialect's own DDL and has no model.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from engineroom.core.clock import new_id, utcnow
from engineroom.core.models import Base, UTCDateTime

ROOM_NAME_LENGTH = 100
ROOM_TOPIC_LENGTH = 500
KIND_LENGTH = 16
ROLE_LENGTH = 16
DIRECT_KEY_LENGTH = 80
EMOJI_LENGTH = 64
REASON_LENGTH = 500

# Counters that only grow; SQLite's INTEGER is already 64-bit.
_COUNTER = BigInteger().with_variant(Integer(), "sqlite")
# Reactions compare byte for byte: MariaDB's default utf8mb4 collations weigh every emoji
# outside the Basic Multilingual Plane the same (and ignore case), which would merge
# different reactions into one primary key.
_EMOJI = String(EMOJI_LENGTH).with_variant(
    mysql.VARCHAR(EMOJI_LENGTH, collation="utf8mb4_bin"), "mysql", "mariadb"
)


class RoomKind(StrEnum):
    PUBLIC = "public"
    """Listed; anyone signed in may join and read."""
    PRIVATE = "private"
    """Not listed; members add people (moderators and owners invite)."""
    INVITE_ONLY = "invite_only"
    """Listed by name, but joining needs an invite."""
    DIRECT = "direct"
    """A conversation between exactly two users, created once per pair."""


class MemberRole(StrEnum):
    OWNER = "owner"
    MODERATOR = "moderator"
    MEMBER = "member"


class Room(Base):
    __tablename__ = "chat_room"
    __table_args__ = (Index("ix_chat_room_kind_created_at", "kind", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH))
    name: Mapped[str | None] = mapped_column(String(ROOM_NAME_LENGTH), default=None)
    """``None`` for direct conversations."""
    topic: Mapped[str | None] = mapped_column(String(ROOM_TOPIC_LENGTH), default=None)
    created_by: Mapped[uuid.UUID] = mapped_column()
    direct_key: Mapped[str | None] = mapped_column(
        String(DIRECT_KEY_LENGTH), unique=True, default=None
    )
    """``<smaller user id>:<larger user id>`` for direct rooms: one room per pair."""
    last_seq: Mapped[int] = mapped_column(_COUNTER, default=0)
    """The ``seq`` of the room's newest message (0 before the first)."""
    member_count: Mapped[int] = mapped_column(Integer(), default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Member(Base):
    __tablename__ = "chat_member"

    room_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_room.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(ROLE_LENGTH), default=MemberRole.MEMBER.value)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_read_seq: Mapped[int] = mapped_column(_COUNTER, default=0)
    """Read receipt: every message up to this ``seq`` is read (on all the user's devices)."""
    last_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    muted_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    """A muted member reads but may not send until then."""


class Ban(Base):
    __tablename__ = "chat_ban"

    room_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_room.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    banned_by: Mapped[uuid.UUID] = mapped_column()
    reason: Mapped[str | None] = mapped_column(String(REASON_LENGTH), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    """``None``: until lifted."""


class Invite(Base):
    __tablename__ = "chat_invite"

    room_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_room.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, index=True)
    """The invited user."""
    invited_by: Mapped[uuid.UUID] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Message(Base):
    __tablename__ = "chat_message"
    __table_args__ = (
        UniqueConstraint("room_id", "seq"),
        Index("ix_chat_message_thread_root_id_seq", "thread_root_id", "seq"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    room_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chat_room.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(_COUNTER)
    author_id: Mapped[uuid.UUID] = mapped_column(index=True)
    body: Mapped[str] = mapped_column(Text())
    """Empty once the message is deleted (the row stays as a tombstone)."""
    thread_root_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    """The message this one replies to in a thread (always a root, never a reply)."""
    reply_count: Mapped[int] = mapped_column(Integer(), default=0)
    last_reply_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    mentions: Mapped[list[str]] = mapped_column(JSON(), default=list)
    """Ids of the users mentioned, as strings."""
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON(), default=list)
    """``[{"url", "name", "content_type", "size"}]``: links, never stored files."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    deleted_by: Mapped[uuid.UUID | None] = mapped_column(default=None)


class Reaction(Base):
    __tablename__ = "chat_reaction"

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_message.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    emoji: Mapped[str] = mapped_column(_EMOJI, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
