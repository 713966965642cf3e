"""GraphQL over the same services, and the statement count of list, feed and GraphQL
pages: constant, whatever the page size."""

from __future__ import annotations

from typing import Any

from tests.integration.blog.conftest import FRONT_END, Blog, StatementCounter, User

PAGE = """
query Page($first: Int!, $after: String) {
  articles(first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor node {
      slug title body bodyHtml tagList createdAt favorited favoritesCount published
      author { username bio following }
      comments { id body author { username following } }
    } }
  }
}
"""


async def _graphql(
    blog: Blog, query: str, user: User | None = None, **variables: Any
) -> dict[str, Any]:
    response = await blog.client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers=user.auth if user else {},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _seed(blog: Blog, articles: int) -> tuple[User, User]:
    author, reader = await blog.user(), await blog.user()
    for index in range(articles):
        created = await blog.article(author, title=f"Post {index}", tagList=[f"t{index % 3}"])
        await blog.client.post(f"/api/articles/{created['slug']}/favorite", headers=reader.auth)
        await blog.client.post(
            f"/api/articles/{created['slug']}/comments",
            json={"comment": {"body": f"c{index}"}},
            headers=reader.auth,
        )
    await blog.client.post(f"/api/profiles/{author.username}/follow", headers=reader.auth)
    return author, reader


async def test_graphql_articles_connection_and_loaders(blog: Blog) -> None:
    _, reader = await _seed(blog, 3)
    first = await _graphql(blog, PAGE, reader, first=2)
    assert "errors" not in first, first
    connection = first["data"]["articles"]
    assert connection["totalCount"] == 3
    assert connection["pageInfo"]["hasNextPage"] is True
    nodes = [edge["node"] for edge in connection["edges"]]
    assert [n["slug"] for n in nodes] == ["post-2", "post-1"]
    assert all(n["favorited"] and n["favoritesCount"] == 1 for n in nodes)
    assert all(n["author"]["following"] for n in nodes)
    assert nodes[0]["comments"][0]["body"] == "c2"
    assert nodes[0]["bodyHtml"].startswith("<p>")
    rest = await _graphql(blog, PAGE, reader, first=2, after=connection["pageInfo"]["endCursor"])
    page = rest["data"]["articles"]
    assert [e["node"]["slug"] for e in page["edges"]] == ["post-0"]
    assert page["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "endCursor": page["edges"][0]["cursor"],
    }
    anonymous = await _graphql(blog, PAGE, first=1)
    assert anonymous["data"]["articles"]["edges"][0]["node"]["favorited"] is False
    bad = await _graphql(blog, PAGE, first=1, after="garbage")
    assert bad["errors"][0]["extensions"]["code"] == "validation_failed"
    too_big = await _graphql(blog, PAGE, first=101)
    assert too_big["errors"]


async def test_graphql_single_reads(blog: Blog) -> None:
    author, reader = await _seed(blog, 1)
    query = """
    query($slug: String!, $name: String!) {
      article(slug: $slug) { title author { username } }
      missing: article(slug: "nope") { title }
      profile(username: $name) { username following }
      nobody: profile(username: "ghost") { username }
      articleComments(slug: $slug) { body }
      popularTags
      feed(first: 5) { totalCount }
    }
    """
    data = (await _graphql(blog, query, reader, slug="post-0", name=author.username))["data"]
    assert data["article"] == {"title": "Post 0", "author": {"username": author.username}}
    assert data["missing"] is None
    assert data["profile"] == {"username": author.username, "following": True}
    assert data["nobody"] is None
    assert data["articleComments"] == [{"body": "c0"}]
    assert data["popularTags"] == ["t0"]
    assert data["feed"]["totalCount"] == 1
    anonymous_feed = await _graphql(blog, "{ feed { totalCount } }")
    assert anonymous_feed["errors"][0]["extensions"]["code"] == "unauthorized"


async def test_graphql_mutations(blog: Blog) -> None:
    alice, bob = await blog.user("alice"), await blog.user("bob")
    created = await _graphql(
        blog,
        """mutation { createArticle(input: {title: "Via GraphQL", description: "d",
           body: "**b**", tagList: ["g"]}) { slug bodyHtml tagList published } }""",
        alice,
    )
    article = created["data"]["createArticle"]
    assert article == {
        "slug": "via-graphql",
        "bodyHtml": "<p><strong>b</strong></p>\n",
        "tagList": ["g"],
        "published": True,
    }
    rest = await blog.client.get("/api/articles/via-graphql")
    assert rest.json()["article"]["title"] == "Via GraphQL"
    updated = await _graphql(
        blog,
        'mutation { updateArticle(slug: "via-graphql", input: {title: "Renamed"}) { slug } }',
        alice,
    )
    assert updated["data"]["updateArticle"]["slug"] == "renamed"
    forbidden = await _graphql(
        blog, 'mutation { updateArticle(slug: "renamed", input: {body: "x"}) { slug } }', bob
    )
    assert forbidden["errors"][0]["extensions"]["code"] == "blog_not_article_author"
    favored = await _graphql(
        blog, 'mutation { favoriteArticle(slug: "renamed") { favorited favoritesCount } }', bob
    )
    assert favored["data"]["favoriteArticle"] == {"favorited": True, "favoritesCount": 1}
    comment = await _graphql(
        blog, 'mutation { addComment(slug: "renamed", body: "nice") { id body } }', bob
    )
    comment_id = comment["data"]["addComment"]["id"]
    followed = await _graphql(
        blog, 'mutation { followAuthor(username: "alice") { following } }', bob
    )
    assert followed["data"]["followAuthor"] == {"following": True}
    removed = await _graphql(
        blog, f'mutation {{ deleteComment(slug: "renamed", id: {comment_id}) }}', bob
    )
    assert removed["data"]["deleteComment"] is True
    invalid = await _graphql(blog, 'mutation { createArticle(input: {title: ""}) { slug } }', alice)
    assert invalid["errors"][0]["extensions"]["code"] == "validation_failed"
    assert "title" in invalid["errors"][0]["extensions"]["fieldErrors"]
    anonymous = await _graphql(blog, 'mutation { deleteArticle(slug: "renamed") }')
    assert anonymous["errors"][0]["extensions"]["code"] == "unauthorized"
    deleted = await _graphql(blog, 'mutation { deleteArticle(slug: "renamed") }', alice)
    assert deleted["data"]["deleteArticle"] is True
    assert (await blog.client.get("/api/articles/renamed")).status_code == 404


async def _count(counter: StatementCounter, blog: Blog, call: Any) -> int:
    counter.statements.clear()
    counter.counting = True
    try:
        await call()
    finally:
        counter.counting = False
    return len(counter.statements)


async def test_statement_count_is_constant_per_page(
    blog: Blog, statements: StatementCounter
) -> None:
    author, reader = await _seed(blog, 2)
    counts: dict[str, list[int]] = {"list": [], "feed": [], "graphql": []}
    for size in (2, 12):
        if size == 12:
            for index in range(2, 12):
                created = await blog.article(author, title=f"More {index}")
                await blog.client.post(
                    f"/api/articles/{created['slug']}/favorite", headers=reader.auth
                )
                await blog.client.post(
                    f"/api/articles/{created['slug']}/comments",
                    json={"comment": {"body": "c"}},
                    headers=reader.auth,
                )

        async def listed(size: int = size) -> None:
            response = await blog.client.get(f"/api/articles?limit={size}", headers=reader.auth)
            assert len(response.json()["articles"]) == size

        async def feed(size: int = size) -> None:
            response = await blog.client.get(
                f"/api/articles/feed?limit={size}", headers=reader.auth
            )
            assert len(response.json()["articles"]) == size

        async def graphql(size: int = size) -> None:
            body = await _graphql(blog, PAGE, reader, first=size)
            assert len(body["data"]["articles"]["edges"]) == size

        counts["list"].append(await _count(statements, blog, listed))
        counts["feed"].append(await _count(statements, blog, feed))
        counts["graphql"].append(await _count(statements, blog, graphql))
    # REST: one statement (page, total, authors, favorited, following). GraphQL: the page,
    # then one batch per loader (favorited, following) and comments (2 statements).
    assert counts == {"list": [1, 1], "feed": [1, 1], "graphql": [5, 5]}, counts


async def test_cached_anonymous_reads_run_no_statement(
    blog: Blog, statements: StatementCounter
) -> None:
    await _seed(blog, 1)

    async def reads() -> None:
        for url in ("/api/articles", "/api/articles/post-0", "/api/tags"):
            assert (await blog.client.get(url)).status_code == 200

    assert await _count(statements, blog, reads) > 0
    assert await _count(statements, blog, reads) == 0


async def test_cors_preflight_for_a_realworld_front_end(blog: Blog) -> None:
    preflight = await blog.client.options(
        "/api/articles/some-slug",
        headers={
            "Origin": FRONT_END,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == FRONT_END
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed
    actual = await blog.client.get("/api/tags", headers={"Origin": FRONT_END})
    assert actual.headers["access-control-allow-origin"] == FRONT_END
    assert "etag" in actual.headers["access-control-expose-headers"].lower()
