"""Where cookie sessions live: Redis when ``ENGINEROOM_REDIS_URL`` is set, else the database.

Both stores keep the same record, keyed by the SHA-256 of the session id (the cookie value
is never stored). Every method takes the caller's database session: the database store
writes in the caller's transaction (on SQLite a second writer would wait for the first),
the Redis store ignores it.

In Redis a session is one string key (JSON) that expires by itself when the session does,
plus a sorted set per user (member: session key id, score: absolute expiry) for listings
and "revoke all". A revoked session is deleted; an update writes only if the key still
exists, so a touch racing a revocation cannot bring the session back.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.errors import ServiceUnavailable
from engineroom.core.platform import Platform
from engineroom.identity.models import UserSession

REDIS_KEY_PREFIX = "engineroom:identity:session:"
_SOCKET_TIMEOUT = 1.0
_CONNECT_TIMEOUT = 2.0

T = TypeVar("T")
logger = structlog.get_logger("engineroom.identity.sessions")


@dataclass(frozen=True)
class SessionRecord:
    id: str
    """SHA-256 hex of the session id in the cookie; also the session's public id."""
    user_id: uuid.UUID
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    """The absolute end, whatever the activity."""
    idle_expires_at: datetime
    """The end if the session is not used again before then."""
    csrf_secret: str
    ip: str | None = None
    user_agent: str | None = None

    def is_active(self, now: datetime) -> bool:
        return now < self.expires_at and now < self.idle_expires_at


class SessionStore(Protocol):
    async def add(self, db: AsyncSession, record: SessionRecord) -> None: ...

    async def get(self, db: AsyncSession, session_id: str) -> SessionRecord | None:
        """The record unless revoked (expiry is the caller's to check)."""

    async def touch(
        self, db: AsyncSession, record: SessionRecord, *, seen_at: datetime, idle_until: datetime
    ) -> None: ...

    async def list_for_user(
        self, db: AsyncSession, user_id: uuid.UUID, now: datetime
    ) -> list[SessionRecord]:
        """The user's active sessions, oldest first."""

    async def revoke(
        self, db: AsyncSession, user_id: uuid.UUID, session_id: str, now: datetime
    ) -> bool:
        """Revoke one of the user's sessions; False if it was not theirs or not active."""

    async def revoke_user(
        self, db: AsyncSession, user_id: uuid.UUID, now: datetime, *, keep: str | None = None
    ) -> int:
        """Revoke every session of the user except ``keep``; returns how many."""

    async def close(self) -> None: ...


def _record_of(row: UserSession) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        user_id=row.user_id,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        expires_at=row.expires_at,
        idle_expires_at=row.idle_expires_at,
        csrf_secret=row.csrf_secret,
        ip=row.ip,
        user_agent=row.user_agent,
    )


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class DatabaseSessionStore:
    """Sessions in ``identity_session``; revoked and expired rows are purged at login."""

    async def add(self, db: AsyncSession, record: SessionRecord) -> None:
        # Keep the table small: a user's dead sessions go when they sign in again.
        await db.execute(
            delete(UserSession).where(
                UserSession.user_id == record.user_id,
                or_(
                    UserSession.revoked_at.is_not(None),
                    UserSession.expires_at <= record.created_at,
                    UserSession.idle_expires_at <= record.created_at,
                ),
            )
        )
        db.add(UserSession(**asdict(record), revoked_at=None))
        await db.flush()

    async def get(self, db: AsyncSession, session_id: str) -> SessionRecord | None:
        row = await db.scalar(
            select(UserSession).where(
                UserSession.id == session_id, UserSession.revoked_at.is_(None)
            )
        )
        return None if row is None else _record_of(row)

    async def touch(
        self, db: AsyncSession, record: SessionRecord, *, seen_at: datetime, idle_until: datetime
    ) -> None:
        await db.execute(
            update(UserSession)
            .where(UserSession.id == record.id, UserSession.revoked_at.is_(None))
            .values(last_seen_at=seen_at, idle_expires_at=idle_until)
        )

    async def list_for_user(
        self, db: AsyncSession, user_id: uuid.UUID, now: datetime
    ) -> list[SessionRecord]:
        rows = await db.scalars(
            select(UserSession)
            .where(
                UserSession.user_id == user_id,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > now,
                UserSession.idle_expires_at > now,
            )
            .order_by(UserSession.created_at, UserSession.id)
        )
        return [_record_of(row) for row in rows]

    async def revoke(
        self, db: AsyncSession, user_id: uuid.UUID, session_id: str, now: datetime
    ) -> bool:
        result = await db.execute(
            update(UserSession)
            .where(
                UserSession.id == session_id,
                UserSession.user_id == user_id,
                UserSession.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        return _rowcount(result) == 1

    async def revoke_user(
        self, db: AsyncSession, user_id: uuid.UUID, now: datetime, *, keep: str | None = None
    ) -> int:
        query = update(UserSession).where(
            UserSession.user_id == user_id, UserSession.revoked_at.is_(None)
        )
        if keep is not None:
            query = query.where(UserSession.id != keep)
        return _rowcount(await db.execute(query.values(revoked_at=now)))

    async def close(self) -> None:
        return None


def _encode(record: SessionRecord) -> str:
    data = asdict(record)
    data["user_id"] = str(record.user_id)
    for name in ("created_at", "last_seen_at", "expires_at", "idle_expires_at"):
        data[name] = getattr(record, name).isoformat()
    return json.dumps(data, separators=(",", ":"))


def _decode(raw: str | bytes) -> SessionRecord | None:
    try:
        data = json.loads(raw)
        return SessionRecord(
            id=str(data["id"]),
            user_id=uuid.UUID(str(data["user_id"])),
            created_at=datetime.fromisoformat(data["created_at"]),
            last_seen_at=datetime.fromisoformat(data["last_seen_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            idle_expires_at=datetime.fromisoformat(data["idle_expires_at"]),
            csrf_secret=str(data["csrf_secret"]),
            ip=data.get("ip"),
            user_agent=data.get("user_agent"),
        )
    except (ValueError, KeyError, TypeError):
        # A damaged entry is no session; never a 500.
        return None


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class RedisSessionStore:
    """Sessions in Redis under ``key_prefix`` (``s:<id>`` records, ``u:<user>`` indexes)."""

    def __init__(self, client: Redis, *, key_prefix: str = REDIS_KEY_PREFIX) -> None:
        self._redis = client
        self._prefix = key_prefix

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str = REDIS_KEY_PREFIX) -> RedisSessionStore:
        client = Redis.from_url(
            url,
            socket_timeout=_SOCKET_TIMEOUT,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            client_name="engineroom-sessions",
        )
        return cls(client, key_prefix=key_prefix)

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}s:{session_id}"

    def _user_key(self, user_id: uuid.UUID) -> str:
        return f"{self._prefix}u:{user_id}"

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except RedisError as exc:
            logger.error("session_store_unavailable", error=str(exc))
            raise ServiceUnavailable("The session store is unreachable; try again.") from None

    async def add(self, db: AsyncSession, record: SessionRecord) -> None:
        async def run() -> None:
            user_key = self._user_key(record.user_id)
            ends = min(record.expires_at, record.idle_expires_at)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key(record.id), _encode(record), pxat=_ms(ends))
                pipe.zremrangebyscore(user_key, "-inf", _ms(record.created_at))
                pipe.zadd(user_key, {record.id: _ms(record.expires_at)})
                # The index lives as long as its longest session (absolute lifetimes only grow).
                pipe.pexpireat(user_key, _ms(record.expires_at), gt=True)
                pipe.pexpireat(user_key, _ms(record.expires_at), nx=True)
                await pipe.execute()

        await self._call(run)

    async def get(self, db: AsyncSession, session_id: str) -> SessionRecord | None:
        raw = await self._call(lambda: self._redis.get(self._key(session_id)))
        return None if raw is None else _decode(raw)

    async def touch(
        self, db: AsyncSession, record: SessionRecord, *, seen_at: datetime, idle_until: datetime
    ) -> None:
        updated = SessionRecord(
            **{**asdict(record), "last_seen_at": seen_at, "idle_expires_at": idle_until}
        )
        ends = min(updated.expires_at, updated.idle_expires_at)
        # XX: only an existing key is updated, so a revoked session stays revoked.
        await self._call(
            lambda: self._redis.set(self._key(record.id), _encode(updated), pxat=_ms(ends), xx=True)
        )

    async def list_for_user(
        self, db: AsyncSession, user_id: uuid.UUID, now: datetime
    ) -> list[SessionRecord]:
        async def run() -> list[SessionRecord]:
            user_key = self._user_key(user_id)
            await self._redis.zremrangebyscore(user_key, "-inf", _ms(now))
            members = [_text(m) for m in await self._redis.zrange(user_key, 0, -1)]
            if not members:
                return []
            values = await self._redis.mget([self._key(m) for m in members])
            records: list[SessionRecord] = []
            gone: list[str] = []
            for member, value in zip(members, values, strict=True):
                record = None if value is None else _decode(value)
                if record is None or not record.is_active(now):
                    gone.append(member)
                else:
                    records.append(record)
            if gone:
                await self._redis.zrem(user_key, *gone)
            return sorted(records, key=lambda r: (r.created_at, r.id))

        return await self._call(run)

    async def revoke(
        self, db: AsyncSession, user_id: uuid.UUID, session_id: str, now: datetime
    ) -> bool:
        async def run() -> bool:
            # Membership in the user's index proves ownership of the session id.
            removed = await self._redis.zrem(self._user_key(user_id), session_id)
            if not removed:
                return False
            deleted = await self._redis.delete(self._key(session_id))
            return bool(deleted)

        return await self._call(run)

    async def revoke_user(
        self, db: AsyncSession, user_id: uuid.UUID, now: datetime, *, keep: str | None = None
    ) -> int:
        async def run() -> int:
            user_key = self._user_key(user_id)
            members = [_text(m) for m in await self._redis.zrange(user_key, 0, -1)]
            doomed = [m for m in members if m != keep]
            if not doomed:
                return 0
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(*(self._key(m) for m in doomed))
                pipe.zrem(user_key, *doomed)
                deleted, _removed = await pipe.execute()
            return int(deleted)

        return await self._call(run)

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_STORES: weakref.WeakKeyDictionary[Platform, SessionStore] = weakref.WeakKeyDictionary()


def session_store(platform: Platform) -> SessionStore:
    """The platform's session store, made on first use (no connection is opened here)."""
    store = _STORES.get(platform)
    if store is None:
        redis_url = platform.settings.redis_url
        store = (
            DatabaseSessionStore() if redis_url is None else RedisSessionStore.from_url(redis_url)
        )
        _STORES[platform] = store
    return store


def use_session_store(platform: Platform, store: SessionStore) -> None:
    """Serve the platform's sessions from ``store`` (embedders and tests)."""
    _STORES[platform] = store


_PENDING: weakref.WeakKeyDictionary[Platform, set[asyncio.Task[None]]] = weakref.WeakKeyDictionary()


def write_later(
    platform: Platform, write: Callable[[AsyncSession], Awaitable[None]], *, what: str
) -> None:
    """Run ``write`` in a transaction of its own, after the caller moves on.

    For bookkeeping (a session's last activity, a key's last use) found while resolving a
    principal: it must neither delay the request nor fail it, and on SQLite a request
    whose own transaction already writes would otherwise wait for itself.
    """

    async def run() -> None:
        try:
            async with platform.database.unit_of_work() as db:
                await write(db)
        except Exception:
            logger.exception("background_write_failed", what=what)

    task = asyncio.get_running_loop().create_task(run())
    pending = _PENDING.setdefault(platform, set())
    pending.add(task)
    task.add_done_callback(pending.discard)


async def flush_writes(platform: Platform) -> None:
    """Wait for every ``write_later`` write of the platform (shutdown, tests)."""
    pending = _PENDING.get(platform)
    while pending:
        await asyncio.gather(*list(pending), return_exceptions=True)


async def close_session_store(platform: Platform) -> None:
    """Finish pending writes and release the store's connections (a shutdown hook)."""
    await flush_writes(platform)
    store = _STORES.pop(platform, None)
    if store is not None:
        await store.close()
