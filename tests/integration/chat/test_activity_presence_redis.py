"""Presence across processes: two servers sharing the real Redis (a random key prefix),
one user's devices on both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from engineroom.chat.config import ChatSettings
from engineroom.settings import Settings
from tests.integration.chat.test_activity_factories import World, activity_settings, world_on
from tests.integration.chat.test_activity_presence import (
    connected,
    following,
    published,
    report,
    status_becomes,
)

pytestmark = pytest.mark.redis


def redis_chat(redis_url: str, prefix: str, **overrides: Any) -> ChatSettings:
    return activity_settings(broker="redis", redis_url=redis_url, redis_prefix=prefix, **overrides)


@asynccontextmanager
async def cleaned(redis_url: str, prefix: str) -> AsyncIterator[None]:
    try:
        yield
    finally:
        client = aioredis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@asynccontextmanager
async def two_worlds(settings: Settings, chat: ChatSettings) -> AsyncIterator[tuple[World, World]]:
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(world_on(settings, chat))
        two = await stack.enter_async_context(world_on(settings, chat))
        yield one, two


async def test_status_combines_devices_on_both_processes(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    chat = redis_chat(redis_url, redis_prefix)
    async with cleaned(redis_url, redis_prefix), two_worlds(settings, chat) as (one, two):
        alice = await one.person("alice")
        bob = await two.person("bob")
        watcher = await connected(two, bob)
        news = await following(watcher, alice)

        phone = await connected(one, alice)
        laptop = await connected(two, alice)
        await status_becomes(two, bob, alice, "online")
        await published(news, alice, "online")
        # A new connection enters the shared presence at its process's next scan, or at
        # its own first report: report, so that the laptop surely counts from here on.
        assert await report(laptop, "online") == "online"

        # Away on one process; the device on the other keeps her online.
        assert await report(phone, "away") == "online"
        assert await report(laptop, "away") == "away"
        for world in (one, two):
            await status_becomes(world, bob, alice, "away")
        await published(news, alice, "away")
        # A change made on the first process reaches a follower on the second.
        assert await report(phone, "online") == "online"
        await published(news, alice, "online")

        await phone.disconnect()
        await status_becomes(two, bob, alice, "away")
        await published(news, alice, "away")
        await laptop.disconnect()
        await status_becomes(one, bob, alice, "offline")
        await published(news, alice, "offline")
        await watcher.disconnect()


async def test_entries_are_refreshed_before_they_expire(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    chat = redis_chat(redis_url, redis_prefix, presence_ttl=3)
    async with cleaned(redis_url, redis_prefix), two_worlds(settings, chat) as (one, two):
        alice = await one.person()
        phone = await connected(one, alice)
        await report(phone, "away")
        await asyncio.sleep(4)  # longer than the TTL: only refreshed entries are left
        assert (await two.statuses(alice, alice))[str(alice.id)] == "away"
        await phone.disconnect()
        await status_becomes(two, alice, alice, "offline")


async def test_a_stopping_process_takes_its_devices_offline(
    settings: Settings, redis_url: str, redis_prefix: str
) -> None:
    chat = redis_chat(redis_url, redis_prefix)  # entries would live 60 s on their own
    async with cleaned(redis_url, redis_prefix), world_on(settings, chat) as two:
        async with world_on(settings, chat) as one:
            alice = await one.person()
            phone = await connected(one, alice)
            await status_becomes(two, alice, alice, "online")
        try:
            await status_becomes(two, alice, alice, "offline")
        finally:
            await phone.disconnect()
