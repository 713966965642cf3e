"""Profiles, follows, the feed and favorites."""

from __future__ import annotations

from tests.integration.blog.conftest import Blog


async def test_profile_anonymous_authenticated_and_unknown(blog: Blog) -> None:
    alice, bob = await blog.user("alice"), await blog.user("bob")
    anonymous = await blog.client.get("/api/profiles/alice")
    assert anonymous.status_code == 200
    assert anonymous.json() == {
        "profile": {"username": "alice", "bio": None, "image": None, "following": False}
    }
    await blog.client.post("/api/profiles/alice/follow", headers=bob.auth)
    seen_by_bob = await blog.client.get("/api/profiles/alice", headers=bob.auth)
    assert seen_by_bob.json()["profile"]["following"] is True
    seen_by_alice = await blog.client.get("/api/profiles/alice", headers=alice.auth)
    assert seen_by_alice.json()["profile"]["following"] is False
    missing = await blog.client.get("/api/profiles/nobody")
    assert missing.status_code == 404
    assert missing.json() == {"errors": {"body": ["No profile named 'nobody'."]}}


async def test_profile_of_a_user_who_never_wrote_before_events(blog: Blog) -> None:
    # Registered a moment ago; no event delivered, no article written: identity's
    # facade answers for the projection.
    await blog.user("quiet")
    response = await blog.client.get("/api/profiles/quiet")
    assert response.status_code == 200
    assert response.json()["profile"]["username"] == "quiet"


async def test_follow_and_unfollow(blog: Blog) -> None:
    await blog.user("celeb")
    fan = await blog.user("fan")
    # RealWorld clients may send a body with the follow request; it is ignored.
    followed = await blog.client.post(
        "/api/profiles/celeb/follow", json={"user": {"email": "x"}}, headers=fan.auth
    )
    assert followed.status_code == 200
    assert followed.json()["profile"] == {
        "username": "celeb",
        "bio": None,
        "image": None,
        "following": True,
    }
    again = await blog.client.post("/api/profiles/celeb/follow", headers=fan.auth)
    assert again.json()["profile"]["following"] is True
    unfollowed = await blog.client.delete("/api/profiles/celeb/follow", headers=fan.auth)
    assert unfollowed.status_code == 200
    assert unfollowed.json()["profile"]["following"] is False


async def test_follow_errors(blog: Blog) -> None:
    fan = await blog.user("fan")
    assert (await blog.client.post("/api/profiles/fan/follow")).status_code == 401
    assert (await blog.client.delete("/api/profiles/fan/follow")).status_code == 401
    unknown = await blog.client.post("/api/profiles/ghost/follow", headers=fan.auth)
    assert unknown.status_code == 404
    itself = await blog.client.post("/api/profiles/fan/follow", headers=fan.auth)
    assert itself.status_code == 422
    assert itself.json() == {"errors": {"username": ["is yourself"]}}


async def test_feed_shows_followed_authors_only(blog: Blog) -> None:
    celeb, other, fan = await blog.user("celeb"), await blog.user("other"), await blog.user()
    first = await blog.article(celeb, title="First")
    await blog.article(other, title="Other")
    second = await blog.article(celeb, title="Second")
    empty = await blog.client.get("/api/articles/feed", headers=fan.auth)
    assert empty.json() == {"articles": [], "articlesCount": 0}
    await blog.client.post("/api/profiles/celeb/follow", headers=fan.auth)
    feed = (await blog.client.get("/api/articles/feed", headers=fan.auth)).json()
    assert feed["articlesCount"] == 2
    assert [a["slug"] for a in feed["articles"]] == [second["slug"], first["slug"]]
    assert all(a["author"]["following"] for a in feed["articles"])
    assert all("body" not in a for a in feed["articles"])
    page = (await blog.client.get("/api/articles/feed?limit=1&offset=1", headers=fan.auth)).json()
    assert page["articlesCount"] == 2
    assert [a["slug"] for a in page["articles"]] == [first["slug"]]
    assert (await blog.client.get("/api/articles/feed")).status_code == 401


async def test_favorite_and_unfavorite(blog: Blog) -> None:
    alice, bob, carol = await blog.user(), await blog.user(), await blog.user()
    created = await blog.article(alice)
    url = f"/api/articles/{created['slug']}/favorite"
    favorited = await blog.client.post(url, headers=bob.auth)
    assert favorited.status_code == 200
    article = favorited.json()["article"]
    assert article["favorited"] is True
    assert article["favoritesCount"] == 1
    assert "body" in article
    twice = await blog.client.post(url, headers=bob.auth)
    assert twice.json()["article"]["favoritesCount"] == 1
    by_carol = await blog.client.post(url, headers=carol.auth)
    assert by_carol.json()["article"]["favoritesCount"] == 2
    listed = (await blog.client.get("/api/articles", headers=bob.auth)).json()["articles"][0]
    assert listed["favorited"] is True
    assert listed["favoritesCount"] == 2
    anonymous = (await blog.client.get("/api/articles")).json()["articles"][0]
    assert anonymous["favorited"] is False
    removed = await blog.client.delete(url, headers=bob.auth)
    assert removed.status_code == 200
    assert removed.json()["article"]["favorited"] is False
    assert removed.json()["article"]["favoritesCount"] == 1
    removed_again = await blog.client.delete(url, headers=bob.auth)
    assert removed_again.json()["article"]["favoritesCount"] == 1


async def test_favorite_errors(blog: Blog) -> None:
    alice = await blog.user()
    created = await blog.article(alice)
    url = f"/api/articles/{created['slug']}/favorite"
    assert (await blog.client.post(url)).status_code == 401
    assert (await blog.client.delete(url)).status_code == 401
    missing = await blog.client.post("/api/articles/nope/favorite", headers=alice.auth)
    assert missing.status_code == 404
    assert missing.json() == {"errors": {"body": ["No article at 'nope'."]}}
