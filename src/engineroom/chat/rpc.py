"""RPC methods of the chat domain over the WebSocket connection (the protocol's ``rpc``
command), so clients send, edit, react and mark read without a second HTTP connection.

Each method runs in its own transaction, like an HTTP request. The domain's errors are
answered with the HTTP status as the error code (403, 404, 409, 413, 422, 429; the
protocol keeps codes below 400 for itself) and the error's message prefixed by its
stable code (``chat_not_a_member: Join the room first.``); the connection stays open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.chat.realtime.hub import RpcHandler
from engineroom.chat.realtime.protocol import JSON, ErrorCode, ReplyError
from engineroom.core.auth import Principal
from engineroom.core.db import Database
from engineroom.core.errors import AppError, RateLimited

RpcWork = Callable[[AsyncSession, Principal, JSON], Awaitable[JSON]]
"""One RPC method: the transaction's session, the connection's principal, the data."""


def reply_error(error: AppError) -> ReplyError:
    if isinstance(error, RateLimited):
        return ReplyError(ErrorCode.TOO_MANY_REQUESTS, f"{error.code}: {error.message}")
    return ReplyError(error.status, f"{error.code}: {error.message}")


def validation_reply(error: ValidationError) -> ReplyError:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'data'}: {item['msg']}"
        for item in error.errors(include_url=False)
    )
    return ReplyError(ErrorCode.BAD_REQUEST, problems[:500])


def rpc_method(database: Database, work: RpcWork) -> RpcHandler:
    """Wrap ``work`` as an RPC handler running in one transaction."""

    async def handle(principal: Principal, data: JSON) -> JSON:
        try:
            return await database.transaction(lambda session: work(session, principal, data))
        except AppError as error:
            raise reply_error(error) from None
        except ValidationError as error:
            raise validation_reply(error) from None

    return handle
