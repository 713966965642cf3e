"""Helpers for the chat transport tests: an in-process server on a real socket, tokens,
and centrifuge-python clients that record what they receive.

The server is the composed app (identity + chat) served by the same uvicorn server class
``engineroom serve`` uses, on a free loopback port, inside the test's event loop, so the
real client SDK talks WebSocket to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import orjson
import uvicorn
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    DisconnectedContext,
    ErrorContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    SubscribedContext,
    Subscription,
    SubscriptionEventHandler,
    UnsubscribedContext,
)
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as connect_websocket
from websockets.exceptions import ConnectionClosed

from engineroom.app import create_app
from engineroom.chat import build_module
from engineroom.chat.config import ChatSettings
from engineroom.chat.realtime.runtime import ChatRuntime, find_runtime
from engineroom.cli import DrainingServer
from engineroom.core.migrations.runner import upgrade
from engineroom.core.platform import Platform
from engineroom.identity import module as identity_module
from engineroom.identity.config import configure
from engineroom.identity.tokens import issue_access_token
from engineroom.settings import Settings
from tests.support.identity import fast_identity_settings

WAIT = 10.0
T = TypeVar("T")


def chat_settings(**overrides: Any) -> ChatSettings:
    return ChatSettings(_env_file=None, **overrides)  # type: ignore[call-arg]


@dataclass
class ChatServer:
    app: FastAPI
    server: DrainingServer
    base_url: str

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/connection/websocket"

    @property
    def platform(self) -> Platform:
        platform: Platform = self.app.state.platform
        return platform

    @property
    def runtime(self) -> ChatRuntime:
        runtime = find_runtime(self.platform)
        assert runtime is not None
        return runtime

    async def token(
        self,
        user_id: str | None = None,
        *,
        username: str = "alice",
        permissions: tuple[str, ...] = (),
        ttl: timedelta | None = None,
    ) -> tuple[str, str]:
        """A real identity access token: (user id, token)."""
        subject = uuid.UUID(user_id) if user_id else uuid.uuid4()
        issued = await issue_access_token(
            self.platform,
            user_id=subject,
            username=username,
            roles=("member",),
            permissions=permissions,
            ttl=ttl,
        )
        return str(subject), issued.token


@asynccontextmanager
async def chat_server(
    settings: Settings, chat: ChatSettings | None = None
) -> AsyncIterator[ChatServer]:
    """Identity and chat served on a free port until the block ends (then drained)."""
    configure(settings, fast_identity_settings())
    modules = [identity_module, build_module(settings=chat or chat_settings())]
    await upgrade(settings, modules)
    app = create_app(settings, modules=modules, run_background=False)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_config=None,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )
    server = DrainingServer(config, app.state.platform)
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield ChatServer(app=app, server=server, base_url=f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await task


# ---- clients -----------------------------------------------------------------------------


@dataclass
class Events(ClientEventHandler):
    connected: asyncio.Queue[ConnectedContext] = field(default_factory=asyncio.Queue)
    disconnected: asyncio.Queue[DisconnectedContext] = field(default_factory=asyncio.Queue)
    errors: asyncio.Queue[ErrorContext] = field(default_factory=asyncio.Queue)

    async def on_connected(self, ctx: ConnectedContext) -> None:
        await self.connected.put(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        await self.disconnected.put(ctx)

    async def on_error(self, ctx: ErrorContext) -> None:
        await self.errors.put(ctx)


@dataclass
class SubEvents(SubscriptionEventHandler):
    publications: asyncio.Queue[PublicationContext] = field(default_factory=asyncio.Queue)
    subscribed: asyncio.Queue[SubscribedContext] = field(default_factory=asyncio.Queue)
    unsubscribed: asyncio.Queue[UnsubscribedContext] = field(default_factory=asyncio.Queue)
    joins: asyncio.Queue[JoinContext] = field(default_factory=asyncio.Queue)
    leaves: asyncio.Queue[LeaveContext] = field(default_factory=asyncio.Queue)

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.publications.put(ctx)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        await self.subscribed.put(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        await self.unsubscribed.put(ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        await self.joins.put(ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        await self.leaves.put(ctx)


def new_client(url: str, token: str, **options: Any) -> tuple[Client, Events]:
    events = Events()
    client = Client(url, events=events, token=token, proxy=None, **options)
    return client, events


def new_subscription(
    client: Client, channel: str, **options: Any
) -> tuple[Subscription, SubEvents]:
    events = SubEvents()
    return client.new_subscription(channel, events=events, **options), events


async def next_item(queue: asyncio.Queue[T], wait: float = WAIT) -> T:
    async with asyncio.timeout(wait):
        return await queue.get()


async def take(queue: asyncio.Queue[PublicationContext], count: int) -> list[Any]:
    """The data of the next ``count`` publications."""
    return [(await next_item(queue)).pub.data for _ in range(count)]


async def eventually(condition: Callable[[], bool], wait: float = WAIT) -> None:
    """Wait until ``condition()`` holds (checked every 20 ms), or fail after ``wait``."""
    for _ in range(int(wait / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition still false after waiting")


async def nothing_more(queue: asyncio.Queue[Any], wait: float = 0.3) -> None:
    await asyncio.sleep(wait)
    assert queue.empty(), f"unexpected: {queue.get_nowait()!r}"


# ---- raw protocol ------------------------------------------------------------------------


@dataclass
class RawClient:
    """A bare WebSocket speaking the JSON protocol by hand, for frames SDKs never send."""

    ws: ClientConnection
    replies: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, *commands: dict[str, Any]) -> None:
        await self.ws.send("\n".join(orjson.dumps(command).decode() for command in commands))

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def frame(self, wait: float = WAIT) -> list[dict[str, Any]]:
        """The messages of the next frame the server sends."""
        async with asyncio.timeout(wait):
            text = await self.ws.recv()
        assert isinstance(text, str), "the JSON protocol uses text frames"
        return [orjson.loads(line) for line in text.split("\n") if line]

    async def reply(self, command_id: int, wait: float = WAIT) -> dict[str, Any]:
        """The reply to ``command_id``, keeping whatever else arrives meanwhile."""
        async with asyncio.timeout(wait):
            while True:
                for index, message in enumerate(self.replies):
                    if message.get("id") == command_id:
                        return self.replies.pop(index)
                self.replies.extend(await self.frame(wait))

    async def connect(self, token: str) -> dict[str, Any]:
        await self.send({"id": 1, "connect": {"token": token}})
        reply = await self.reply(1)
        assert "connect" in reply, reply
        return reply

    async def closed(self, wait: float = WAIT) -> int | None:
        """Read until the server closes; the close code."""
        async with asyncio.timeout(wait):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.ws.recv()
        return self.ws.close_code


@asynccontextmanager
async def raw_client(url: str, **options: Any) -> AsyncIterator[RawClient]:
    async with connect_websocket(
        url, compression=None, max_size=None, proxy=None, open_timeout=WAIT, **options
    ) as ws:
        yield RawClient(ws)


async def settle(wait: float = 3.0) -> None:
    """Let the SDK clients' background closes finish before the event loop ends.

    The SDK closes its WebSocket in tasks of its own; a loop closed under them leaves
    sockets that are collected, with a warning, in whatever test runs next.
    """
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    if pending:
        await asyncio.wait(pending, timeout=wait)
