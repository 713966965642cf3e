"""Reactions: any short text without spaces (an emoji, a ``:shortcode:``) that members put
on a message, at most once each. Adding one twice, or removing one that is not there,
changes nothing and announces nothing."""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import events
from engineroom.chat import messages_repository as repository
from engineroom.chat.errors import InvalidReaction, MessageDeleted, TooManyReactions
from engineroom.chat.history import render
from engineroom.chat.messages import Messaging, writable_message
from engineroom.chat.models import EMOJI_LENGTH, Message
from engineroom.core.auth import Principal

# Controls, separators (spaces, line breaks) and unpaired surrogates; format characters
# stay allowed because emoji sequences join with ZERO WIDTH JOINER.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zs", "Zl", "Zp"})


def checked_emoji(emoji: str) -> str:
    """The reaction if it has 1 to 64 characters, none of them a space or a control."""
    if not 1 <= len(emoji) <= EMOJI_LENGTH:
        raise InvalidReaction(f"A reaction has 1 to {EMOJI_LENGTH} characters.")
    if any(char.isspace() or unicodedata.category(char) in _REFUSED_CATEGORIES for char in emoji):
        raise InvalidReaction("A reaction may not contain spaces or control characters.")
    return emoji


async def react(
    session: AsyncSession,
    *,
    principal: Principal,
    message_id: uuid.UUID,
    emoji: str,
    messaging: Messaging,
) -> dict[str, Any]:
    """Add the caller's ``emoji`` reaction (idempotent); the message as JSON."""
    emoji = checked_emoji(emoji)
    message, _, member = await writable_message(session, message_id, principal)
    if message.deleted_at is not None:
        raise MessageDeleted("A deleted message takes no reactions.")
    user_id = member.user_id
    if not await repository.has_reaction(session, message.id, user_id, emoji):
        limit = messaging.settings.reactions_per_user
        if await repository.reaction_kinds_of(session, message.id, user_id) >= limit:
            raise TooManyReactions(f"One person may put at most {limit} reactions on a message.")
        if await repository.add_reaction(session, message.id, user_id, emoji):
            await _record(session, events.REACTION_ADDED, message, user_id, emoji)
    return (await render(session, [message], viewer=user_id))[0]


async def unreact(
    session: AsyncSession,
    *,
    principal: Principal,
    message_id: uuid.UUID,
    emoji: str,
) -> dict[str, Any]:
    """Remove the caller's ``emoji`` reaction (idempotent); the message as JSON."""
    emoji = checked_emoji(emoji)
    message, _, member = await writable_message(session, message_id, principal)
    if await repository.remove_reaction(session, message.id, member.user_id, emoji):
        await _record(session, events.REACTION_REMOVED, message, member.user_id, emoji)
    return (await render(session, [message], viewer=member.user_id))[0]


async def _record(
    session: AsyncSession, event_type: str, message: Message, user_id: uuid.UUID, emoji: str
) -> None:
    count = await repository.reaction_count(session, message.id, emoji)
    events.record(
        session,
        event_type,
        room_id=message.room_id,
        live={
            "message_id": str(message.id),
            "emoji": emoji,
            "user_id": str(user_id),
            "count": count,
        },
        message_id=str(message.id),
    )
