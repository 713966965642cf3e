"""The chat module's errors: a stable ``code`` and an HTTP status each."""

from __future__ import annotations

from engineroom.core.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
)


class UnknownChannel(NotFound):
    """The channel's namespace does not exist."""

    code = "chat_unknown_channel"


class InvalidChannel(BadRequest):
    code = "chat_invalid_channel"


class FeatureNotAvailable(AppError):
    """History or presence asked for a channel whose namespace keeps none."""

    code = "chat_not_available"
    status = 400


class UnrecoverablePosition(Conflict):
    """The history no longer holds everything after the position asked for."""

    code = "chat_unrecoverable_position"


class RealtimeUnavailable(ServiceUnavailable):
    code = "chat_realtime_unavailable"


# The chat domain. Modules of the domain append their errors below.


class RoomNotFound(NotFound):
    """Unknown room, or a private/direct room the caller may not see (same answer)."""

    code = "chat_room_not_found"


class NotAMember(Forbidden):
    code = "chat_not_a_member"


class BannedFromRoom(Forbidden):
    code = "chat_banned"


class MutedInRoom(Forbidden):
    code = "chat_muted"


class NotRoomModerator(Forbidden):
    """The action needs the room's owner or a moderator (or the identity moderator role)."""

    code = "chat_not_room_moderator"


class MessageNotFound(NotFound):
    code = "chat_message_not_found"
