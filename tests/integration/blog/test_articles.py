"""Articles through the RealWorld API: create, read, update, delete, lists and filters."""

from __future__ import annotations

import asyncio
import re

from tests.integration.blog.conftest import Blog

ISO_MILLIS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ARTICLE_KEYS = {
    "slug",
    "title",
    "description",
    "body",
    "bodyHtml",
    "tagList",
    "createdAt",
    "updatedAt",
    "favorited",
    "favoritesCount",
    "author",
}


async def test_create_returns_201_with_the_full_article(blog: Blog) -> None:
    alice = await blog.user("alice")
    response = await blog.client.post(
        "/api/articles",
        json={
            "article": {
                "title": "How to train your dragon",
                "description": "Ever wonder how?",
                "body": "Very *carefully*.",
                "tagList": ["training", "dragons", "training", " "],
            }
        },
        headers=alice.auth,
    )
    assert response.status_code == 201
    article = response.json()["article"]
    assert set(article) == ARTICLE_KEYS
    assert article["slug"] == "how-to-train-your-dragon"
    assert article["tagList"] == ["dragons", "training"]
    assert article["bodyHtml"] == "<p>Very <em>carefully</em>.</p>\n"
    assert ISO_MILLIS_Z.match(article["createdAt"])
    assert ISO_MILLIS_Z.match(article["updatedAt"])
    assert article["favorited"] is False
    assert article["favoritesCount"] == 0
    assert article["author"] == {
        "username": "alice",
        "bio": None,
        "image": None,
        "following": False,
    }


async def test_get_by_slug_anonymous_and_unknown(blog: Blog) -> None:
    alice = await blog.user()
    created = await blog.article(alice, title="Hello World")
    response = await blog.client.get(f"/api/articles/{created['slug']}")
    assert response.status_code == 200
    assert response.json()["article"] == created
    missing = await blog.client.get("/api/articles/no-such-article")
    assert missing.status_code == 404
    assert missing.json() == {"errors": {"body": ["No article at 'no-such-article'."]}}


async def test_same_title_gets_distinct_slugs(blog: Blog) -> None:
    alice = await blog.user()
    first = await blog.article(alice, title="Same")
    second = await blog.article(alice, title="Same")
    assert first["slug"] == "same"
    assert second["slug"].startswith("same-")
    assert second["slug"] != first["slug"]


async def test_reserved_words_never_become_slugs(blog: Blog) -> None:
    alice = await blog.user()
    feed = await blog.article(alice, title="Feed")
    drafts = await blog.article(alice, title="Drafts!")
    assert feed["slug"].startswith("feed-")
    assert drafts["slug"].startswith("drafts-")
    assert (await blog.client.get(f"/api/articles/{feed['slug']}")).status_code == 200


async def test_create_requires_a_token(blog: Blog) -> None:
    body = {"article": {"title": "t", "description": "d", "body": "b"}}
    missing = await blog.client.post("/api/articles", json=body)
    assert missing.status_code == 401
    assert "errors" in missing.json()
    invalid = await blog.client.post(
        "/api/articles", json=body, headers={"Authorization": "Token not-a-jwt"}
    )
    assert invalid.status_code == 401
    bearer_user = await blog.user()
    bearer = await blog.client.post(
        "/api/articles", json=body, headers={"Authorization": f"Bearer {bearer_user.token}"}
    )
    assert bearer.status_code == 201


async def test_invalid_articles_get_422_with_field_errors(blog: Blog) -> None:
    alice = await blog.user()
    blank = await blog.client.post(
        "/api/articles",
        json={"article": {"title": "  ", "description": "", "body": None}},
        headers=alice.auth,
    )
    assert blank.status_code == 422
    assert blank.json() == {
        "errors": {
            "title": ["can't be blank"],
            "description": ["can't be blank"],
            "body": ["can't be blank"],
        }
    }
    too_long = await blog.client.post(
        "/api/articles",
        json={"article": {"title": "x" * 201, "description": "d", "body": "b"}},
        headers=alice.auth,
    )
    assert too_long.status_code == 422
    assert too_long.json()["errors"]["title"] == ["is too long (maximum is 200 characters)"]
    tags = await blog.client.post(
        "/api/articles",
        json={"article": {"title": "t", "description": "d", "body": "b", "tagList": ["a" * 65]}},
        headers=alice.auth,
    )
    assert tags.status_code == 422
    assert "tagList" in tags.json()["errors"]
    wrong_type = await blog.client.post(
        "/api/articles",
        json={"article": {"title": 5, "description": "d", "body": "b"}},
        headers=alice.auth,
    )
    assert wrong_type.status_code == 422
    assert "errors" in wrong_type.json()
    nul = await blog.client.post(
        "/api/articles",
        json={
            "article": {"title": "t\x00", "description": "d", "body": "b\x00", "tagList": ["\x00"]}
        },
        headers=alice.auth,
    )
    assert nul.status_code == 422
    assert set(nul.json()["errors"]) == {"title", "body", "tagList"}
    no_envelope = await blog.client.post("/api/articles", json={"title": "t"}, headers=alice.auth)
    assert no_envelope.status_code == 422
    not_json = await blog.client.post(
        "/api/articles",
        content=b"{not json",
        headers={**alice.auth, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422


async def test_update_changes_fields_and_slug_on_new_title(blog: Blog) -> None:
    alice = await blog.user()
    created = await blog.article(alice, title="Old title", tagList=["b"])
    response = await blog.client.put(
        f"/api/articles/{created['slug']}",
        json={"article": {"title": "New title", "body": "# Heading", "tagList": ["z", "a"]}},
        headers=alice.auth,
    )
    assert response.status_code == 200
    article = response.json()["article"]
    assert article["slug"] == "new-title"
    assert article["title"] == "New title"
    assert article["description"] == created["description"]
    assert article["bodyHtml"] == "<h1>Heading</h1>\n"
    assert article["tagList"] == ["a", "z"]
    assert article["updatedAt"] >= created["updatedAt"]
    assert article["createdAt"] == created["createdAt"]
    assert (await blog.client.get("/api/articles/old-title")).status_code == 404
    assert (await blog.client.get("/api/articles/new-title")).status_code == 200
    tags = (await blog.client.get("/api/tags")).json()["tags"]
    assert sorted(tags) == ["a", "z"]


async def test_update_keeps_slug_when_title_unchanged(blog: Blog) -> None:
    alice = await blog.user()
    created = await blog.article(alice, title="Stay")
    response = await blog.client.put(
        f"/api/articles/{created['slug']}",
        json={"article": {"title": "Stay", "description": "new"}},
        headers=alice.auth,
    )
    assert response.json()["article"]["slug"] == "stay"
    assert response.json()["article"]["description"] == "new"


async def test_only_the_author_updates_or_deletes(blog: Blog) -> None:
    alice, bob = await blog.user(), await blog.user()
    created = await blog.article(alice)
    url = f"/api/articles/{created['slug']}"
    update = await blog.client.put(url, json={"article": {"body": "x"}}, headers=bob.auth)
    assert update.status_code == 403
    assert "errors" in update.json()
    delete = await blog.client.delete(url, headers=bob.auth)
    assert delete.status_code == 403
    assert (await blog.client.delete(url)).status_code == 401
    assert (
        await blog.client.put("/api/articles/nope", json={"article": {}}, headers=bob.auth)
    ).status_code == 404
    assert (await blog.client.delete("/api/articles/nope", headers=bob.auth)).status_code == 404


async def test_delete_returns_204_with_empty_body_and_removes_everything(blog: Blog) -> None:
    alice, bob = await blog.user(), await blog.user()
    created = await blog.article(alice, tagList=["gone"])
    url = f"/api/articles/{created['slug']}"
    await blog.client.post(f"{url}/favorite", headers=bob.auth)
    await blog.client.post(f"{url}/comments", json={"comment": {"body": "hi"}}, headers=bob.auth)
    response = await blog.client.delete(url, headers=alice.auth)
    assert response.status_code == 204
    assert response.content == b""
    assert (await blog.client.get(url)).status_code == 404
    assert (await blog.client.get(f"{url}/comments")).status_code == 404
    listing = (await blog.client.get("/api/articles")).json()
    assert listing == {"articles": [], "articlesCount": 0}
    assert (await blog.client.get("/api/tags")).json() == {"tags": []}
    assert (await blog.client.get(f"/api/articles?favorited={bob.username}")).json()[
        "articlesCount"
    ] == 0


async def test_list_is_newest_first_without_bodies_and_counts_all(blog: Blog) -> None:
    alice = await blog.user()
    slugs = [(await blog.article(alice, title=f"Article {i}"))["slug"] for i in range(5)]
    response = await blog.client.get("/api/articles", params={"limit": 2, "offset": 1})
    assert response.status_code == 200
    data = response.json()
    assert data["articlesCount"] == 5
    assert [a["slug"] for a in data["articles"]] == [slugs[3], slugs[2]]
    for article in data["articles"]:
        assert "body" not in article
        assert set(article) == ARTICLE_KEYS - {"body", "bodyHtml"}
    past_end = (await blog.client.get("/api/articles", params={"offset": 10})).json()
    assert past_end == {"articles": [], "articlesCount": 5}
    everything = (await blog.client.get("/api/articles")).json()
    dates = [a["createdAt"] for a in everything["articles"]]
    assert dates == sorted(dates, reverse=True)


async def test_list_filters_by_tag_author_and_favorited(blog: Blog) -> None:
    alice, bob = await blog.user("alice"), await blog.user("bob")
    a1 = await blog.article(alice, title="A1", tagList=["dragons", "training"])
    await blog.article(alice, title="A2", tagList=["cats"])
    b1 = await blog.article(bob, title="B1", tagList=["dragons"])
    await blog.client.post(f"/api/articles/{a1['slug']}/favorite", headers=bob.auth)

    async def slugs(**params: str) -> tuple[int, list[str]]:
        data = (await blog.client.get("/api/articles", params=params)).json()
        return data["articlesCount"], [a["slug"] for a in data["articles"]]

    assert await slugs(tag="dragons") == (2, [b1["slug"], a1["slug"]])
    assert await slugs(author="alice") == (2, ["a2", "a1"])
    assert await slugs(author="ALICE") == (2, ["a2", "a1"])
    assert await slugs(favorited="bob") == (1, ["a1"])
    assert await slugs(tag="dragons", author="bob") == (1, ["b1"])
    assert await slugs(tag="nope") == (0, [])
    assert await slugs(author="nobody") == (0, [])
    tagged = (await blog.client.get("/api/articles", params={"tag": "dragons"})).json()
    assert tagged["articles"][1]["tagList"] == ["dragons", "training"]


async def test_bad_paging_parameters_get_422(blog: Blog) -> None:
    for params in ({"limit": "0"}, {"limit": "abc"}, {"offset": "-1"}, {"limit": "101"}):
        response = await blog.client.get("/api/articles", params=params)
        assert response.status_code == 422, params
        assert "errors" in response.json()


async def test_token_seeds_the_author_before_any_event(blog: Blog) -> None:
    # The relay has not delivered identity.user.registered: the token's claims suffice.
    carol = await blog.user("carol")
    article = await blog.article(carol)
    assert article["author"]["username"] == "carol"
    profile = await blog.client.get("/api/profiles/carol")
    assert profile.status_code == 200


async def test_profile_changes_reach_articles_through_events(blog: Blog) -> None:
    dave = await blog.user("dave")
    created = await blog.article(dave)
    updated = await blog.client.put(
        "/api/user",
        json={"user": {"bio": "I write", "image": "https://example.com/d.png"}},
        headers=dave.auth,
    )
    assert updated.status_code == 200
    await blog.deliver_events()
    article = (await blog.client.get(f"/api/articles/{created['slug']}")).json()["article"]
    assert article["author"]["bio"] == "I write"
    assert article["author"]["image"] == "https://example.com/d.png"


async def test_concurrent_first_articles_of_a_new_user(blog: Blog) -> None:
    # The writer is known to the blog only by its token: every create seeds the author
    # row, and each must see the row another one committed (InnoDB's REPEATABLE READ
    # snapshot hid it: the article was written and the answer was 404).
    writer = await blog.user()
    answers = await asyncio.gather(
        *(
            blog.client.post(
                "/api/articles",
                json={
                    "article": {"title": f"First words {index}", "description": "d", "body": "b"}
                },
                headers=writer.auth,
            )
            for index in range(6)
        )
    )
    assert [answer.status_code for answer in answers] == [201] * 6, [
        answer.text for answer in answers if answer.status_code != 201
    ]
    listed = await blog.client.get("/api/articles", params={"author": writer.username})
    assert listed.json()["articlesCount"] == 6
