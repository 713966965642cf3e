"""The chat module's errors: a stable ``code`` and an HTTP status each."""

from __future__ import annotations

from engineroom.core.errors import AppError, BadRequest, Conflict, NotFound, ServiceUnavailable


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
