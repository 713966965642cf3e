"""Both session stores behave the same: the database (SQLite, PostgreSQL, MariaDB) and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engineroom.core.clock import utcnow
from engineroom.core.db import Database
from engineroom.core.errors import ServiceUnavailable
from engineroom.core.migrations.runner import upgrade
from engineroom.identity import module as identity_module
from engineroom.identity.csrf import new_csrf_secret
from engineroom.identity.models import User
from engineroom.identity.session_store import (
    DatabaseSessionStore,
    RedisSessionStore,
    SessionRecord,
    SessionStore,
)
from engineroom.settings import Settings
from tests.support.server import free_port
from tests.support.settings import settings_on


@dataclass
class StoreCase:
    store: SessionStore
    database: Database
    redis: Redis | None
    prefix: str


def _settings(tmp_path: Path, url: str | None = None) -> Settings:
    return settings_on(url, tmp_path)


async def _database(settings: Settings) -> Database:
    await upgrade(settings, [identity_module])
    return Database(settings)


@dataclass(frozen=True)
class Backend:
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = ""


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    # Sync on purpose: an async fixture cannot pull in the async service fixtures by name.
    if request.param in ("postgres", "mariadb"):
        return Backend(database_url=request.getfixturevalue(f"{request.param}_url"))
    if request.param == "redis":
        return Backend(
            redis_url=request.getfixturevalue("redis_url"),
            redis_prefix=request.getfixturevalue("redis_prefix"),
        )
    return Backend()


@pytest.fixture
async def case(backend: Backend, tmp_path: Path) -> AsyncIterator[StoreCase]:
    database = await _database(_settings(tmp_path, backend.database_url))
    redis: Redis | None = None
    store: SessionStore = DatabaseSessionStore()
    if backend.redis_url is not None:
        redis = Redis.from_url(backend.redis_url)
        store = RedisSessionStore(
            Redis.from_url(backend.redis_url), key_prefix=backend.redis_prefix
        )
    try:
        yield StoreCase(store=store, database=database, redis=redis, prefix=backend.redis_prefix)
    finally:
        await store.close()
        if redis is not None:
            keys = [key async for key in redis.scan_iter(match=f"{backend.redis_prefix}*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
        await database.dispose()


async def _user(database: Database, name: str) -> uuid.UUID:
    async with database.unit_of_work() as db:
        user = User(
            email=f"{name}@example.com",
            username=name,
            username_key=name,
            password_hash="x",
        )
        db.add(user)
        await db.flush()
        return user.id


def _record(
    user_id: uuid.UUID,
    now: datetime,
    *,
    idle: timedelta = timedelta(hours=1),
    absolute: timedelta = timedelta(days=1),
    created: datetime | None = None,
) -> SessionRecord:
    start = created or now
    return SessionRecord(
        id=uuid.uuid4().hex + uuid.uuid4().hex,
        user_id=user_id,
        created_at=start,
        last_seen_at=start,
        expires_at=start + absolute,
        idle_expires_at=start + idle,
        csrf_secret=new_csrf_secret(),
        ip="192.0.2.1",
        user_agent="pytest",
    )


async def test_add_get_touch_round_trip(case: StoreCase) -> None:
    user_id = await _user(case.database, "ann")
    now = utcnow()
    record = _record(user_id, now)
    async with case.database.unit_of_work() as db:
        await case.store.add(db, record)
    async with case.database.read_only() as db:
        assert await case.store.get(db, record.id) == record
        assert await case.store.get(db, "0" * 64) is None
    later, idle = now + timedelta(minutes=5), now + timedelta(minutes=65)
    async with case.database.unit_of_work() as db:
        await case.store.touch(db, record, seen_at=later, idle_until=idle)
    async with case.database.read_only() as db:
        touched = await case.store.get(db, record.id)
    assert touched is not None
    assert touched.last_seen_at == later
    assert touched.idle_expires_at == idle
    assert touched.expires_at == record.expires_at


async def test_revoke_only_the_owners_session_and_only_once(case: StoreCase) -> None:
    ann, bob = await _user(case.database, "ann"), await _user(case.database, "bob")
    now = utcnow()
    record = _record(ann, now)
    async with case.database.unit_of_work() as db:
        await case.store.add(db, record)
        assert not await case.store.revoke(db, bob, record.id, now)
        assert await case.store.revoke(db, ann, record.id, now)
        assert not await case.store.revoke(db, ann, record.id, now)
    async with case.database.read_only() as db:
        assert await case.store.get(db, record.id) is None
    # A touch after revocation must not bring the session back.
    async with case.database.unit_of_work() as db:
        await case.store.touch(db, record, seen_at=now, idle_until=now + timedelta(hours=1))
    async with case.database.read_only() as db:
        assert await case.store.get(db, record.id) is None


async def test_listing_shows_active_sessions_oldest_first(case: StoreCase) -> None:
    ann, bob = await _user(case.database, "ann"), await _user(case.database, "bob")
    now = utcnow()
    first = _record(ann, now, created=now - timedelta(minutes=2))
    second = _record(ann, now, created=now - timedelta(minutes=1))
    idle_out = _record(ann, now, created=now - timedelta(hours=2), idle=timedelta(hours=1))
    bobs = _record(bob, now)
    async with case.database.unit_of_work() as db:
        for record in (idle_out, second, first, bobs):
            await case.store.add(db, record)
    async with case.database.read_only() as db:
        listed = await case.store.list_for_user(db, ann, now)
    assert [r.id for r in listed] == [first.id, second.id]
    async with case.database.read_only() as db:
        # Two hours on, every idle timeout has run out.
        assert await case.store.list_for_user(db, ann, now + timedelta(hours=2)) == []


async def test_revoke_all_but_one(case: StoreCase) -> None:
    ann, bob = await _user(case.database, "ann"), await _user(case.database, "bob")
    now = utcnow()
    mine = [_record(ann, now) for _ in range(3)]
    bobs = _record(bob, now)
    async with case.database.unit_of_work() as db:
        for record in (*mine, bobs):
            await case.store.add(db, record)
    async with case.database.unit_of_work() as db:
        assert await case.store.revoke_user(db, ann, now, keep=mine[0].id) == 2
    async with case.database.read_only() as db:
        assert [r.id for r in await case.store.list_for_user(db, ann, now)] == [mine[0].id]
        assert await case.store.get(db, bobs.id) == bobs
    async with case.database.unit_of_work() as db:
        assert await case.store.revoke_user(db, ann, now) == 1
        assert await case.store.revoke_user(db, ann, now) == 0
    async with case.database.read_only() as db:
        assert await case.store.list_for_user(db, ann, now) == []


@pytest.mark.redis
async def test_redis_records_expire_on_their_own(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    client = Redis.from_url(redis_url)
    store = RedisSessionStore(Redis.from_url(redis_url), key_prefix=redis_prefix)
    database = Database(_settings(tmp_path))
    try:
        now = utcnow()
        record = _record(uuid.uuid4(), now, idle=timedelta(seconds=30), absolute=timedelta(hours=1))
        async with database.read_only() as db:
            await store.add(db, record)
        ttl = await client.pttl(f"{redis_prefix}s:{record.id}")
        assert 25_000 < ttl <= 30_000, "the idle timeout bounds the key's life"
        async with database.read_only() as db:
            await store.touch(db, record, seen_at=now, idle_until=now + timedelta(hours=5))
        ttl = await client.pttl(f"{redis_prefix}s:{record.id}")
        assert 3_500_000 < ttl <= 3_600_000, "the absolute lifetime bounds it too"
        await client.set(f"{redis_prefix}s:{record.id}", b"{not json")
        async with database.read_only() as db:
            assert await store.get(db, record.id) is None
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await store.close()
        await database.dispose()


async def test_an_unreachable_redis_is_a_503_not_a_crash(tmp_path: Path) -> None:
    store = RedisSessionStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    database = Database(_settings(tmp_path))
    try:
        async with database.read_only() as db:
            with pytest.raises(ServiceUnavailable):
                await store.get(db, "0" * 64)
    finally:
        await store.close()
        await database.dispose()
