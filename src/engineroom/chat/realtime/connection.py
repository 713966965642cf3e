"""One client connection: its identity, subscriptions, limits and outgoing queue.

Everything sent to a client (replies, pushes, pings) goes through one bounded queue that a
writer task drains, so replies and publications keep their order and a fan-out never waits
for a socket. Messages queued while the writer was busy leave together in one frame
(newline-separated, as the protocol allows). A client that stops reading fills its queue;
past ``max_queue_bytes`` it is disconnected as "slow" and its queue dropped, so one stuck
client costs at most that much memory and never slows the others.

Commands of one connection run one after another in the reading task, in the order sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import structlog

from engineroom.chat.realtime.auth import VerifiedToken
from engineroom.chat.realtime.channels import NamespaceOptions
from engineroom.chat.realtime.protocol import (
    PING,
    Command,
    Disconnect,
    DisconnectCode,
    ErrorCode,
    FrameError,
    ReplyError,
    SharedText,
    dumps_kept,
    encode_error,
    encode_reply,
    parse_frame,
)
from engineroom.core.auth import Principal

if TYPE_CHECKING:
    from engineroom.chat.realtime.hub import Hub

logger = structlog.get_logger("engineroom.chat.realtime")

Result = dict[str, object]
Handler = Callable[["Connection", Command], Awaitable[Result | None]]


class Transport(Protocol):
    async def send_text(self, text: str) -> None: ...

    def write_frame(self, frame: bytes) -> bool:
        """Write an already framed message now; ``False`` if it must go by ``send_text``."""

    async def close(self, code: int, reason: str) -> None: ...


class DisconnectError(Exception):
    """Raised by a command handler to close the connection."""

    def __init__(self, disconnect: Disconnect) -> None:
        super().__init__(disconnect.reason)
        self.disconnect = disconnect


@dataclass(frozen=True)
class ConnectionLimits:
    max_frame_bytes: int = 65_536
    max_subscriptions: int = 128
    command_rate: float = 50.0
    """Commands per second a connection may send on average..."""
    command_burst: int = 100
    """...and at once."""
    max_queue_bytes: int = 1_048_576
    max_batch_bytes: int = 65_536
    """Queued messages are joined into frames up to this size."""
    ping_interval: float = 25.0
    """Seconds between pings; a client must answer each before the next one."""
    connect_timeout: float = 10.0
    expiry_grace: float = 10.0
    """Seconds a connection may outlive its token before it is closed as expired."""
    close_timeout: float = 2.0


@dataclass(slots=True, eq=False)
class Subscription:
    channel: str
    options: NamespaceOptions
    join_leave: bool = False
    buffer: list[tuple[int, str]] | None = field(default_factory=list)
    """Pushes that arrived while the subscribe reply was being prepared (None once live)."""


class Connection:
    __slots__ = (
        "_awaiting_pong",
        "_closing",
        "_context",
        "_flush_scheduled",
        "_handlers",
        "_loop",
        "_queue",
        "_queued",
        "_reader",
        "_timer",
        "_tokens",
        "_tokens_at",
        "_transport",
        "_writer",
        "aborted",
        "client_id",
        "expires_at",
        "hub",
        "info",
        "limits",
        "principal",
        "subscriptions",
    )

    def __init__(
        self,
        hub: Hub,
        transport: Transport,
        limits: ConnectionLimits,
        handlers: dict[str, Handler],
    ) -> None:
        self.hub = hub
        self.limits = limits
        self.client_id = str(uuid.uuid4())
        self.principal: Principal | None = None
        self.info = b""
        """The client's ClientInfo as JSON (presence, join/leave, publications)."""
        self.expires_at: float | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self.aborted = False
        self._handlers = handlers
        self._transport = transport
        self._queue: list[str] = []
        self._queued = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: contextvars.Context | None = None
        self._flush_scheduled = False
        self._closing: Disconnect | None = None
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_pong = False
        self._tokens = float(limits.command_burst)
        self._tokens_at = time.monotonic()

    @property
    def user(self) -> str:
        return self.principal.subject if self.principal is not None else ""

    @property
    def closing(self) -> bool:
        return self._closing is not None

    # ---- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Start the connect deadline; call from the reading task."""
        self._loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()
        self._reader = asyncio.current_task()
        self._timer = self._loop.call_later(self.limits.connect_timeout, self._tick)

    def authenticate(self, verified: VerifiedToken) -> None:
        principal = verified.principal
        self.principal = replace(
            principal, roles=_shared(principal.roles), permissions=_shared(principal.permissions)
        )
        self.expires_at = verified.expires_at
        conn_info = {"username": principal.username} if principal.username else None
        info: dict[str, object] = {"user": principal.subject, "client": self.client_id}
        if conn_info is not None:
            info["conn_info"] = conn_info
        self.info = dumps_kept(info)
        self._reschedule(self.limits.ping_interval)

    def refresh(self, verified: VerifiedToken) -> None:
        self.expires_at = verified.expires_at

    def close(self, disconnect: Disconnect, *, flush: bool = True) -> None:
        """Close with ``disconnect`` once the queue is written (or at once if not ``flush``)."""
        if self._closing is not None:
            return
        self._closing = disconnect
        self._cancel_timer()
        if not flush:
            self._queue = []
            self._queued = 0
            # A writer may be stuck in a send the client never reads: it is replaced.
            if self._writer is not None:
                self._writer.cancel()
                self._writer = None
        self._start_writer()

    async def closed(self) -> None:
        """Wait until the writer has finished (the close frame is sent or given up)."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.shield(writer)

    def release(self) -> None:
        """Stop the writer and timers: the connection is gone."""
        if self._closing is None:
            self._closing = DisconnectCode.CONNECTION_CLOSED
        self._cancel_timer()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self._queue = []
        self._queued = 0
        self._loop = None  # a flush still scheduled finds nothing to do

    # ---- outgoing --------------------------------------------------------------------

    def push(self, text: str) -> None:
        """Queue one message (a reply, a push or a ping); never blocks."""
        if self._closing is not None:
            return
        self._queue.append(text)
        self._queued += len(text)
        if self._queued > self.limits.max_queue_bytes:
            logger.info("chat_client_slow", client=self.client_id, queued=self._queued)
            self.close(DisconnectCode.SLOW, flush=False)
        elif self._writer is None and not self._flush_scheduled and self._loop is not None:
            # Written at the next turn of the loop: what a fan-out queues meanwhile (several
            # publications from one broker read) leaves in one frame.
            self._flush_scheduled = True
            self._loop.call_soon(self._flush, context=self._context)

    def _start_writer(self) -> None:
        if self._writer is None and self._loop is not None:
            self._writer = self._loop.create_task(self._write())

    def _flush(self) -> None:
        """Write the queue without a task while the socket takes it (the usual case), and
        hand over to a writer task at the first send that has to wait.

        A task per connection and message would cost more than the write itself: a
        fan-out to a thousand subscribers would create a thousand tasks each time.
        """
        self._flush_scheduled = False
        if self._writer is not None or self._loop is None:
            return
        while self._queue and self._closing is None:
            batch, self._queue, self._queued = self._queue, [], 0
            if (
                len(batch) == 1
                and isinstance(batch[0], SharedText)
                # The fan-out case: the same framed bytes as every other subscriber.
                and self._transport.write_frame(batch[0].frame)
            ):
                continue
            frames = list(_frames(batch, self.limits.max_batch_bytes))
            for index, frame in enumerate(frames):
                sending = self._transport.send_text(frame)
                try:
                    waiting = sending.send(None)
                except StopIteration:
                    continue
                except Exception:
                    logger.debug("chat_write_failed", client=self.client_id)
                    self._closing = self._closing or DisconnectCode.CONNECTION_CLOSED
                    self._abort_reader()
                    return
                self._writer = self._loop.create_task(
                    self._resume(sending, waiting, frames[index + 1 :])
                )
                return
        if self._closing is not None:
            self._start_writer()

    async def _resume(
        self, sending: Coroutine[object, object, None], waiting: object, rest: list[str]
    ) -> None:
        """Finish a send that had to wait, then write as the writer task."""
        try:
            await _finish(sending, waiting)
            for frame in rest:
                await self._transport.send_text(frame)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.debug("chat_write_failed", client=self.client_id)
            self._abort_reader()
            return
        await self._write()

    def reply(self, command_id: int, method: str, result: Result) -> None:
        if command_id:
            self.push(encode_reply(command_id, method, result))

    async def _write(self) -> None:
        try:
            while self._queue:
                # Take everything queued: what arrives while this is written is counted
                # against the limit afresh, so at most twice the limit is ever held.
                batch, self._queue, self._queued = self._queue, [], 0
                for frame in _frames(batch, self.limits.max_batch_bytes):
                    await self._transport.send_text(frame)
            if self._closing is None:
                self._writer = None
                return
            await self._send_close()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The client went away mid-write: the reading side ends the connection.
            logger.debug("chat_write_failed", client=self.client_id)
        self._abort_reader()

    async def _send_close(self) -> None:
        disconnect = self._closing or DisconnectCode.CONNECTION_CLOSED
        try:
            async with asyncio.timeout(self.limits.close_timeout):
                await self._transport.close(disconnect.code, disconnect.reason)
        except TimeoutError:
            # A client that reads nothing cannot even take the close frame.
            logger.info("chat_close_timed_out", client=self.client_id)
        except Exception:
            logger.debug("chat_close_failed", client=self.client_id)

    def _abort_reader(self) -> None:
        """End the reading task: after a close it has nothing left to wait for."""
        reader = self._reader
        if reader is not None and not reader.done() and reader is not asyncio.current_task():
            self.aborted = True
            reader.cancel()

    # ---- incoming --------------------------------------------------------------------

    async def handle_frame(self, text: str) -> None:
        if len(text) > self.limits.max_frame_bytes and (
            len(text.encode()) > self.limits.max_frame_bytes
        ):
            self.close(DisconnectCode.MESSAGE_TOO_BIG)
            return
        try:
            commands = parse_frame(text)
        except FrameError as exc:
            logger.info("chat_bad_frame", client=self.client_id, error=str(exc))
            self.close(DisconnectCode.BAD_REQUEST)
            return
        for command in commands:
            if self._closing is not None:
                return
            await self._handle(command)

    async def _handle(self, command: Command) -> None:
        if command.method is None:
            if command.id:
                self.push(encode_error(command.id, ReplyError(ErrorCode.METHOD_NOT_FOUND)))
            else:
                self._awaiting_pong = False
            return
        if command.id == 0 and command.method != "send":
            self.close(DisconnectCode.BAD_REQUEST)
            return
        if (self.principal is None) != (command.method == "connect"):
            # Connect comes first and only once.
            self.close(DisconnectCode.BAD_REQUEST)
            return
        if not self._take_token():
            if command.id:
                self.push(encode_error(command.id, ReplyError(ErrorCode.TOO_MANY_REQUESTS)))
            return
        await self._dispatch(command)

    async def _dispatch(self, command: Command) -> None:
        handler = self._handlers[command.method or ""]
        try:
            result = await handler(self, command)
        except ReplyError as error:
            if command.id:
                self.push(encode_error(command.id, error))
        except DisconnectError as exc:
            self.close(exc.disconnect)
        except Exception:
            logger.exception("chat_command_failed", client=self.client_id, method=command.method)
            if command.id:
                self.push(encode_error(command.id, ReplyError(ErrorCode.INTERNAL)))
        else:
            if result is not None and command.method is not None:
                self.reply(command.id, command.method, result)

    def _take_token(self) -> bool:
        now = time.monotonic()
        limits = self.limits
        tokens = min(
            float(limits.command_burst),
            self._tokens + (now - self._tokens_at) * limits.command_rate,
        )
        self._tokens_at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    # ---- timers: connect deadline, pings, expiry -----------------------------------------

    def _reschedule(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        if self._closing is not None:
            return
        if self.principal is None:
            self.close(DisconnectCode.STALE)
            return
        if self.expires_at is not None and time.time() > self.expires_at + self.limits.expiry_grace:
            self.close(DisconnectCode.EXPIRED)
            return
        if self._awaiting_pong:
            self.close(DisconnectCode.NO_PONG)
            return
        self._awaiting_pong = True
        self.push(PING)
        self._reschedule(self.limits.ping_interval)


async def _finish(coroutine: Coroutine[object, object, None], waiting: object) -> None:
    """Run to its end a coroutine whose first step ran outside any task and stopped on
    ``waiting`` (what a coroutine hands its task: a future to wait for, or ``None``)."""
    while True:
        try:
            if isinstance(waiting, asyncio.Future):
                # Only wait: the coroutine reads the future's result itself when resumed.
                await asyncio.wait([waiting])
            else:
                await asyncio.sleep(0)
        except BaseException:
            coroutine.close()
            raise
        try:
            waiting = coroutine.send(None)
        except StopIteration:
            return


_SHARED_SETS: dict[frozenset[str], frozenset[str]] = {}
_SHARED_SETS_MAX = 4096


def _shared(values: frozenset[str]) -> frozenset[str]:
    """One copy of each distinct role or permission set: users mostly share a few, and
    every connection would otherwise keep its own (about 200 bytes each)."""
    if len(_SHARED_SETS) >= _SHARED_SETS_MAX:
        _SHARED_SETS.clear()
    return _SHARED_SETS.setdefault(values, values)


def _frames(batch: list[str], limit: int) -> Iterator[str]:
    """Join queued messages into frames of at most about ``limit`` characters."""
    if len(batch) == 1:
        yield batch[0]
        return
    start, size = 0, 0
    for index, text in enumerate(batch):
        if size and size + len(text) >= limit:
            yield "\n".join(batch[start:index])
            start, size = index, 0
        size += len(text) + 1
    yield "\n".join(batch[start:])
