"""The client commands: one handler per protocol method.

A handler returns the result to send back, ``None`` when it replied itself (subscribe,
whose reply must be queued before the channel goes live) or when the method has no reply
(send); it raises ``ReplyError`` to answer with an error and ``DisconnectError`` to close
the connection.
"""

from __future__ import annotations

import time

import orjson

from engineroom.chat.realtime.auth import TokenExpiredError, TokenInvalidError, VerifiedToken
from engineroom.chat.realtime.broker import (
    StoredPublication,
    StreamPosition,
    UnrecoverablePositionError,
)
from engineroom.chat.realtime.channels import ChannelAction
from engineroom.chat.realtime.connection import (
    Connection,
    DisconnectError,
    Handler,
    Result,
    Subscription,
)
from engineroom.chat.realtime.protocol import (
    Command,
    DisconnectCode,
    ErrorCode,
    ReplyError,
    publication_body,
    publication_object,
)
from engineroom.core.auth import Principal

REJECT_UNRECOVERED = 2
"""Subscribe flag: answer "unrecoverable position" instead of ``recovered: false``."""


# ---- parameters ------------------------------------------------------------------------


def _bad_request() -> ReplyError:
    return ReplyError(ErrorCode.BAD_REQUEST)


def _string(params: dict[str, object], key: str, *, required: bool = False) -> str:
    value = params.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise _bad_request()
    return value


def _integer(value: object, default: int = 0) -> int:
    if value is None:
        return default
    # JSON clients may send 64-bit integers as strings (protobuf JSON mapping).
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if type(value) is not int:
        raise _bad_request()
    return value


def _position(value: object) -> StreamPosition | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad_request()
    epoch = value.get("epoch", "")
    if not isinstance(epoch, str):
        raise _bad_request()
    return StreamPosition(_integer(value.get("offset")), epoch)


def _principal(connection: Connection) -> Principal:
    if connection.principal is None:  # the dispatcher only lets connect through before
        raise DisconnectError(DisconnectCode.BAD_REQUEST)
    return connection.principal


def _publications(items: list[StoredPublication]) -> list[orjson.Fragment]:
    return [publication_object(item.offset, item.body) for item in items]


# ---- connection --------------------------------------------------------------------------


async def _verify(connection: Connection, token: str) -> VerifiedToken:
    try:
        return await connection.hub.verifier(token)
    except TokenExpiredError:
        raise ReplyError(ErrorCode.TOKEN_EXPIRED) from None
    except TokenInvalidError:
        raise DisconnectError(DisconnectCode.INVALID_TOKEN) from None


def _session(connection: Connection) -> Result:
    result: Result = {"client": connection.client_id, "version": connection.hub.version}
    if connection.expires_at is not None:
        result["expires"] = True
        result["ttl"] = max(1, int(connection.expires_at - time.time()))
    return result


async def connect(connection: Connection, command: Command) -> Result:
    hub = connection.hub
    if not hub.accepting:
        raise DisconnectError(DisconnectCode.SHUTDOWN)
    token = command.params.get("token")
    if not isinstance(token, str) or not token:
        raise DisconnectError(DisconnectCode.INVALID_TOKEN)
    connection.authenticate(await _verify(connection, token))
    hub.register_user(connection)
    result = _session(connection)
    result["ping"] = int(connection.limits.ping_interval)
    result["pong"] = True
    return result


async def refresh(connection: Connection, command: Command) -> Result:
    verified = await _verify(connection, _string(command.params, "token", required=True))
    if verified.principal.subject != connection.user:
        raise DisconnectError(DisconnectCode.INVALID_TOKEN)
    connection.refresh(verified)
    return _session(connection)


# ---- subscriptions -----------------------------------------------------------------------


async def subscribe(connection: Connection, command: Command) -> Result | None:
    params = command.params
    channel = _string(params, "channel", required=True)
    if channel in connection.subscriptions:
        raise ReplyError(ErrorCode.ALREADY_SUBSCRIBED)
    if len(connection.subscriptions) >= connection.limits.max_subscriptions:
        raise ReplyError(ErrorCode.LIMIT_EXCEEDED)
    if params.get("tf") is not None:
        raise ReplyError(ErrorCode.NOT_AVAILABLE, "publication filters are not supported")
    hub = connection.hub
    parsed, _ = hub.registry.resolve(channel)
    namespace = await hub.registry.check(_principal(connection), parsed, ChannelAction.SUBSCRIBE)
    options = namespace.options
    subscription = Subscription(
        channel, options, join_leave=params.get("join_leave") is True and options.join_leave
    )
    connection.subscriptions[channel] = subscription
    try:
        await hub.attach(connection, subscription)
        result, top = await _stream_state(connection, subscription, params)
    except BaseException:
        connection.subscriptions.pop(channel, None)
        hub.detach(connection, subscription)
        raise
    connection.reply(command.id, "subscribe", result)
    hub.activate(connection, subscription, top)
    await hub.after_subscribe(connection, subscription)
    return None


async def _stream_state(
    connection: Connection, subscription: Subscription, params: dict[str, object]
) -> tuple[Result, int]:
    """The subscribe result's position part, recovering what the client missed."""
    options = subscription.options
    if not options.recoverable:
        return {}, 0
    broker, channel = connection.hub.broker, subscription.channel
    since = None
    if params.get("recover") is True:
        since = StreamPosition(_integer(params.get("offset")), _string(params, "epoch"))
    recovered = False
    try:
        page = await broker.history(channel, options, since=since, limit=-1 if since else 0)
        recovered = since is not None
    except UnrecoverablePositionError:
        if _integer(params.get("flag")) & REJECT_UNRECOVERED:
            raise ReplyError(ErrorCode.UNRECOVERABLE_POSITION) from None
        page = await broker.history(channel, options, limit=0)
    result: Result = {
        "recoverable": True,
        "positioned": True,
        "epoch": page.position.epoch,
        "offset": page.position.offset,
    }
    if since is not None:
        result["was_recovering"] = True
        result["recovered"] = recovered
        if recovered and page.publications:
            result["publications"] = _publications(page.publications)
    return result, page.position.offset


async def unsubscribe(connection: Connection, command: Command) -> Result:
    connection.hub.unsubscribe(connection, _string(command.params, "channel", required=True))
    return {}


def _subscribed(connection: Connection, params: dict[str, object]) -> Subscription:
    """History and presence are for the channel's subscribers."""
    subscription = connection.subscriptions.get(_string(params, "channel", required=True))
    if subscription is None:
        raise ReplyError(ErrorCode.PERMISSION_DENIED)
    return subscription


# ---- channel operations ------------------------------------------------------------------


async def publish(connection: Connection, command: Command) -> Result:
    params = command.params
    channel = _string(params, "channel", required=True)
    if "data" not in params:
        raise _bad_request()
    hub = connection.hub
    parsed, _ = hub.registry.resolve(channel)
    namespace = await hub.registry.check(_principal(connection), parsed, ChannelAction.PUBLISH)
    body = publication_body(params["data"], info=orjson.Fragment(connection.info))
    await hub.broker.publish(channel, body, namespace.options)
    return {}


async def history(connection: Connection, command: Command) -> Result:
    params = command.params
    subscription = _subscribed(connection, params)
    options = subscription.options
    if not options.recoverable:
        raise ReplyError(ErrorCode.NOT_AVAILABLE)
    limit = _integer(params.get("limit"))
    if limit < 0 or limit > options.history_size:
        limit = options.history_size
    try:
        page = await connection.hub.broker.history(
            subscription.channel,
            options,
            since=_position(params.get("since")),
            limit=limit,
            reverse=params.get("reverse") is True,
        )
    except UnrecoverablePositionError:
        raise ReplyError(ErrorCode.UNRECOVERABLE_POSITION) from None
    return {
        "publications": _publications(page.publications),
        "epoch": page.position.epoch,
        "offset": page.position.offset,
    }


async def _presence(connection: Connection, params: dict[str, object]) -> dict[str, bytes]:
    subscription = _subscribed(connection, params)
    if not subscription.options.presence:
        raise ReplyError(ErrorCode.NOT_AVAILABLE)
    return await connection.hub.broker.presence(subscription.channel)


async def presence(connection: Connection, command: Command) -> Result:
    clients = await _presence(connection, command.params)
    return {"presence": {client: orjson.Fragment(info) for client, info in clients.items()}}


async def presence_stats(connection: Connection, command: Command) -> Result:
    clients = await _presence(connection, command.params)
    return {"num_clients": len(clients), "num_users": count_users(clients)}


def count_users(clients: dict[str, bytes]) -> int:
    users: set[object] = set()
    for info in clients.values():
        decoded = orjson.loads(info)
        users.add(decoded.get("user") if isinstance(decoded, dict) else None)
    return len(users)


# ---- the rest ----------------------------------------------------------------------------


async def ping(connection: Connection, command: Command) -> Result:
    return {}


async def send(connection: Connection, command: Command) -> None:
    """Asynchronous messages to the server: nothing here consumes them yet."""


async def rpc(connection: Connection, command: Command) -> Result:
    method = _string(command.params, "method")
    handler = connection.hub.rpc_handlers.get(method)
    if handler is None:
        raise ReplyError(ErrorCode.METHOD_NOT_FOUND)
    data = await handler(_principal(connection), command.params.get("data"))
    return {"data": data}


async def sub_refresh(connection: Connection, command: Command) -> Result:
    raise ReplyError(ErrorCode.NOT_AVAILABLE, "subscription tokens are not used")


HANDLERS: dict[str, Handler] = {
    "connect": connect,
    "refresh": refresh,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "publish": publish,
    "history": history,
    "presence": presence,
    "presence_stats": presence_stats,
    "ping": ping,
    "send": send,
    "rpc": rpc,
    "sub_refresh": sub_refresh,
}
