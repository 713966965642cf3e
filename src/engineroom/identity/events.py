"""The event types the identity module publishes and their payloads (see ``public.py``)."""

from __future__ import annotations

from engineroom.identity.models import User

EVENT_USER_REGISTERED = "identity.user.registered"
EVENT_USER_UPDATED = "identity.user.updated"
EVENT_USER_DISABLED = "identity.user.disabled"
EVENT_USER_ENABLED = "identity.user.enabled"
EVENT_USER_DELETED = "identity.user.deleted"
EVENT_USER_LOGGED_IN = "identity.user.logged_in"


def user_snapshot(user: User) -> dict[str, str | None]:
    """The payload of ``registered``/``updated``: the whole public profile after the change."""
    return {
        "user_id": str(user.id),
        "username": user.username,
        "email": user.email,
        "bio": user.bio,
        "image": user.image,
    }


def user_reference(user: User) -> dict[str, str | None]:
    """The payload of ``disabled``/``enabled``/``deleted``."""
    return {"user_id": str(user.id), "username": user.username}
