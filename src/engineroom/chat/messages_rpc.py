"""Messages over the WebSocket: the RPC methods ``chat.send``, ``chat.edit``,
``chat.delete``, ``chat.react`` and ``chat.unreact``.

Their data mirror the REST bodies plus the ids the REST paths carry (``room_id``,
``message_id``); each answers what the REST route answers (``{}`` for a deletion). They
call the same service functions in one transaction each (see ``rpc.py`` for how errors
are answered: HTTP status as code, ``111`` when rate limited).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat import messages, reactions
from engineroom.chat.messages import Messaging, charge_send, messaging_for
from engineroom.chat.messages_schemas import EditData, MessageRef, ReactionData, SendData
from engineroom.chat.realtime.protocol import JSON
from engineroom.chat.realtime.runtime import ChatRuntime
from engineroom.chat.rpc import RpcWork, rpc_method
from engineroom.core.auth import Principal
from engineroom.core.platform import Platform


def _send(messaging: Messaging) -> RpcWork:
    async def work(session: AsyncSession, principal: Principal, data: JSON) -> JSON:
        request = SendData.model_validate(data)
        await charge_send(messaging, principal)
        return await messages.send_message(
            session,
            principal=principal,
            room_id=request.room_id,
            draft=request,
            messaging=messaging,
        )

    return work


def _edit(messaging: Messaging) -> RpcWork:
    async def work(session: AsyncSession, principal: Principal, data: JSON) -> JSON:
        request = EditData.model_validate(data)
        return await messages.edit_message(
            session,
            principal=principal,
            message_id=request.message_id,
            body=request.body,
            messaging=messaging,
        )

    return work


def _delete(messaging: Messaging) -> RpcWork:
    async def work(session: AsyncSession, principal: Principal, data: JSON) -> JSON:
        request = MessageRef.model_validate(data)
        await messages.delete_message(
            session, principal=principal, message_id=request.message_id, messaging=messaging
        )
        return {}

    return work


def _react(messaging: Messaging) -> RpcWork:
    async def work(session: AsyncSession, principal: Principal, data: JSON) -> JSON:
        request = ReactionData.model_validate(data)
        return await reactions.react(
            session,
            principal=principal,
            message_id=request.message_id,
            emoji=request.emoji,
            messaging=messaging,
        )

    return work


async def _unreact(session: AsyncSession, principal: Principal, data: JSON) -> JSON:
    request = ReactionData.model_validate(data)
    return await reactions.unreact(
        session, principal=principal, message_id=request.message_id, emoji=request.emoji
    )


def install(platform: Platform, runtime: ChatRuntime) -> None:
    """Register the message RPC methods (with the transport's chat settings)."""
    messaging = messaging_for(platform, runtime.chat)
    database = platform.database
    handlers = runtime.hub.rpc_handlers
    handlers["chat.send"] = rpc_method(database, _send(messaging))
    handlers["chat.edit"] = rpc_method(database, _edit(messaging))
    handlers["chat.delete"] = rpc_method(database, _delete(messaging))
    handlers["chat.react"] = rpc_method(database, _react(messaging))
    handlers["chat.unreact"] = rpc_method(database, _unreact)
