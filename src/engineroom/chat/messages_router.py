"""Messages over REST under ``/api/v1/chat``: send, history, threads, edit, delete,
reactions and search. Each route parses, calls one service function and answers its JSON
(the shapes are documented by the ``response_model`` of each route)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from engineroom.chat import history, messages, reactions
from engineroom.chat.errors import (
    BannedFromRoom,
    InvalidCursor,
    InvalidMessage,
    InvalidReaction,
    MessageDeleted,
    MessageNotFound,
    MessageRejected,
    MessageTooLong,
    MutedInRoom,
    NotAMember,
    NotMessageAuthor,
    RoomNotFound,
    TooManyReactions,
)
from engineroom.chat.messages import Messaging, charge_send, messaging_for
from engineroom.chat.messages_schemas import (
    MessageCreate,
    MessagePage,
    MessageRead,
    MessageUpdate,
    SearchResults,
    ThreadPage,
)
from engineroom.core.auth import CurrentPrincipal
from engineroom.core.deps import PlatformDep, ReadSessionDep, SessionDep
from engineroom.core.errors import RateLimited, Unauthorized, error_responses
from engineroom.core.responses import ORJSONResponse

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])


async def _messaging(platform: PlatformDep) -> Messaging:
    return messaging_for(platform)


MessagingDep = Annotated[Messaging, Depends(_messaging)]


async def _send_limit(
    principal: CurrentPrincipal, messaging: MessagingDep, response: Response
) -> None:
    response.headers.update(await charge_send(messaging, principal))


RoomId = Annotated[uuid.UUID, Path(description="The room's id.")]
MessageId = Annotated[uuid.UUID, Path(description="The message's id.")]
Emoji = Annotated[str, Path(description="The reaction: 1 to 64 characters, no spaces.")]
Before = Annotated[
    uuid.UUID | None,
    Query(description="Messages older than this message, newest first (the default)."),
]
After = Annotated[
    uuid.UUID | None, Query(description="Messages newer than this message, oldest first.")
]
Limit = Annotated[int, Query(ge=1, le=history.MAX_PAGE, description="Page size.")]

_READ_ERRORS = (Unauthorized, NotAMember, BannedFromRoom)
_WRITE_ERRORS = (Unauthorized, NotAMember, BannedFromRoom, MutedInRoom)


def _json(content: dict[str, Any], status_code: int = 200) -> ORJSONResponse:
    return ORJSONResponse(content, status_code=status_code)


@router.post(
    "/rooms/{room_id}/messages",
    status_code=201,
    response_model=MessageRead,
    summary="Send a message (or a reply in a thread)",
    responses=error_responses(
        *_WRITE_ERRORS,
        RoomNotFound,
        InvalidMessage,
        MessageTooLong,
        MessageRejected,
        RateLimited,
    ),
    dependencies=[Depends(_send_limit)],
)
async def send(
    room_id: RoomId,
    payload: MessageCreate,
    session: SessionDep,
    principal: CurrentPrincipal,
    messaging: MessagingDep,
    response: Response,
) -> ORJSONResponse:
    message = await messages.send_message(
        session, principal=principal, room_id=room_id, draft=payload, messaging=messaging
    )
    answer = _json(message, status_code=201)
    answer.headers.update(response.headers)
    return answer


@router.get(
    "/rooms/{room_id}/messages",
    response_model=MessagePage,
    summary="A page of the room's history (top-level messages; replies are in threads)",
    responses=error_responses(*_READ_ERRORS, RoomNotFound, InvalidCursor),
)
async def room_history(
    room_id: RoomId,
    session: ReadSessionDep,
    principal: CurrentPrincipal,
    before: Before = None,
    after: After = None,
    limit: Limit = history.DEFAULT_PAGE,
) -> ORJSONResponse:
    page = await history.room_history(
        session, principal=principal, room_id=room_id, before=before, after=after, limit=limit
    )
    return _json(page)


@router.get(
    "/messages/{message_id}",
    response_model=MessageRead,
    summary="One message",
    responses=error_responses(*_READ_ERRORS, MessageNotFound),
)
async def get_message(
    message_id: MessageId, session: ReadSessionDep, principal: CurrentPrincipal
) -> ORJSONResponse:
    return _json(await history.get_message(session, principal=principal, message_id=message_id))


@router.get(
    "/messages/{message_id}/thread",
    response_model=ThreadPage,
    summary="A thread: its first message and a page of its replies",
    responses=error_responses(*_READ_ERRORS, MessageNotFound, InvalidCursor),
)
async def thread(
    message_id: MessageId,
    session: ReadSessionDep,
    principal: CurrentPrincipal,
    before: Before = None,
    after: After = None,
    limit: Limit = history.DEFAULT_PAGE,
) -> ORJSONResponse:
    page = await history.thread(
        session,
        principal=principal,
        message_id=message_id,
        before=before,
        after=after,
        limit=limit,
    )
    return _json(page)


@router.patch(
    "/messages/{message_id}",
    response_model=MessageRead,
    summary="Edit one's own message",
    responses=error_responses(
        *_WRITE_ERRORS,
        MessageNotFound,
        NotMessageAuthor,
        MessageDeleted,
        InvalidMessage,
        MessageTooLong,
        MessageRejected,
    ),
)
async def edit(
    message_id: MessageId,
    payload: MessageUpdate,
    session: SessionDep,
    principal: CurrentPrincipal,
    messaging: MessagingDep,
) -> ORJSONResponse:
    message = await messages.edit_message(
        session,
        principal=principal,
        message_id=message_id,
        body=payload.body,
        messaging=messaging,
    )
    return _json(message)


@router.delete(
    "/messages/{message_id}",
    status_code=204,
    summary="Delete a message (its author, the room's moderators, platform moderators)",
    responses=error_responses(Unauthorized, MessageNotFound, NotMessageAuthor),
)
async def delete(
    message_id: MessageId,
    session: SessionDep,
    principal: CurrentPrincipal,
    messaging: MessagingDep,
) -> Response:
    await messages.delete_message(
        session, principal=principal, message_id=message_id, messaging=messaging
    )
    return Response(status_code=204)


@router.put(
    "/messages/{message_id}/reactions/{emoji}",
    response_model=MessageRead,
    summary="React to a message (idempotent)",
    responses=error_responses(
        *_WRITE_ERRORS, MessageNotFound, MessageDeleted, InvalidReaction, TooManyReactions
    ),
)
async def react(
    message_id: MessageId,
    emoji: Emoji,
    session: SessionDep,
    principal: CurrentPrincipal,
    messaging: MessagingDep,
) -> ORJSONResponse:
    message = await reactions.react(
        session, principal=principal, message_id=message_id, emoji=emoji, messaging=messaging
    )
    return _json(message)


@router.delete(
    "/messages/{message_id}/reactions/{emoji}",
    response_model=MessageRead,
    summary="Take back one's reaction (idempotent)",
    responses=error_responses(*_WRITE_ERRORS, MessageNotFound, InvalidReaction),
)
async def unreact(
    message_id: MessageId, emoji: Emoji, session: SessionDep, principal: CurrentPrincipal
) -> ORJSONResponse:
    message = await reactions.unreact(
        session, principal=principal, message_id=message_id, emoji=emoji
    )
    return _json(message)


@router.get(
    "/search",
    response_model=SearchResults,
    summary="Search the messages of the caller's rooms (or of one room), best match first",
    responses=error_responses(*_READ_ERRORS, RoomNotFound),
)
async def search(
    session: ReadSessionDep,
    principal: CurrentPrincipal,
    messaging: MessagingDep,
    q: Annotated[str, Query(min_length=1, max_length=500, description="Words to find.")],
    room_id: Annotated[uuid.UUID | None, Query(description="Search this room only.")] = None,
    limit: Annotated[int, Query(ge=1, le=history.MAX_SEARCH_RESULTS)] = 20,
) -> ORJSONResponse:
    found = await history.search_messages(
        session,
        principal=principal,
        index=messaging.search,
        query=q,
        room_id=room_id,
        limit=limit,
    )
    return _json(found)
