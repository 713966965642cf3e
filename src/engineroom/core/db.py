"""Engines, sessions and the unit of work.

One ``Database`` per process owns a primary engine (writes) and zero or more read engines
(replicas). With SQLite the read engine is a second pool on the same file whose
transactions stay deferred, while the write engine opens every transaction with
``BEGIN IMMEDIATE`` (see docs/adr/0003-sqlite-begin-immediate.md).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from engineroom.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 15_000
CONNECT_TIMEOUT_S = 10
IDLE_PING_AFTER_S = 10.0
"""A pooled server connection idle this long is pinged before it is used again."""
_IDLE_SINCE = "engineroom.idle_since"

T = TypeVar("T")

AfterCommitHook = Callable[[AsyncSession], None]


class _OneCallCursor:
    """An aiosqlite cursor that runs a statement and fetches its rows in one call.

    Each call of an aiosqlite cursor is a hop to the connection's thread and back (a
    queue put, a thread wake-up, an event-loop wake-up), and SQLAlchemy makes four per
    statement: open a cursor, execute, fetch, close. This one makes one: the thread
    opens a cursor, executes, fetches every row and closes it, and the rest is answered
    from what it brought back. SQLAlchemy buffers every row of an aiosqlite result
    anyway; a streamed result is buffered here too.
    """

    __slots__ = ("_connection", "_rows", "arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, connection: Any) -> None:
        # aiosqlite's connection: its sqlite3 connection and its queue to the thread.
        self._connection = connection
        self._rows: deque[Any] = deque()
        self.arraysize = 1
        self.description: Any = None
        self.lastrowid: int | None = None
        self.rowcount = -1

    async def __aenter__(self) -> _OneCallCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._rows.clear()

    async def execute(self, sql: str, parameters: Any = None) -> _OneCallCursor:
        raw = self._connection._conn

        def run() -> tuple[Any, list[Any], int, int | None]:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, () if parameters is None else parameters)
                rows = cursor.fetchall() if cursor.description else []
                return cursor.description, rows, cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        self.description, rows, self.rowcount, self.lastrowid = await self._call(run)
        self._rows = deque(rows)
        return self

    async def executemany(self, sql: str, parameters: Any) -> _OneCallCursor:
        raw = self._connection._conn

        def run() -> tuple[Any, list[Any], int, int | None]:
            cursor = raw.cursor()
            try:
                cursor.executemany(sql, parameters)
                return cursor.description, [], cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        self.description, _, self.rowcount, self.lastrowid = await self._call(run)
        self._rows = deque()
        return self

    async def _call(self, function: Callable[[], T]) -> T:
        result: T = await self._connection._execute(function)
        return result

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(len(self._rows), self.arraysize if size is None else size)
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()


def _sqlite_pragmas(*, read_only: bool) -> Callable[[AsyncEngine], None]:
    begin_statement = "BEGIN" if read_only else "BEGIN IMMEDIATE"

    def install(engine: AsyncEngine) -> None:
        @event.listens_for(engine.sync_engine, "connect")
        def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            # SQLAlchemy asks the driver connection (aiosqlite's) for each cursor.
            driver: Any = record.driver_connection
            driver.cursor = partial(_OneCallCursor, driver)
            # Let SQLAlchemy, not the driver, decide when a transaction begins.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            if read_only:
                # A write through a read session fails loudly instead of vanishing in
                # the rollback that ends every read transaction.
                cursor.execute("PRAGMA query_only=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def on_begin(connection: Any) -> None:
            connection.exec_driver_sql(begin_statement)

        @event.listens_for(engine.sync_engine, "reset")
        def on_reset(
            dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState
        ) -> None:
            # The pool's own reset (off for these engines) rolls back every connection
            # it gets back, although a unit of work has committed or rolled back already:
            # one more hop to the driver's thread per transaction, for nothing. Roll back
            # only a transaction still open (an interrupted one).
            if not state.asyncio_safe or state.terminate_only:
                return
            driver = record.driver_connection
            try:
                still_open = driver is None or bool(driver.in_transaction)
            except Exception:  # closed or broken: let the rollback decide
                still_open = True
            if still_open:
                dbapi_connection.rollback()

    return install


def _switch_to_wal(path: str) -> None:
    """Put the file in WAL mode once, before any pool opens a connection.

    WAL is a property of the file. Switching a fresh file needs an exclusive lock, and
    when the first connections of the write and read pools race to switch it, a reader
    can get "database is locked" at once (SQLite does not wait on that lock). Done here,
    synchronously and only at start-up, every later ``PRAGMA journal_mode=WAL`` is a
    no-op that takes no lock.
    """
    with closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def create_engine_for(url: str, settings: Settings, *, read_only: bool = False) -> AsyncEngine:
    """Create an async engine with the per-dialect settings this project relies on."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": settings.database_echo}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            if not read_only:
                _switch_to_wal(database)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        # Replaced by the "reset" listener of _sqlite_pragmas.
        kwargs["pool_reset_on_return"] = None
        engine = create_async_engine(url, **kwargs)
        _sqlite_pragmas(read_only=read_only)(engine)
        return engine
    kwargs.update(
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_recycle=1800,
    )
    if parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_S, "command_timeout": 60}
    else:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        # PostgreSQL's default, and what the modules are written for: each statement sees
        # what has committed before it. Under InnoDB's default (REPEATABLE READ) a plain
        # read keeps the transaction's first snapshot, so a row that a concurrent
        # transaction inserted, and that this one's INSERT IGNORE then skipped, stayed
        # invisible to it (ADR 0023).
        kwargs["isolation_level"] = "READ COMMITTED"
    engine = create_async_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a pooled server connection before use when it has been idle a while.

    ``pool_pre_ping`` pings on every checkout: a round trip per transaction, while a
    connection returned moments ago is alive all but always. What a ping is for (a server
    restart, a proxy or firewall dropping idle connections) concerns connections that
    sat idle; those, past ``IDLE_PING_AFTER_S``, are still pinged, and a dead one is
    replaced before use. A connection that dies within that window fails its first
    statement instead; SQLAlchemy then invalidates the pool's older connections too.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_AFTER_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards the connection and checks out another (a new one if need be).
            raise DisconnectionError("an idle pooled connection is gone") from exc


_DEADLOCK_CODES = {1213, "40P01"}  # MySQL/MariaDB ER_LOCK_DEADLOCK, PostgreSQL


def is_deadlock(exc: DBAPIError) -> bool:
    """The database aborted this transaction to break a deadlock."""
    original = exc.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    args = getattr(original, "args", ())
    code = args[0] if args else None
    return sqlstate in _DEADLOCK_CODES or code in _DEADLOCK_CODES


class Database:
    """The process's engines and session factories."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.resolved_database_url
        self.engine = create_engine_for(self.url, settings)
        replica_urls = list(settings.database_replica_urls)
        if not replica_urls and settings.is_embedded_database:
            replica_urls = [self.url]
        self.read_engines = [create_engine_for(u, settings, read_only=True) for u in replica_urls]
        self._session_factory = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_factories = [
            async_sessionmaker(e, expire_on_commit=False) for e in self.read_engines
        ] or [self._session_factory]
        self._read_cycle = itertools.cycle(self._read_factories)
        self._after_commit_hooks: list[AfterCommitHook] = []

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def add_after_commit_hook(self, hook: AfterCommitHook) -> None:
        """Run ``hook(session)`` after each successful commit of a unit of work."""
        self._after_commit_hooks.append(hook)

    def session(self) -> AsyncSession:
        return self._session_factory()

    def read_session(self) -> AsyncSession:
        return next(self._read_cycle)()

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self._session_factory() as session:
            async with session.begin():
                yield session
            for hook in self._after_commit_hooks:
                hook(session)

    async def transaction(
        self, work: Callable[[AsyncSession], Awaitable[T]], *, attempts: int = 3
    ) -> T:
        """Run ``work`` in a unit of work, again from the start if the database chose it
        as a deadlock victim (InnoDB and PostgreSQL abort one side of a lock cycle and
        expect the client to retry the whole transaction)."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.unit_of_work() as session:
                    return await work(session)
            except OperationalError as exc:
                if attempt == attempts or not is_deadlock(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def read_only(self) -> AsyncIterator[AsyncSession]:
        """A read transaction, on a replica when one is configured; never committed."""
        async with self.read_session() as session, session.begin():
            yield session
            await session.rollback()

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
        for engine in self.read_engines:
            await engine.dispose()
