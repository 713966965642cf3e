"""Presence in one process: online, away and offline over several devices of one user,
``chat.presence``, the ``status:<user>`` channel and the REST reads."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from centrifuge import Client, ReplyError

from tests.integration.chat.test_activity_factories import (  # noqa: F401  (fixtures)
    API,
    Person,
    World,
    activity_settings,
    backend_fixture,
    database_url_fixture,
    settings_for,
    world_fixture,
    world_on,
)
from tests.support.chat import WAIT, SubEvents, new_client, new_subscription, next_item


async def connected(world: World, person: Person) -> Client:
    client, _ = new_client(world.server.ws_url, person.token)
    await client.connect()
    return client


async def status_becomes(world: World, viewer: Person, person: Person, status: str) -> None:
    """Wait until ``GET /presence`` answers ``status`` for ``person`` (or fail)."""
    seen = None
    for _ in range(int(WAIT / 0.02)):
        seen = (await world.statuses(viewer, person))[str(person.id)]
        if seen == status:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{person.username} is still {seen}, not {status}")


async def following(client: Client, person: Person) -> SubEvents:
    subscription, events = new_subscription(client, f"status:{person.id}")
    await subscription.subscribe()
    await next_item(events.subscribed)
    return events


async def published(events: SubEvents, person: Person, status: str) -> dict[str, Any]:
    """The next publication announcing ``status`` (a change may be announced twice)."""
    while True:
        data: dict[str, Any] = (await next_item(events.publications)).pub.data
        assert data["type"] == "presence"
        assert data["user_id"] == str(person.id)
        if data["status"] == status:
            return data


async def report(client: Client, status: str) -> str:
    reply = await client.rpc("chat.presence", {"status": status})
    result: str = reply.data["status"]
    return result


async def test_online_away_offline_across_two_devices(world: World) -> None:
    alice, bob = await world.person("alice"), await world.person("bob")
    assert await world.statuses(bob, alice) == {str(alice.id): "offline"}
    watcher = await connected(world, bob)
    news = await following(watcher, alice)

    phone = await connected(world, alice)
    await status_becomes(world, bob, alice, "online")
    await published(news, alice, "online")
    laptop = await connected(world, alice)

    # One device away is not enough while the other is in use...
    assert await report(phone, "away") == "online"
    await status_becomes(world, bob, alice, "online")
    # ...all of them are.
    assert await report(laptop, "away") == "away"
    assert (await world.statuses(bob, alice))[str(alice.id)] == "away"
    await published(news, alice, "away")
    assert await report(phone, "online") == "online"
    await published(news, alice, "online")

    # The device in use leaves: what is left is away.
    await phone.disconnect()
    await status_becomes(world, bob, alice, "away")
    await published(news, alice, "away")
    await laptop.disconnect()
    await status_becomes(world, bob, alice, "offline")
    await published(news, alice, "offline")
    await watcher.disconnect()


async def test_a_new_connection_may_report_before_it_was_scanned(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", tmp_path)
    # Scans every minute: the status report has to find its connection by itself.
    async with world_on(settings, activity_settings(presence_scan_interval=60)) as world:
        alice = await world.person()
        await asyncio.sleep(0.3)  # the first scan (right after start) is over
        phone = await connected(world, alice)
        assert await report(phone, "away") == "away"
        assert await world.statuses(alice, alice) == {str(alice.id): "away"}
        await phone.disconnect()


async def test_connections_that_open_and_end_show_without_waiting_for_a_scan(
    tmp_path: Path,
) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", tmp_path)
    # Periodic scans every minute: only the wake-up of a connect or a close can explain
    # a status that changes within the wait.
    async with world_on(settings, activity_settings(presence_scan_interval=60)) as world:
        alice, bob = await world.person(), await world.person()
        await asyncio.sleep(0.3)  # the first scan (right after start) is over
        watcher = await connected(world, bob)
        news = await following(watcher, alice)
        phone = await connected(world, alice)
        await status_becomes(world, bob, alice, "online")
        await published(news, alice, "online")
        await phone.disconnect()
        await status_becomes(world, bob, alice, "offline")
        await published(news, alice, "offline")
        await watcher.disconnect()


async def test_status_reports_are_checked(world: World) -> None:
    alice = await world.person()
    phone = await connected(world, alice)
    for data in ({"status": "offline"}, {"status": "busy"}, {}, {"status": "away", "x": 1}, 7):
        with pytest.raises(ReplyError) as refused:
            await phone.rpc("chat.presence", data)
        assert refused.value.code == 107, data
    assert await report(phone, "away") == "away"
    await phone.disconnect()


async def test_status_channels(world: World) -> None:
    alice, bob = await world.person(), await world.person()
    client = await connected(world, bob)
    for channel in ("status:lobby", f"status:{str(alice.id).upper()}", f"status:{alice.id}#x"):
        subscription, events = new_subscription(client, channel)
        await subscription.subscribe()
        assert (await next_item(events.unsubscribed)).code == 103, channel
    subscription, events = new_subscription(client, f"status:{alice.id}")
    await subscription.subscribe()
    assert not (await next_item(events.subscribed)).recoverable
    with pytest.raises(ReplyError) as no_publish:
        await subscription.publish({"type": "presence", "status": "online"})
    assert no_publish.value.code == 103
    with pytest.raises(ReplyError) as no_presence:
        await subscription.presence()
    assert no_presence.value.code == 108
    await client.disconnect()


async def test_presence_reads_over_rest(world: World) -> None:
    alice, bob, carol = await world.person(), await world.person(), await world.person()
    room = await world.room(alice, members=[bob, carol])
    private = await world.room(alice, kind="private", members=[bob])
    phone = await connected(world, alice)
    laptop = await connected(world, carol)
    await report(laptop, "away")
    await status_becomes(world, bob, alice, "online")

    assert await world.statuses(bob, alice, bob, carol, alice) == {
        str(alice.id): "online",
        str(bob.id): "offline",
        str(carol.id): "away",
    }
    url = f"{API}/rooms/{room}/presence"
    everyone = await world.http.get(url, headers=bob.auth)
    assert everyone.status_code == 200, everyone.text
    assert everyone.json() == {
        "statuses": {str(alice.id): "online", str(bob.id): "offline", str(carol.id): "away"},
        "next_cursor": None,
    }
    pages: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await world.http.get(url, params=params, headers=bob.auth)).json()
        assert len(page["statuses"]) <= 2
        pages.update(page["statuses"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == everyone.json()["statuses"]

    hidden = await world.http.get(f"{API}/rooms/{private}/presence", headers=carol.auth)
    assert hidden.status_code == 404
    assert hidden.json()["code"] == "chat_room_not_found"
    unknown = await world.http.get(f"{API}/rooms/{uuid.uuid4()}/presence", headers=bob.auth)
    assert unknown.status_code == 404
    bad_queries: list[list[tuple[str, str | int | float | bool | None]]] = [
        [],
        [("user_id", "nobody")],
        [("user_id", str(uuid.uuid4())) for _ in range(101)],
    ]
    for query in bad_queries:
        refused = await world.http.get(f"{API}/presence", params=query, headers=bob.auth)
        assert refused.status_code == 422, query
    assert (await world.http.get(url)).status_code == 401
    hundred: list[tuple[str, str | int | float | bool | None]] = [
        ("user_id", str(uuid.uuid4())) for _ in range(100)
    ]
    most = await world.http.get(f"{API}/presence", params=hundred, headers=bob.auth)
    assert most.status_code == 200
    assert set(most.json()["statuses"].values()) == {"offline"}
    for client in (phone, laptop):
        await client.disconnect()
