"""Request and response bodies of the rooms and membership routes (snake_case JSON)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engineroom.chat.models import REASON_LENGTH, ROOM_NAME_LENGTH, ROOM_TOPIC_LENGTH, Ban
from engineroom.chat.rooms import InviteView, MemberView, RoomView

MAX_MINUTES = 366 * 24 * 60
"""Mutes and timed bans last at most a year (a ban without ``minutes`` lasts until lifted)."""
USERNAME_LENGTH = 64


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _clean_name(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


def _clean_topic(value: str | None) -> str | None:
    return (value.strip() or None) if value is not None else None


class RoomCreate(_Input):
    name: str = Field(min_length=1, max_length=ROOM_NAME_LENGTH, examples=["general"])
    kind: Literal["public", "private", "invite_only"] = "public"
    topic: str | None = Field(default=None, max_length=ROOM_TOPIC_LENGTH)

    _name = field_validator("name")(_clean_name)
    _topic = field_validator("topic")(_clean_topic)


class RoomUpdate(_Input):
    """Only the fields sent change; ``topic: null`` clears the topic."""

    name: str | None = Field(default=None, min_length=1, max_length=ROOM_NAME_LENGTH)
    topic: str | None = Field(default=None, max_length=ROOM_TOPIC_LENGTH)

    _name = field_validator("name")(_clean_name)
    _topic = field_validator("topic")(_clean_topic)

    @model_validator(mode="after")
    def _name_not_null(self) -> Self:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null")
        return self


class UserRef(_Input):
    """A user, by id or by username (exactly one of them)."""

    user_id: uuid.UUID | None = None
    username: str | None = Field(default=None, min_length=1, max_length=USERNAME_LENGTH)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.user_id is None) == (self.username is None):
            raise ValueError("give either user_id or username")
        return self


class BanCreate(_Input):
    reason: str | None = Field(default=None, max_length=REASON_LENGTH)
    minutes: int | None = Field(
        default=None, ge=1, le=MAX_MINUTES, description="Omit for a ban until lifted."
    )


class MuteCreate(_Input):
    minutes: int = Field(ge=1, le=MAX_MINUTES)


class RoleChange(_Input):
    role: Literal["moderator", "member"]


class OwnershipTransfer(_Input):
    user_id: uuid.UUID


# ---- responses ---------------------------------------------------------------------------


class MembershipRead(BaseModel):
    role: str
    joined_at: datetime
    muted_until: datetime | None
    last_read_seq: int


class RoomRead(BaseModel):
    id: uuid.UUID
    kind: str
    name: str | None = Field(description="null for direct rooms.")
    topic: str | None
    created_by: uuid.UUID
    member_count: int
    last_seq: int = Field(description="The seq of the newest message (0 before any).")
    created_at: datetime
    updated_at: datetime
    peer_id: uuid.UUID | None = Field(
        default=None, description="Direct rooms: the other user of the pair."
    )
    membership: MembershipRead | None = Field(description="The caller's; null for non-members.")

    @classmethod
    def of(cls, view: RoomView) -> RoomRead:
        room, member = view.room, view.member
        return cls(
            id=room.id,
            kind=room.kind,
            name=room.name,
            topic=room.topic,
            created_by=room.created_by,
            member_count=room.member_count,
            last_seq=room.last_seq,
            created_at=room.created_at,
            updated_at=room.updated_at,
            peer_id=view.peer_id,
            membership=None
            if member is None
            else MembershipRead(
                role=member.role,
                joined_at=member.joined_at,
                muted_until=member.muted_until,
                last_read_seq=member.last_read_seq,
            ),
        )


class _Page(BaseModel):
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )


class RoomList(_Page):
    rooms: list[RoomRead]


class MemberRead(BaseModel):
    user_id: uuid.UUID
    username: str | None = Field(description="null when the account no longer exists.")
    role: str
    joined_at: datetime
    muted_until: datetime | None

    @classmethod
    def of(cls, view: MemberView) -> MemberRead:
        member = view.member
        return cls(
            user_id=member.user_id,
            username=view.username,
            role=member.role,
            joined_at=member.joined_at,
            muted_until=member.muted_until,
        )


class MemberList(_Page):
    members: list[MemberRead]


class RoomSummary(BaseModel):
    id: uuid.UUID
    kind: str
    name: str | None
    topic: str | None
    member_count: int


class InviteRead(BaseModel):
    room: RoomSummary
    user_id: uuid.UUID
    username: str | None
    invited_by: uuid.UUID
    created_at: datetime

    @classmethod
    def of(cls, view: InviteView) -> InviteRead:
        room = view.room
        return cls(
            room=RoomSummary(
                id=room.id,
                kind=room.kind,
                name=room.name,
                topic=room.topic,
                member_count=room.member_count,
            ),
            user_id=view.invite.user_id,
            username=view.username,
            invited_by=view.invite.invited_by,
            created_at=view.invite.created_at,
        )


class InviteList(_Page):
    invites: list[InviteRead]


class BanRead(BaseModel):
    room_id: uuid.UUID
    user_id: uuid.UUID
    banned_by: uuid.UUID
    reason: str | None
    created_at: datetime
    expires_at: datetime | None = Field(description="null: until lifted.")

    @classmethod
    def of(cls, ban: Ban) -> BanRead:
        return cls(
            room_id=ban.room_id,
            user_id=ban.user_id,
            banned_by=ban.banned_by,
            reason=ban.reason,
            created_at=ban.created_at,
            expires_at=ban.expires_at,
        )


class BanList(_Page):
    bans: list[BanRead]
