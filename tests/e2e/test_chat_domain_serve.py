"""The chat domain on a real ``engineroom serve`` (embedded topology, SQLite), driven with
the real centrifuge-python SDK and REST: rooms, messages over REST and RPC, live events,
presence, history, recovery after a disconnect, receipts across devices, and refusals that
leave every other connection alone. One server serves the whole module; each test
registers its own users through the served identity API.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from centrifuge import ClientState, ReplyError

from tests.support.chat import (
    new_client,
    new_subscription,
    next_item,
    nothing_more,
    raw_client,
    settle,
    take,
)
from tests.support.chat_serve import (
    SERVER_ENV,
    ChatApi,
    expired_token,
    room_events,
    sent_messages,
    ws_url,
)
from tests.support.server import ServerProcess, serve_process

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_process(Path(tmp_path_factory.mktemp("chat-domain")), env=SERVER_ENV) as server:
        yield server


@pytest.fixture
async def api(served: ServerProcess) -> AsyncIterator[ChatApi]:
    async with httpx.AsyncClient(base_url=served.base_url, timeout=30, trust_env=False) as http:
        yield ChatApi(served, http)
    # The SDK closes its sockets in tasks of its own: let them finish in this loop.
    await settle()


def by_seq(messages: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(messages, key=lambda message: int(str(message["seq"])))


async def test_members_send_over_rest_and_rpc_and_read_it_all_back(api: ChatApi) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    room_id = await api.room(alice)
    await api.join(bob, room_id)
    alice_ws, _ = new_client(ws_url(api.server), alice.token)
    bob_ws, _ = new_client(ws_url(api.server), bob.token)
    await alice_ws.connect()
    await bob_ws.connect()
    alice_sub, alice_events = new_subscription(alice_ws, f"room:{room_id}")
    bob_sub, bob_events = new_subscription(bob_ws, f"room:{room_id}")
    await alice_sub.subscribe()
    await bob_sub.subscribe()
    await next_item(alice_events.subscribed)
    await next_item(bob_events.subscribed)

    by_rest = await api.send(alice, room_id, "hello over REST")
    by_rpc = (await bob_ws.rpc("chat.send", {"room_id": room_id, "body": "hello over RPC"})).data
    assert by_rest["author"]["id"] == alice.id
    assert by_rpc["author"]["id"] == bob.id
    assert by_rpc["seq"] == by_rest["seq"] + 1
    persisted = [by_rest, by_rpc]
    # Each member gets the persisted messages themselves, ids and seqs included.
    assert by_seq(await sent_messages(alice_events.publications, 2)) == persisted
    assert by_seq(await sent_messages(bob_events.publications, 2)) == persisted

    presence = await bob_sub.presence()
    assert sorted(info.user for info in presence.clients.values()) == sorted([alice.id, bob.id])

    history = await alice_sub.history(limit=100)
    kinds = [publication.data["type"] for publication in history.publications]
    assert kinds.count("message.sent") == 2
    assert set(kinds) <= {"room.created", "member.joined", "message.sent"}
    over_protocol = [
        publication.data["message"]
        for publication in history.publications
        if publication.data["type"] == "message.sent"
    ]
    assert by_seq(over_protocol) == persisted

    page = await api.get(bob, f"/rooms/{room_id}/messages")
    assert page == {"messages": [by_rpc, by_rest], "has_more": False}
    assert await api.history_ids(bob, room_id, before=by_rpc["id"]) == [by_rest["id"]]
    assert await api.history_ids(bob, room_id, after=by_rest["id"]) == [by_rpc["id"]]
    assert await api.history_ids(bob, room_id, before=by_rest["id"]) == []
    newest = await api.get(bob, f"/rooms/{room_id}/messages", limit=1)
    assert [m["id"] for m in newest["messages"]] == [by_rpc["id"]]
    assert newest["has_more"] is True
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_a_reconnecting_member_recovers_exactly_the_missed_messages(api: ChatApi) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    room_id = await api.room(alice)
    await api.join(bob, room_id)
    alice_ws, _ = new_client(ws_url(api.server), alice.token)
    bob_ws, _ = new_client(ws_url(api.server), bob.token)
    await alice_ws.connect()
    await bob_ws.connect()
    alice_sub, alice_events = new_subscription(alice_ws, f"room:{room_id}")
    bob_sub, bob_events = new_subscription(
        bob_ws, f"room:{room_id}", recoverable=True, positioned=True
    )
    await alice_sub.subscribe()
    await bob_sub.subscribe()
    await next_item(alice_events.subscribed)
    first = await next_item(bob_events.subscribed)
    assert first.recoverable
    assert first.positioned
    assert not first.was_recovering

    before_gap = await api.send(alice, room_id, "before the gap")
    assert await sent_messages(bob_events.publications, 1) == [before_gap]
    assert await sent_messages(alice_events.publications, 1) == [before_gap]

    await bob_ws.disconnect()
    missed_messages = [await api.send(alice, room_id, f"missed {n}") for n in range(5)]
    # Alice has them live: they are in the channel's history now.
    missed = await room_events(alice_events.publications, 5)
    assert by_seq([event["message"] for event in missed]) == missed_messages

    await bob_ws.connect()
    resubscribed = await next_item(bob_events.subscribed)
    assert resubscribed.was_recovering
    assert resubscribed.recovered
    assert await take(bob_events.publications, 5) == missed
    await nothing_more(bob_events.publications)

    after_gap = (await alice_ws.rpc("chat.send", {"room_id": room_id, "body": "after"})).data
    assert await sent_messages(bob_events.publications, 1) == [after_gap]
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_expired_tokens_and_strangers_are_refused_and_members_stay(api: ChatApi) -> None:
    alice = await api.user("alice")
    carol = await api.user("carol")
    room_id = await api.room(alice, kind="private")
    alice_ws, alice_client_events = new_client(ws_url(api.server), alice.token)
    await alice_ws.connect()
    alice_sub, alice_events = new_subscription(alice_ws, f"room:{room_id}")
    await alice_sub.subscribe()
    await next_item(alice_events.subscribed)

    late, late_events = new_client(ws_url(api.server), await expired_token(api.server, carol))
    await late.connect()
    refused = await next_item(late_events.errors)
    assert isinstance(refused.error, ReplyError)
    assert refused.error.code == 109
    await next_item(late_events.disconnected)
    assert late.state == ClientState.DISCONNECTED

    carol_ws, carol_client_events = new_client(ws_url(api.server), carol.token)
    await carol_ws.connect()
    stranger_sub, stranger_events = new_subscription(carol_ws, f"room:{room_id}")
    await stranger_sub.subscribe()
    assert (await next_item(stranger_events.unsubscribed)).code == 103
    assert carol_ws.state == ClientState.CONNECTED
    unknown = await api.http.get(f"/api/v1/chat/rooms/{room_id}/messages", headers=carol.auth)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "chat_room_not_found"

    still = await api.send(alice, room_id, "still here")
    assert await sent_messages(alice_events.publications, 1) == [still]
    assert alice_ws.state == ClientState.CONNECTED
    assert alice_client_events.disconnected.empty()
    assert carol_client_events.disconnected.empty()
    await alice_ws.disconnect()
    await carol_ws.disconnect()


async def test_edits_reactions_deletions_and_reads_reach_every_device(api: ChatApi) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    room_id = await api.room(alice)
    await api.join(bob, room_id)
    alice_ws, _ = new_client(ws_url(api.server), alice.token)
    phone, _ = new_client(ws_url(api.server), bob.token)
    laptop, _ = new_client(ws_url(api.server), bob.token)
    for client in (alice_ws, phone, laptop):
        await client.connect()
    alice_sub, alice_events = new_subscription(alice_ws, f"room:{room_id}")
    laptop_room, laptop_events = new_subscription(laptop, f"room:{room_id}")
    laptop_own, laptop_personal = new_subscription(laptop, f"#{bob.id}")
    for sub, events in (
        (alice_sub, alice_events),
        (laptop_room, laptop_events),
        (laptop_own, laptop_personal),
    ):
        await sub.subscribe()
        await next_item(events.subscribed)

    first = await api.send(alice, room_id, "first")
    mention = await api.send(alice, room_id, f"hello @{bob.username}")
    third = await api.send(alice, room_id, "third")
    for events in (alice_events, laptop_events):
        assert by_seq(await sent_messages(events.publications, 3)) == [first, mention, third]

    edited = await api.http.patch(
        f"/api/v1/chat/messages/{first['id']}", json={"body": "first, edited"}, headers=alice.auth
    )
    assert edited.status_code == 200, edited.text
    reacted = await api.http.put(
        f"/api/v1/chat/messages/{mention['id']}/reactions/👍", headers=bob.auth
    )
    assert reacted.status_code == 200, reacted.text
    deleted = await api.http.delete(f"/api/v1/chat/messages/{third['id']}", headers=alice.auth)
    assert deleted.status_code == 204, deleted.text
    for events in (alice_events, laptop_events):
        changes = sorted(
            await room_events(events.publications, 3), key=lambda event: str(event["type"])
        )
        assert [event["type"] for event in changes] == [
            "message.deleted",
            "message.edited",
            "reaction.added",
        ]
        removal, edit, reaction = changes
        assert (removal["message_id"], removal["seq"]) == (third["id"], third["seq"])
        assert removal["deleted_by"] == alice.id
        assert edit["message"] == edited.json()
        assert edit["message"]["body"] == "first, edited"
        assert edit["message"]["edited_at"] is not None
        assert (reaction["message_id"], reaction["emoji"]) == (mention["id"], "👍")
        assert (reaction["user_id"], reaction["count"]) == (bob.id, 1)
    tombstone = await api.get(bob, f"/messages/{third['id']}")
    assert (tombstone["deleted"], tombstone["body"], tombstone["seq"]) == (True, "", third["seq"])

    # Unread for Bob: "first" and the mention; the deleted one no longer counts.
    state = await api.unread(bob, room_id)
    assert (state["unread"], state["mentions"], state["last_seq"]) == (2, 1, third["seq"])
    own = (await phone.rpc("chat.send", {"room_id": room_id, "body": "mine"})).data
    state = await api.unread(bob, room_id)
    assert (state["unread"], state["mentions"], state["last_seq"]) == (2, 1, own["seq"])

    read = (await phone.rpc("chat.read", {"room_id": room_id, "message_id": own["id"]})).data
    assert (read["last_read_seq"], read["unread"], read["mentions"]) == (own["seq"], 0, 0)
    # The laptop hears of the mention, then of the read made on the phone.
    told = await room_events(laptop_personal.publications, 2)
    assert [event["type"] for event in told] == ["message.sent", "read.updated"]
    assert told[0]["message"]["id"] == mention["id"]
    update = told[1]
    assert (update["room_id"], update["user_id"]) == (room_id, bob.id)
    assert (update["last_read_seq"], update["unread"], update["mentions"]) == (own["seq"], 0, 0)
    state = await api.unread(bob, room_id)
    assert (state["unread"], state["mentions"], state["last_read_seq"]) == (0, 0, own["seq"])
    summary = await api.get(bob, "/unread")
    assert (summary["unread"], summary["mentions"]) == (0, 0)
    for client in (alice_ws, phone, laptop):
        await client.disconnect()


async def test_bad_input_gets_an_error_and_other_connections_keep_going(api: ChatApi) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    carol = await api.user("carol")
    room_id = await api.room(alice)
    await api.join(bob, room_id)
    alice_ws, alice_client_events = new_client(ws_url(api.server), alice.token)
    bob_ws, bob_client_events = new_client(ws_url(api.server), bob.token)
    carol_ws, _ = new_client(ws_url(api.server), carol.token)
    for client in (alice_ws, bob_ws, carol_ws):
        await client.connect()
    alice_sub, alice_events = new_subscription(alice_ws, f"room:{room_id}")
    await alice_sub.subscribe()
    await next_item(alice_events.subscribed)

    refusals = [
        (bob_ws, {"room_id": room_id, "body": "x" * 4001}, 413, "chat_message_too_long"),
        (bob_ws, {"room_id": str(uuid.uuid4()), "body": "hi"}, 404, "chat_room_not_found"),
        (bob_ws, {"room_id": room_id}, 107, "body"),
        (carol_ws, {"room_id": room_id, "body": "let me in"}, 403, "chat_not_a_member"),
    ]
    for client, data, code, message in refusals:
        with pytest.raises(ReplyError) as refused:
            await client.rpc("chat.send", data)
        assert (refused.value.code, refused.value.message.split(":")[0]) == (code, message)
        assert client.state == ClientState.CONNECTED
    accepted = (await bob_ws.rpc("chat.send", {"room_id": room_id, "body": "x" * 4000})).data
    assert await sent_messages(alice_events.publications, 1) == [accepted]

    # Frames that are not the protocol close that connection, and only that one.
    async with raw_client(ws_url(api.server)) as raw:
        await raw.connect(carol.token)
        await raw.send_text("this is not the protocol")
        assert await raw.closed() == 3501
    async with raw_client(ws_url(api.server)) as raw:
        await raw.connect(carol.token)
        await raw.send_text('{"id": 2, "rpc": {"data": "' + "x" * 70_000 + '"}}')
        assert await raw.closed() == 1009

    after = await api.send(bob, room_id, "everyone else is still here")
    assert await sent_messages(alice_events.publications, 1) == [after]
    for client, events in ((alice_ws, alice_client_events), (bob_ws, bob_client_events)):
        assert client.state == ClientState.CONNECTED
        assert events.disconnected.empty()
    for client in (alice_ws, bob_ws, carol_ws):
        await client.disconnect()
