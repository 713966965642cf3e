"""``/api/v1/chat/realtime/...``: publishing and inspecting channels from a backend."""

from __future__ import annotations

import httpx

from engineroom.settings import Settings
from tests.support.chat import chat_server, new_client, new_subscription, next_item, take
from tests.support.identity_credentials import grant_role

API = "/api/v1/chat/realtime"
PUBLISHER = ("chat:realtime:publish",)


async def test_publish_history_presence_and_disconnect(settings: Settings) -> None:
    async with chat_server(settings) as server:
        user_id, token = await server.token()
        _, backend_token = await server.token(username="backend", permissions=PUBLISHER)
        client, client_events = new_client(server.ws_url, token)
        await client.connect()
        sub, events = new_subscription(client, "public:alerts")
        await sub.subscribe()
        await next_item(events.subscribed)
        headers = {"Authorization": f"Bearer {backend_token}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as http:
            published = await http.post(
                f"{API}/publish",
                json={"channel": "public:alerts", "data": {"level": "red"}, "tags": {"k": "v"}},
            )
            assert published.status_code == 200, published.text
            assert published.json()["offset"] == 1
            received = await next_item(events.publications)
            assert received.pub.data == {"level": "red"}
            assert received.pub.tags == {"k": "v"}
            assert received.pub.info is None

            broadcast = await http.post(
                f"{API}/broadcast",
                json={"channels": ["public:alerts", "nowhere:x", "#" + user_id], "data": 2},
            )
            assert broadcast.status_code == 200
            results = broadcast.json()["responses"]
            assert results[0]["result"]["offset"] == 2
            assert results[1]["error"] == "chat_unknown_channel"
            assert results[2]["result"]["offset"] == 1
            assert await take(events.publications, 1) == [2]

            history = await http.post(f"{API}/history", json={"channel": "public:alerts"})
            assert history.status_code == 200
            body = history.json()
            assert [p["data"] for p in body["publications"]] == [{"level": "red"}, 2]
            assert body["publications"][0]["tags"] == {"k": "v"}
            stale = await http.post(
                f"{API}/history",
                json={"channel": "public:alerts", "since": {"offset": 0, "epoch": "old"}},
            )
            assert stale.status_code == 409
            assert stale.json()["code"] == "chat_unrecoverable_position"

            presence = await http.post(f"{API}/presence", json={"channel": "public:alerts"})
            assert [info["user"] for info in presence.json()["presence"].values()] == [user_id]
            stats = await http.post(f"{API}/presence_stats", json={"channel": "public:alerts"})
            assert stats.json() == {"num_clients": 1, "num_users": 1}

            gone = await http.post(f"{API}/disconnect", json={"user": user_id, "code": 4501})
            assert gone.status_code == 204
            disconnected = await next_item(client_events.disconnected)
            assert disconnected.code == 4501


async def test_bad_requests_are_clear_4xx(settings: Settings) -> None:
    async with chat_server(settings) as server:
        _, member = await server.token()
        _, backend = await server.token(permissions=PUBLISHER)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            anonymous = await http.post(f"{API}/publish", json={"channel": "public:a", "data": 1})
            assert anonymous.status_code == 401
            forbidden = await http.post(
                f"{API}/publish",
                json={"channel": "public:a", "data": 1},
                headers={"Authorization": f"Bearer {member}"},
            )
            assert forbidden.status_code == 403
            http.headers["Authorization"] = f"Bearer {backend}"
            cases = [
                ("publish", {"channel": "nowhere:a", "data": 1}, 404, "chat_unknown_channel"),
                ("publish", {"channel": "bad channel", "data": 1}, 400, "chat_invalid_channel"),
                ("publish", {"channel": "public:a"}, 422, "validation_failed"),
                ("publish", {"channel": "", "data": 1}, 422, "validation_failed"),
                ("publish", {"channel": "public:a", "data": 1, "x": 1}, 422, "validation_failed"),
                ("broadcast", {"channels": [], "data": 1}, 422, "validation_failed"),
                ("disconnect", {"user": "u", "code": 1000}, 422, "validation_failed"),
            ]
            for path, payload, status, code in cases:
                response = await http.post(f"{API}/{path}", json=payload)
                assert response.status_code == status, (path, payload, response.text)
                assert response.json()["code"] == code
            not_json = await http.post(
                f"{API}/publish", content=b"{", headers={"Content-Type": "application/json"}
            )
            assert not_json.status_code == 422


async def test_an_api_key_may_publish(settings: Settings) -> None:
    async with (
        chat_server(settings) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        registered = await http.post(
            "/api/v1/identity/users",
            json={
                "email": "backend@example.com",
                "username": "backend",
                "password": "correct horse battery staple",
            },
        )
        assert registered.status_code == 201, registered.text
        user_id = registered.json()["id"]
        await grant_role(server.platform, user_id, "publisher", list(PUBLISHER))
        login = await http.post(
            "/api/v1/identity/token",
            json={"email": "backend@example.com", "password": "correct horse battery staple"},
        )
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = await http.post(
            "/api/v1/identity/api-keys",
            json={"name": "chat", "scopes": list(PUBLISHER)},
            headers=bearer,
        )
        assert created.status_code == 201, created.text
        api_key = created.json()["key"]
        published = await http.post(
            f"{API}/publish",
            json={"channel": "public:keys", "data": "ok"},
            headers={"X-API-Key": api_key},
        )
        assert published.status_code == 200, published.text
