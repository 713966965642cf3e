"""Sending, editing and deleting messages.

A message gets the room's next ``seq`` under the room row's lock (see
``messages_repository.take_next_seq``), passes the platform's filters (``filters.py``),
has its ``@username`` mentions resolved through the identity module, is indexed for
search, and is announced with ``chat.message.sent`` on the room's channel and on the
personal channel of each mentioned member. Edits run the same checks and recompute the
mentions; a deletion leaves a tombstone (empty body, no attachments, mentions or
reactions) in place so that threads and read positions keep their shape.

The same functions serve REST and the WebSocket RPC methods.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

import structlog
from limits.errors import StorageError
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import access, events
from engineroom.chat import messages_repository as repository
from engineroom.chat.config import ChatSettings
from engineroom.chat.errors import (
    InvalidMessage,
    MessageDeleted,
    MessageNotFound,
    MessageTooLong,
    NotMessageAuthor,
    RoomNotFound,
)
from engineroom.chat.filters import FilterRegistry, filters_for, settings_of
from engineroom.chat.history import names_of
from engineroom.chat.messages_schemas import AttachmentIn, MessageCreate, message_json
from engineroom.chat.models import Member, Message, Room
from engineroom.chat.search import MessageSearch, message_search
from engineroom.core.auth import Principal
from engineroom.core.clock import isoformat_z, new_id, utcnow
from engineroom.core.errors import RateLimited
from engineroom.core.platform import Platform
from engineroom.core.ratelimit import RateLimiter
from engineroom.identity import public as identity

logger = structlog.get_logger("engineroom.chat.messages")

# C0 controls other than tab and line breaks, and DEL: invisible, and NUL is refused by
# PostgreSQL's text type.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9_.-]{2,31})")
_URL_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True)
class Messaging:
    """What the message use cases need from the platform, built once per platform."""

    settings: ChatSettings
    limiter: RateLimiter
    filters: FilterRegistry
    search: MessageSearch


_MESSAGING: WeakKeyDictionary[Platform, Messaging] = WeakKeyDictionary()


def messaging_for(platform: Platform, chat: ChatSettings | None = None) -> Messaging:
    """The platform's ``Messaging``, built on first use from ``chat`` (default: the chat
    settings of the running transport)."""
    found = _MESSAGING.get(platform)
    if found is None:
        settings = chat or settings_of(platform)
        found = Messaging(
            settings=settings,
            limiter=platform.rate_limiter,
            filters=filters_for(platform, settings),
            search=message_search(platform.database.dialect),
        )
        _MESSAGING[platform] = found
    return found


async def charge_send(messaging: Messaging, principal: Principal) -> dict[str, str]:
    """Count one message against the sender's rate limit; the ``RateLimit-*`` headers.

    Raises ``RateLimited`` (429 with ``Retry-After``; error 111 over the WebSocket).
    """
    limit = messaging.settings.message_rate_limit
    try:
        result = await messaging.limiter.hit(limit, "chat.message", principal.subject)
    except StorageError as exc:
        # Fail open, like every rate limit: /readyz reports the storage outage.
        logger.error("chat_rate_limit_unavailable", error=str(exc))
        return {}
    headers = result.headers()
    if not result.allowed:
        headers["Retry-After"] = str(result.retry_after)
        raise RateLimited(
            f"Too many messages; wait {result.retry_after} s before sending again.",
            headers=headers,
        )
    return headers


# ---- validation --------------------------------------------------------------------------


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a JSON escape
        return False
    return True


def checked_body(body: str, settings: ChatSettings) -> str:
    """The body if the rules allow it: 1 to ``message_max_length`` characters, some of
    them visible, no control characters other than tabs and line breaks."""
    limit = settings.message_max_length
    if len(body) > limit:
        raise MessageTooLong(
            f"A message may have at most {limit} characters; this one has {len(body)}."
        )
    if not body.strip():
        raise InvalidMessage(
            "The message is empty.", field_errors={"body": ["must contain visible text"]}
        )
    if _CONTROL.search(body) or not _encodable(body):
        raise InvalidMessage(
            "The message contains control characters.",
            field_errors={"body": ["must not contain control characters"]},
        )
    return body


def _url_problem(url: str) -> str | None:
    if any(char.isspace() or not char.isprintable() for char in url) or not _encodable(url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in _URL_SCHEMES:
        return "must be an http or https URL"
    if not host:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    return None


def _attachment_problems(attachment: AttachmentIn, settings: ChatSettings) -> dict[str, str]:
    problems: dict[str, str] = {}
    url_problem = _url_problem(attachment.url)
    if url_problem is not None:
        problems["url"] = url_problem
    if attachment.name is not None and (
        _CONTROL.search(attachment.name) or not _encodable(attachment.name)
    ):
        problems["name"] = "must not contain control characters"
    limit = settings.message_max_attachment_size
    if attachment.size is not None and attachment.size > limit:
        problems["size"] = f"must be at most {limit} bytes"
    return problems


def checked_attachments(
    attachments: Sequence[AttachmentIn], settings: ChatSettings
) -> list[dict[str, Any]]:
    """Attachments as stored: links only (``http``/``https``), at most the setting's count."""
    limit = settings.message_max_attachments
    if len(attachments) > limit:
        raise InvalidMessage(
            f"A message may carry at most {limit} attachments.",
            field_errors={"attachments": [f"at most {limit} items"]},
        )
    field_errors: dict[str, list[str]] = {}
    for index, attachment in enumerate(attachments):
        for name, problem in _attachment_problems(attachment, settings).items():
            field_errors[f"attachments.{index}.{name}"] = [problem]
    if field_errors:
        raise InvalidMessage("An attachment is not valid.", field_errors=field_errors)
    return [attachment.model_dump() for attachment in attachments]


# ---- mentions ----------------------------------------------------------------------------


def mentioned_names(body: str, limit: int) -> list[str]:
    """The distinct ``@username`` tokens of ``body`` in order (at most ``limit``)."""
    names: dict[str, str] = {}
    for match in _MENTION.finditer(body):
        # A sentence may end right after a name: "thanks @bob."
        name = match.group(1).rstrip(".-")
        if len(name) >= 3 and name.casefold() not in names:
            names[name.casefold()] = name
            if len(names) >= limit:
                break
    return list(names.values())


async def resolve_mentions(
    session: AsyncSession, body: str, settings: ChatSettings
) -> dict[uuid.UUID, str]:
    """The active users ``body`` mentions, by id in the order of their first mention, with
    their usernames (one batch whatever the number of names)."""
    names = mentioned_names(body, settings.message_max_mentions)
    users = await identity.get_users_by_usernames(session, names)
    found: dict[uuid.UUID, str] = {}
    for name in names:
        user = users.get(name)
        if user is not None and user.is_active:
            found[user.id] = user.username
    return found


async def _mentioned_members(
    session: AsyncSession, room: Room, mentioned: Sequence[uuid.UUID], author: uuid.UUID
) -> set[uuid.UUID]:
    """Who gets the message on their personal channel: mentioned members, not the author."""
    others = [user for user in mentioned if user != author]
    return await repository.members_among(session, room.id, others)


# ---- use cases ---------------------------------------------------------------------------


async def _thread_root(
    session: AsyncSession, room_id: uuid.UUID, root_id: uuid.UUID | None
) -> Message | None:
    """The thread to reply in: a reply to a reply goes to the same thread's root."""
    if root_id is None:
        return None
    root = await repository.message_in_room(session, room_id, root_id)
    if root is not None and root.thread_root_id is not None:
        root = await repository.message_in_room(session, room_id, root.thread_root_id)
    if root is None:
        raise InvalidMessage(
            "The message to reply to is not in this room.",
            field_errors={"thread_root_id": ["names no message of this room"]},
        )
    return root


async def _insert(
    session: AsyncSession,
    room: Room,
    *,
    author_id: uuid.UUID,
    body: str,
    root: Message | None,
    mentioned: Sequence[uuid.UUID],
    attachments: list[dict[str, Any]],
) -> Message:
    message = Message(
        id=new_id(),
        room_id=room.id,
        seq=await repository.take_next_seq(session, room),
        author_id=author_id,
        body=body,
        thread_root_id=root.id if root is not None else None,
        reply_count=0,
        mentions=[str(user) for user in mentioned],
        attachments=attachments,
        created_at=utcnow(),
        last_reply_at=None,
        edited_at=None,
        deleted_at=None,
        deleted_by=None,
    )
    session.add(message)
    await session.flush()
    return message


async def _count_reply(session: AsyncSession, root: Message, reply: Message) -> dict[str, Any]:
    """Count ``reply`` on its thread's root; the root's new counters for live clients."""
    await repository.count_reply(session, root.id, reply.created_at)
    await session.refresh(root, ["reply_count", "last_reply_at"])
    return {
        "id": str(root.id),
        "reply_count": root.reply_count,
        "last_reply_at": isoformat_z(reply.created_at),
    }


async def send_message(
    session: AsyncSession,
    *,
    principal: Principal,
    room_id: uuid.UUID,
    draft: MessageCreate,
    messaging: Messaging,
) -> dict[str, Any]:
    """Post ``draft`` in the room; the stored message as JSON."""
    settings = messaging.settings
    room, member = await access.writable_room(session, room_id, principal)
    body = checked_body(draft.body, settings)
    attachments = checked_attachments(draft.attachments, settings)
    root = await _thread_root(session, room.id, draft.thread_root_id)
    body = await messaging.filters.apply(body, principal, room, editing=False)
    mentioned = await resolve_mentions(session, body, settings)
    message = await _insert(
        session,
        room,
        author_id=member.user_id,
        body=body,
        root=root,
        mentioned=list(mentioned),
        attachments=attachments,
    )
    await messaging.search.put(session, message.id, message.room_id, body)
    names = {**mentioned, **await names_of(session, {member.user_id})}
    live: dict[str, Any] = {"message": message_json(message, names, [], live=True)}
    if root is not None:
        live["root"] = await _count_reply(session, root, message)
    events.record(
        session,
        events.MESSAGE_SENT,
        room_id=room.id,
        live=live,
        users=await _mentioned_members(session, room, list(mentioned), member.user_id),
        message_id=str(message.id),
        author_id=str(member.user_id),
    )
    return message_json(message, names, [])


async def _message_to_change(
    session: AsyncSession, message_id: uuid.UUID, principal: Principal
) -> tuple[Message, access.RoomAccess]:
    message = await repository.get_message(session, message_id)
    if message is None:
        raise MessageNotFound("No such message.")
    try:
        room = await access.room_access(session, message.room_id, principal)
    except RoomNotFound:
        raise MessageNotFound("No such message.") from None
    return message, room


async def writable_message(
    session: AsyncSession, message_id: uuid.UUID, principal: Principal
) -> tuple[Message, Room, Member]:
    """The message, its room and the principal's membership, if they may write there now;
    a message of a room they may not see is as unknown as one that does not exist."""
    message = await repository.get_message(session, message_id)
    if message is None:
        raise MessageNotFound("No such message.")
    try:
        room, member = await access.writable_room(session, message.room_id, principal)
    except RoomNotFound:
        raise MessageNotFound("No such message.") from None
    return message, room, member


async def edit_message(
    session: AsyncSession,
    *,
    principal: Principal,
    message_id: uuid.UUID,
    body: str,
    messaging: Messaging,
) -> dict[str, Any]:
    """Replace the body of the caller's own message; mentions are found again."""
    message, room, member = await writable_message(session, message_id, principal)
    if message.author_id != member.user_id:
        raise NotMessageAuthor("Only the author may edit a message.")
    if message.deleted_at is not None:
        raise MessageDeleted("The message is deleted.")
    body = checked_body(body, messaging.settings)
    body = await messaging.filters.apply(body, principal, room, editing=True)
    mentioned = await resolve_mentions(session, body, messaging.settings)
    before = set(message.mentions)
    newly = [user for user in mentioned if str(user) not in before]
    message.body = body
    message.mentions = [str(user) for user in mentioned]
    message.edited_at = utcnow()
    await session.flush()
    await messaging.search.put(session, message.id, message.room_id, body)
    names = {**mentioned, **await names_of(session, {member.user_id})}
    reactions = (await repository.reactions_of(session, [message.id], member.user_id)).get(
        message.id, []
    )
    events.record(
        session,
        events.MESSAGE_EDITED,
        room_id=room.id,
        live={"message": message_json(message, names, reactions, live=True)},
        users=await _mentioned_members(session, room, newly, member.user_id),
        message_id=str(message.id),
    )
    return message_json(message, names, reactions)


async def delete_message(
    session: AsyncSession, *, principal: Principal, message_id: uuid.UUID, messaging: Messaging
) -> None:
    """Leave a tombstone in the message's place (its author, the room's owner and
    moderators, and holders of ``chat:message:delete`` may). Deleting a deleted message
    changes nothing."""
    message, room = await _message_to_change(session, message_id, principal)
    user_id = access.user_id_of(principal)
    if message.author_id != user_id and not access.may_delete_any_message(principal, room.member):
        raise NotMessageAuthor("Only the author or the room's moderators may delete this message.")
    if message.deleted_at is not None:
        return
    message.body = ""
    message.attachments = []
    message.mentions = []
    message.deleted_at = utcnow()
    message.deleted_by = user_id
    await repository.clear_reactions(session, message.id)
    await messaging.search.remove(session, message.id)
    await session.flush()
    events.record(
        session,
        events.MESSAGE_DELETED,
        room_id=message.room_id,
        live={
            "message_id": str(message.id),
            "seq": message.seq,
            "thread_root_id": str(message.thread_root_id) if message.thread_root_id else None,
            "deleted_by": str(user_id),
        },
        message_id=str(message.id),
    )
