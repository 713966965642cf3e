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


# Rooms and membership.


class InvalidCursor(BadRequest):
    code = "chat_invalid_cursor"


class UserNotFound(NotFound):
    """The user named in the request (by id or username) does not exist."""

    code = "chat_user_not_found"


class MemberNotFound(NotFound):
    code = "chat_member_not_found"


class InviteNotFound(NotFound):
    code = "chat_invite_not_found"


class BanNotFound(NotFound):
    code = "chat_ban_not_found"


class CannotDirectMessageSelf(AppError):
    code = "chat_direct_self"
    status = 422


class DirectRoomRestricted(Conflict):
    """Direct rooms have exactly their two members: no joins, leaves, invites or moderation."""

    code = "chat_direct_room"


class InviteRequired(Forbidden):
    code = "chat_invite_required"


class AlreadyMember(Conflict):
    code = "chat_already_member"


class AlreadyInvited(Conflict):
    code = "chat_already_invited"


class NotRoomOwner(Forbidden):
    code = "chat_not_room_owner"


class ModerationRefused(Forbidden):
    """The target outranks the actor (the owner; a moderator for another moderator)."""

    code = "chat_moderation_refused"


class NotAUser(Forbidden):
    """Rooms belong to users; a service credential cannot act in them."""

    code = "chat_not_a_user"


# Messages.


class InvalidMessage(AppError):
    """A message body, attachment or thread reference the rules refuse (see the errors)."""

    code = "chat_invalid_message"
    status = 422


class MessageTooLong(AppError):
    code = "chat_message_too_long"
    status = 413


class MessageRejected(AppError):
    """A message filter (blocked words, repeated text, ...) refused the message."""

    code = "chat_message_rejected"
    status = 422


class NotMessageAuthor(Forbidden):
    """Only the author may edit; the author or the room's moderators may delete."""

    code = "chat_not_message_author"


class MessageDeleted(Conflict):
    """The message is deleted (a tombstone): it can no longer be edited or reacted to."""

    code = "chat_message_deleted"


class InvalidReaction(AppError):
    code = "chat_invalid_reaction"
    status = 422


class TooManyReactions(Conflict):
    code = "chat_too_many_reactions"


# Receipts, typing and presence.


class ReadPositionOutOfRange(BadRequest):
    """A read position past the room's newest message."""

    code = "chat_read_position_out_of_range"


class UnknownConnection(Conflict):
    """A per-device request (a status) from a connection this process does not hold."""

    code = "chat_unknown_connection"


# GraphQL.


class InvalidInput(AppError):
    """A GraphQL argument that breaks the rules the REST bodies and queries enforce (the
    same 422 ``validation_failed`` as REST, with the problems per field)."""

    code = "validation_failed"
    status = 422
