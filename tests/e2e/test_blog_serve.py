"""The blog on a real ``engineroom serve`` (SQLite, every module, the relay running)."""

from __future__ import annotations

import time

from tests.support.server import ServerProcess

PASSWORD = "Tr0ub4dor-and-3-Horses-Staple!"


def test_realworld_round_trip_on_a_running_server(embedded_server: ServerProcess) -> None:
    with embedded_server.client() as client:
        registered = client.post(
            "/api/users",
            json={
                "user": {"username": "e2ewriter", "email": "e2e@example.com", "password": PASSWORD}
            },
        )
        assert registered.status_code == 201, registered.text
        auth = {"Authorization": f"Token {registered.json()['user']['token']}"}
        created = client.post(
            "/api/articles",
            json={
                "article": {
                    "title": "Served",
                    "description": "d",
                    "body": "# Hi",
                    "tagList": ["e2e"],
                }
            },
            headers=auth,
        )
        assert created.status_code == 201
        slug = created.json()["article"]["slug"]
        listed = client.get("/api/articles")
        assert listed.json()["articlesCount"] == 1
        assert (
            client.get(
                "/api/articles", headers={"If-None-Match": listed.headers["etag"]}
            ).status_code
            == 304
        )

        # The relay delivers identity.user.updated to the blog's projection in the background.
        client.put("/api/user", json={"user": {"bio": "from identity"}}, headers=auth)
        deadline = time.monotonic() + 10
        bio = None
        while time.monotonic() < deadline:
            bio = client.get(f"/api/articles/{slug}").json()["article"]["author"]["bio"]
            if bio == "from identity":
                break
            time.sleep(0.1)
        assert bio == "from identity"

        deleted = client.delete(f"/api/articles/{slug}", headers=auth)
        assert deleted.status_code == 204
        assert deleted.content == b""
        assert client.get(f"/api/articles/{slug}").status_code == 404
        assert client.get("/api/articles").json() == {"articles": [], "articlesCount": 0}
