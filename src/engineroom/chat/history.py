"""Reading messages: one message, a room's history, a thread, search results.

History pages move along the room's ``seq`` with a message id as cursor: ``before`` (or
nothing) gives the newest messages first, ``after`` the oldest first. The room's history
holds its top-level messages only (thread roots and messages outside threads); replies
are read through their thread, and each root carries ``reply_count`` and
``last_reply_at``. Deleted messages stay in place as tombstones (``deleted: true``, empty
body) so that threads and read positions keep their shape.

Every page costs the same few statements whatever its size: the room check, the cursor,
the page, the reactions of the page, and the authors' and mentioned users' names from the
identity module in one batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import access
from engineroom.chat import messages_repository as repository
from engineroom.chat.errors import InvalidCursor, MessageNotFound, RoomNotFound
from engineroom.chat.messages_repository import Window
from engineroom.chat.messages_schemas import message_json
from engineroom.chat.models import Message
from engineroom.chat.search import MessageSearch
from engineroom.core.auth import Principal
from engineroom.core.clock import utcnow
from engineroom.identity import public as identity

DEFAULT_PAGE = 50
MAX_PAGE = 100
MAX_SEARCH_RESULTS = 50


async def names_of(session: AsyncSession, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Usernames by id, in one batch (users who no longer exist are left out)."""
    if not user_ids:
        return {}
    users = await identity.get_users(session, user_ids)
    return {user_id: user.username for user_id, user in users.items()}


async def render(
    session: AsyncSession,
    messages: Sequence[Message],
    *,
    viewer: uuid.UUID | None,
    live: bool = False,
) -> list[dict[str, Any]]:
    """Messages as JSON with their reactions (``me`` for ``viewer``) and usernames."""
    if not messages:
        return []
    people = {message.author_id for message in messages}
    people.update(uuid.UUID(user) for message in messages for user in message.mentions)
    names = await names_of(session, people)
    reactions = await repository.reactions_of(session, [m.id for m in messages], viewer)
    return [message_json(m, names, reactions.get(m.id, []), live=live) for m in messages]


async def visible_message(
    session: AsyncSession, message_id: uuid.UUID, principal: Principal
) -> tuple[Message, access.RoomAccess]:
    """The message and its room, if the principal may read the room; a message of a room
    they may not see is as unknown as one that does not exist."""
    message = await repository.get_message(session, message_id)
    if message is None:
        raise MessageNotFound("No such message.")
    try:
        room = await access.readable_room(session, message.room_id, principal)
    except RoomNotFound:
        raise MessageNotFound("No such message.") from None
    return message, room


async def get_message(
    session: AsyncSession, *, principal: Principal, message_id: uuid.UUID
) -> dict[str, Any]:
    message, _ = await visible_message(session, message_id, principal)
    return (await render(session, [message], viewer=access.user_id_of(principal)))[0]


async def _window(
    session: AsyncSession,
    *,
    room_id: uuid.UUID,
    thread_root_id: uuid.UUID | None,
    before: uuid.UUID | None,
    after: uuid.UUID | None,
    limit: int,
) -> Window:
    if before is not None and after is not None:
        raise InvalidCursor("Give 'before' or 'after', not both.")
    cursor_id = before or after
    if cursor_id is None:
        return Window(None, None, limit)
    name = "before" if before is not None else "after"
    cursor = await repository.message_in_room(session, room_id, cursor_id)
    if cursor is None or (
        thread_root_id is not None and thread_root_id not in (cursor.id, cursor.thread_root_id)
    ):
        where = "thread" if thread_root_id is not None else "room"
        raise InvalidCursor(f"'{name}' names no message of this {where}.")
    if before is not None:
        return Window(cursor.seq, None, limit)
    return Window(None, cursor.seq, limit)


async def room_history(
    session: AsyncSession,
    *,
    principal: Principal,
    room_id: uuid.UUID,
    before: uuid.UUID | None = None,
    after: uuid.UUID | None = None,
    limit: int = DEFAULT_PAGE,
) -> dict[str, Any]:
    """A page of the room's top-level messages: ``{"messages", "has_more"}``."""
    await access.readable_room(session, room_id, principal)
    window = await _window(
        session, room_id=room_id, thread_root_id=None, before=before, after=after, limit=limit
    )
    messages, has_more = await repository.room_page(session, room_id, window)
    rendered = await render(session, messages, viewer=access.user_id_of(principal))
    return {"messages": rendered, "has_more": has_more}


async def thread(
    session: AsyncSession,
    *,
    principal: Principal,
    message_id: uuid.UUID,
    before: uuid.UUID | None = None,
    after: uuid.UUID | None = None,
    limit: int = DEFAULT_PAGE,
) -> dict[str, Any]:
    """The thread ``message_id`` starts (or belongs to): ``{"root", "messages", "has_more"}``
    with the replies paged like the room's history."""
    message, _ = await visible_message(session, message_id, principal)
    root = message
    if message.thread_root_id is not None:
        found = await repository.get_message(session, message.thread_root_id)
        if found is None:  # pragma: no cover - roots are never removed, only tombstoned
            raise MessageNotFound("The thread's first message is gone.")
        root = found
    window = await _window(
        session,
        room_id=root.room_id,
        thread_root_id=root.id,
        before=before,
        after=after,
        limit=limit,
    )
    replies, has_more = await repository.thread_page(session, root.id, window)
    rendered = await render(session, [root, *replies], viewer=access.user_id_of(principal))
    return {"root": rendered[0], "messages": rendered[1:], "has_more": has_more}


async def search_messages(
    session: AsyncSession,
    *,
    principal: Principal,
    index: MessageSearch,
    query: str,
    room_id: uuid.UUID | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    """Messages matching ``query`` in the rooms the principal belongs to (or in
    ``room_id`` only, which they must be able to read), the best match first."""
    if room_id is not None:
        await access.readable_room(session, room_id, principal)
    user_id = access.user_id_of(principal)
    found = await repository.search(
        session, index, query, user_id=user_id, room_id=room_id, limit=limit, now=utcnow()
    )
    return {"messages": await render(session, found, viewer=user_id)}
