"""Comments: list, add, delete, and who may delete."""

from __future__ import annotations

import re

from tests.integration.blog.conftest import Blog

ISO_MILLIS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_add_and_list_comments(blog: Blog) -> None:
    alice, bob = await blog.user("alice"), await blog.user("bob")
    created = await blog.article(alice)
    url = f"/api/articles/{created['slug']}/comments"
    first = await blog.client.post(url, json={"comment": {"body": "First!"}}, headers=bob.auth)
    assert first.status_code == 200
    comment = first.json()["comment"]
    assert set(comment) == {"id", "createdAt", "updatedAt", "body", "author"}
    assert isinstance(comment["id"], int)
    assert ISO_MILLIS_Z.match(comment["createdAt"])
    assert comment["body"] == "First!"
    assert comment["author"] == {"username": "bob", "bio": None, "image": None, "following": False}
    await blog.client.post(url, json={"comment": {"body": "Second"}}, headers=alice.auth)
    listed = await blog.client.get(url)
    assert listed.status_code == 200
    assert [c["body"] for c in listed.json()["comments"]] == ["Second", "First!"]
    await blog.client.post("/api/profiles/bob/follow", headers=alice.auth)
    seen_by_alice = (await blog.client.get(url, headers=alice.auth)).json()["comments"]
    assert seen_by_alice[1]["author"]["following"] is True


async def test_comment_errors(blog: Blog) -> None:
    alice = await blog.user()
    created = await blog.article(alice)
    url = f"/api/articles/{created['slug']}/comments"
    no_token = await blog.client.post(url, json={"comment": {"body": "x"}})
    assert no_token.status_code == 401
    blank = await blog.client.post(url, json={"comment": {"body": "  "}}, headers=alice.auth)
    assert blank.status_code == 422
    assert blank.json() == {"errors": {"body": ["can't be blank"]}}
    nul = await blog.client.post(url, json={"comment": {"body": "a\x00b"}}, headers=alice.auth)
    assert nul.status_code == 422
    missing_body = await blog.client.post(url, json={"comment": {}}, headers=alice.auth)
    assert missing_body.status_code == 422
    no_envelope = await blog.client.post(url, json={"body": "x"}, headers=alice.auth)
    assert no_envelope.status_code == 422
    no_article = await blog.client.post(
        "/api/articles/nope/comments", json={"comment": {"body": "x"}}, headers=alice.auth
    )
    assert no_article.status_code == 404
    assert (await blog.client.get("/api/articles/nope/comments")).status_code == 404


async def test_delete_comment_rules(blog: Blog) -> None:
    alice, bob = await blog.user(), await blog.user()
    created = await blog.article(alice)
    other = await blog.article(alice, title="Other")
    url = f"/api/articles/{created['slug']}/comments"
    posted = await blog.client.post(url, json={"comment": {"body": "x"}}, headers=bob.auth)
    comment_id = posted.json()["comment"]["id"]
    assert (await blog.client.delete(f"{url}/{comment_id}")).status_code == 401
    forbidden = await blog.client.delete(f"{url}/{comment_id}", headers=alice.auth)
    assert forbidden.status_code == 403
    assert "errors" in forbidden.json()
    wrong_article = await blog.client.delete(
        f"/api/articles/{other['slug']}/comments/{comment_id}", headers=bob.auth
    )
    assert wrong_article.status_code == 404
    unknown = await blog.client.delete(f"{url}/999999", headers=bob.auth)
    assert unknown.status_code == 404
    not_a_number = await blog.client.delete(f"{url}/abc", headers=bob.auth)
    assert not_a_number.status_code == 422
    deleted = await blog.client.delete(f"{url}/{comment_id}", headers=bob.auth)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await blog.client.get(url)).json() == {"comments": []}


async def test_moderators_delete_any_comment_and_article(blog: Blog) -> None:
    alice, bob = await blog.user(), await blog.user()
    moderator = await blog.moderator()
    created = await blog.article(alice)
    url = f"/api/articles/{created['slug']}"
    posted = await blog.client.post(
        f"{url}/comments", json={"comment": {"body": "spam"}}, headers=bob.auth
    )
    comment_id = posted.json()["comment"]["id"]
    removed = await blog.client.delete(f"{url}/comments/{comment_id}", headers=moderator.auth)
    assert removed.status_code == 204
    # Moderation is deletion only: a moderator cannot rewrite someone's article.
    rewrite = await blog.client.put(
        url, json={"article": {"body": "edited"}}, headers=moderator.auth
    )
    assert rewrite.status_code == 403
    assert (await blog.client.delete(url, headers=moderator.auth)).status_code == 204
    assert (await blog.client.get(url)).status_code == 404
