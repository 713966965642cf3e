"""Beyond the spec: drafts, search, Atom feeds, HTTP caching, limits, concurrency, events."""

from __future__ import annotations

import asyncio
from xml.etree import ElementTree as ET

import pytest

from engineroom.blog.config import blog_settings
from engineroom.core.events import publish
from engineroom.identity.public import EVENT_USER_DELETED, get_user_by_username
from tests.integration.blog.conftest import Blog

ATOM = "{http://www.w3.org/2005/Atom}"


async def test_drafts_are_seen_by_their_author_only(blog: Blog) -> None:
    alice, bob = await blog.user("alice"), await blog.user("bob")
    draft = await blog.article(alice, title="Secret", published=False, tagList=["hidden"])
    assert draft["published"] is False
    url = f"/api/articles/{draft['slug']}"
    assert (await blog.client.get(url, headers=alice.auth)).status_code == 200
    assert (await blog.client.get(url)).status_code == 404
    assert (await blog.client.get(url, headers=bob.auth)).status_code == 404
    assert (await blog.client.post(f"{url}/favorite", headers=bob.auth)).status_code == 404
    assert (await blog.client.get(f"{url}/comments", headers=bob.auth)).status_code == 404
    assert (await blog.client.get("/api/articles")).json()["articlesCount"] == 0
    assert (await blog.client.get("/api/articles?author=alice")).json()["articlesCount"] == 0
    assert (await blog.client.get("/api/tags")).json() == {"tags": []}
    drafts = (await blog.client.get("/api/articles/drafts", headers=alice.auth)).json()
    assert [a["slug"] for a in drafts["articles"]] == [draft["slug"]]
    assert (await blog.client.get("/api/articles/drafts", headers=bob.auth)).json()[
        "articlesCount"
    ] == 0
    published = await blog.client.put(
        url, json={"article": {"published": True}}, headers=alice.auth
    )
    assert published.status_code == 200
    assert "published" not in published.json()["article"]
    assert (await blog.client.get(url)).status_code == 200
    assert (await blog.client.get("/api/tags")).json() == {"tags": ["hidden"]}


async def test_search_ranks_title_matches_first(blog: Blog) -> None:
    alice = await blog.user()
    body_hit = await blog.article(
        alice, title="Gardening", description="Plants", body="Dragons like tomatoes too."
    )
    title_hit = await blog.article(
        alice, title="Dragons of the north", description="A guide", body="Cold places."
    )
    await blog.article(alice, title="Unrelated", description="Nothing", body="Nothing here.")
    response = await blog.client.get("/api/articles", params={"search": "dragons"})
    assert response.status_code == 200
    data = response.json()
    assert data["articlesCount"] == 2
    assert [a["slug"] for a in data["articles"]] == [title_hit["slug"], body_hit["slug"]]
    stemmed = (await blog.client.get("/api/articles", params={"search": "dragon"})).json()
    assert stemmed["articlesCount"] == 2
    combined = await blog.client.get("/api/articles", params={"search": "dragons tomatoes"})
    assert [a["slug"] for a in combined.json()["articles"]] == [body_hit["slug"]]
    nothing = (await blog.client.get("/api/articles", params={"search": "zebra"})).json()
    assert nothing == {"articles": [], "articlesCount": 0}


async def test_search_survives_hostile_queries_and_follows_updates(blog: Blog) -> None:
    alice = await blog.user()
    created = await blog.article(alice, title="Quantum", body="entanglement")
    for query in ('"', "AND OR NOT", "*", "a:b", "'); DROP TABLE x; --", "(((", "NEAR(", "^"):
        response = await blog.client.get("/api/articles", params={"search": query})
        assert response.status_code == 200, query
    await blog.client.put(
        f"/api/articles/{created['slug']}",
        json={"article": {"body": "superposition"}},
        headers=alice.auth,
    )
    assert (await blog.client.get("/api/articles?search=entanglement")).json()["articlesCount"] == 0
    assert (await blog.client.get("/api/articles?search=superposition")).json()[
        "articlesCount"
    ] == 1
    await blog.client.delete(f"/api/articles/{created['slug']}", headers=alice.auth)
    assert (await blog.client.get("/api/articles?search=superposition")).json()[
        "articlesCount"
    ] == 0


async def test_atom_feeds_per_author_and_tag(blog: Blog) -> None:
    alice = await blog.user("alice")
    await blog.article(
        alice, title="First <post>", body="Hello *world* <script>x</script>", tagList=["news"]
    )
    await blog.article(alice, title="Second", body="Bye\x1b now", tagList=["news", "misc"])
    await blog.article(alice, title="Hidden", published=False, tagList=["news"])
    response = await blog.client.get("/api/feeds/authors/alice")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(response.content)
    assert feed.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated"):
        assert feed.find(f"{ATOM}{required}") is not None
    assert feed.find(f"{ATOM}link[@rel='self']") is not None
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries] == ["Second", "First <post>"]
    for entry in entries:
        assert entry.findtext(f"{ATOM}id", "").startswith("urn:uuid:")
        assert entry.findtext(f"{ATOM}updated", "").endswith("Z")
        assert entry.find(f"{ATOM}author/{ATOM}name") is not None
        assert entry.find(f"{ATOM}content").get("type") == "html"  # type: ignore[union-attr]
    first_html = entries[1].findtext(f"{ATOM}content", "")
    assert "<em>world</em>" in first_html
    assert "<script>" not in first_html
    tagged = ET.fromstring((await blog.client.get("/api/feeds/tags/misc")).content)
    assert [e.findtext(f"{ATOM}title") for e in tagged.findall(f"{ATOM}entry")] == ["Second"]
    empty = ET.fromstring((await blog.client.get("/api/feeds/tags/none")).content)
    assert empty.findall(f"{ATOM}entry") == []
    assert empty.find(f"{ATOM}author/{ATOM}name") is not None
    assert (await blog.client.get("/api/feeds/authors/ghost")).status_code == 404


async def test_public_reads_carry_etags_and_answer_304(blog: Blog) -> None:
    alice = await blog.user()
    created = await blog.article(alice, tagList=["t"])
    for url in ("/api/articles", f"/api/articles/{created['slug']}", "/api/tags"):
        first = await blog.client.get(url)
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "public, no-cache"
        assert "Authorization" in first.headers["vary"]
        cached = await blog.client.get(url, headers={"If-None-Match": etag})
        assert cached.status_code == 304, url
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        other = await blog.client.get(url, headers={"If-None-Match": '"other"'})
        assert other.status_code == 200
    private = await blog.client.get("/api/articles", headers=alice.auth)
    assert private.headers["cache-control"] == "private, no-cache"
    assert private.headers["etag"]


async def test_cached_reads_never_outlive_a_write(blog: Blog) -> None:
    alice, bob = await blog.user(), await blog.user()
    created = await blog.article(alice, tagList=["t"])
    url = f"/api/articles/{created['slug']}"
    before = await blog.client.get("/api/articles")
    assert (await blog.client.get(url)).status_code == 200
    await blog.client.post(f"{url}/favorite", headers=bob.auth)
    listed = (await blog.client.get("/api/articles")).json()["articles"][0]
    assert listed["favoritesCount"] == 1
    changed = await blog.client.get(
        "/api/articles", headers={"If-None-Match": before.headers["etag"]}
    )
    assert changed.status_code == 200
    assert (await blog.client.delete(url, headers=alice.auth)).status_code == 204
    assert (await blog.client.get(url)).status_code == 404
    assert (await blog.client.get("/api/articles")).json()["articlesCount"] == 0
    assert (await blog.client.get("/api/tags")).json() == {"tags": []}


async def test_a_reader_racing_a_delete_cannot_repopulate_the_cache(blog: Blog) -> None:
    alice = await blog.user()
    created = await blog.article(alice)
    url = f"/api/articles/{created['slug']}"
    readers = [blog.client.get(url) for _ in range(20)]
    deletion = blog.client.delete(url, headers=alice.auth)
    *_, deleted = await asyncio.gather(*readers, deletion)
    assert deleted.status_code == 204
    for _ in range(3):
        assert (await blog.client.get(url)).status_code == 404


async def test_writes_are_rate_limited(blog: Blog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEROOM_BLOG_WRITE_RATE_LIMIT", "3/minute")
    blog_settings.cache_clear()
    alice, bob = await blog.user(), await blog.user()
    statuses = [
        (
            await blog.client.post(
                "/api/articles",
                json={"article": {"title": f"t{i}", "description": "d", "body": "b"}},
                headers=alice.auth,
            )
        ).status_code
        for i in range(4)
    ]
    assert statuses == [201, 201, 201, 429]
    limited = await blog.client.post(
        "/api/articles",
        json={"article": {"title": "x", "description": "d", "body": "b"}},
        headers=alice.auth,
    )
    assert "retry-after" in limited.headers
    assert "errors" in limited.json()
    # Per user: bob still writes; reads are never limited.
    other = await blog.client.post(
        "/api/articles",
        json={"article": {"title": "b", "description": "d", "body": "b"}},
        headers=bob.auth,
    )
    assert other.status_code == 201
    assert (await blog.client.get("/api/articles")).status_code == 200


async def test_concurrent_creates_of_one_title_get_unique_slugs(blog: Blog) -> None:
    alice = await blog.user()
    responses = await asyncio.gather(
        *(
            blog.client.post(
                "/api/articles",
                json={"article": {"title": "Race", "description": "d", "body": "b"}},
                headers=alice.auth,
            )
            for _ in range(8)
        )
    )
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    slugs = {r.json()["article"]["slug"] for r in responses}
    assert len(slugs) == 8
    assert "race" in slugs


async def test_user_deleted_event_removes_their_content(blog: Blog) -> None:
    alice, bob = await blog.user("alice"), await blog.user("bob")
    kept = await blog.article(bob, title="Kept")
    gone = await blog.article(alice, title="Gone")
    await blog.client.post(f"/api/articles/{kept['slug']}/favorite", headers=alice.auth)
    await blog.client.post(
        f"/api/articles/{kept['slug']}/comments",
        json={"comment": {"body": "hi"}},
        headers=alice.auth,
    )
    await blog.client.post("/api/profiles/bob/follow", headers=alice.auth)
    assert (await blog.client.get(f"/api/articles/{gone['slug']}")).status_code == 200
    async with blog.platform.database.unit_of_work() as session:
        found = await get_user_by_username(session, "alice")
        assert found is not None
        publish(session, EVENT_USER_DELETED, {"user_id": str(found.id), "username": "alice"})
    await blog.deliver_events()
    assert (await blog.client.get(f"/api/articles/{gone['slug']}")).status_code == 404
    article = (await blog.client.get(f"/api/articles/{kept['slug']}")).json()["article"]
    assert article["favoritesCount"] == 0
    assert (await blog.client.get(f"/api/articles/{kept['slug']}/comments")).json() == {
        "comments": []
    }
    assert (await blog.client.get("/api/articles?search=gone")).json()["articlesCount"] == 0
    assert (await blog.client.get("/api/profiles/bob", headers=bob.auth)).status_code == 200
