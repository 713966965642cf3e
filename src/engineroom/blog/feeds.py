"""Atom feeds (RFC 4287) of the newest published articles of an author or a tag.

Built with the standard library's ElementTree, which escapes text and attributes; the
characters XML 1.0 cannot carry at all (most control characters) are dropped first.
Entry content is the article's sanitized HTML (``type="html"``), ids are ``urn:uuid:``
IRIs that never change (an article keeps its id when its slug changes).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Request, Response

from engineroom.blog import profiles, service
from engineroom.blog.deps import RuntimeDep
from engineroom.blog.errors import ProfileNotFound
from engineroom.blog.http import json_response
from engineroom.blog.views import ArticleQuery, ArticleView
from engineroom.core.clock import isoformat_z, utcnow
from engineroom.core.deps import PlatformDep
from engineroom.core.errors import error_responses

ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM_TYPE = "application/atom+xml"
_FEED_NAMESPACE = uuid.UUID("6f1c9a52-6c3e-4d53-9b55-2f1a0d6b7c11")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

router = APIRouter(prefix="/api/feeds", tags=["blog"])


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _element(parent: ET.Element, name: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(
        parent, f"{{{ATOM_NS}}}{name}", {k: _clean(v) for k, v in attrs.items()}
    )
    if text is not None:
        element.text = _clean(text)
    return element


def _entry(feed: ET.Element, article: ArticleView, base_url: str) -> None:
    entry = _element(feed, "entry")
    _element(entry, "id", f"urn:uuid:{article.id}")
    _element(entry, "title", article.title)
    _element(entry, "updated", isoformat_z(article.updated_at))
    if article.published_at is not None:
        _element(entry, "published", isoformat_z(article.published_at))
    author = _element(entry, "author")
    _element(author, "name", article.author.username)
    _element(
        entry,
        "link",
        rel="alternate",
        type="application/json",
        href=f"{base_url}/api/articles/{article.slug}",
    )
    for tag in article.tag_list:
        _element(entry, "category", term=tag)
    _element(entry, "summary", article.description)
    _element(entry, "content", article.body_html or "", type="html")


def render_feed(
    *, feed_key: str, title: str, self_url: str, base_url: str, articles: list[ArticleView]
) -> bytes:
    """An Atom document; ``feed_key`` names the feed for good (its id derives from it)."""
    ET.register_namespace("", ATOM_NS)
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _element(feed, "id", f"urn:uuid:{uuid.uuid5(_FEED_NAMESPACE, feed_key)}")
    _element(feed, "title", title)
    newest: datetime = max((a.updated_at for a in articles), default=utcnow())
    _element(feed, "updated", isoformat_z(newest))
    _element(feed, "link", rel="self", type=ATOM_TYPE, href=self_url)
    _element(feed, "generator", "engineroom")
    if not articles:
        # RFC 4287 wants an author on the feed when an entry could lack one; with no
        # entries the feed itself names who publishes it.
        _element(_element(feed, "author"), "name", "engineroom")
    for article in articles:
        _entry(feed, article, base_url)
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))


def _base_url(request: Request, public_url: str | None) -> str:
    return (public_url or str(request.base_url)).rstrip("/")


async def _feed_response(
    request: Request,
    platform: PlatformDep,
    runtime: RuntimeDep,
    *,
    feed_key: str,
    title: str,
    query: ArticleQuery,
    username: str | None = None,
) -> Response:
    base = _base_url(request, platform.settings.public_url)

    async def build() -> bytes:
        async with platform.database.read_only() as session:
            if username is not None:
                await profiles.get_profile(
                    session, username=username, principal=None, directory=runtime.directory
                )
            page = await service.list_articles(
                session,
                query=query,
                principal=None,
                search=runtime.search,
                limit=runtime.settings.feed_entries,
                offset=0,
                with_body=True,
            )
        return render_feed(
            feed_key=feed_key,
            title=title,
            self_url=f"{base}{request.url.path}",
            base_url=base,
            articles=page.articles,
        )

    # Feeds are public (no caller-specific fields): always the shared cached copy.
    return await json_response(
        request, runtime, None, f"feed:{feed_key}", build, media_type=ATOM_TYPE
    )


_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {ATOM_TYPE: {}}}}


@router.get(
    "/authors/{username}",
    response_class=Response,
    summary="Atom feed of an author's newest articles",
    responses={**_RESPONSES, **error_responses(ProfileNotFound)},
)
async def author_feed(
    username: str, request: Request, platform: PlatformDep, runtime: RuntimeDep
) -> Response:
    return await _feed_response(
        request,
        platform,
        runtime,
        feed_key=f"author:{username.lower()}",
        title=f"Articles by {username}",
        query=ArticleQuery(author=username),
        username=username,
    )


@router.get(
    "/tags/{tag}",
    response_class=Response,
    summary="Atom feed of the newest articles with a tag",
    responses=_RESPONSES,
)
async def tag_feed(
    tag: str, request: Request, platform: PlatformDep, runtime: RuntimeDep
) -> Response:
    return await _feed_response(
        request,
        platform,
        runtime,
        feed_key=f"tag:{tag}",
        title=f"Articles tagged {tag}",
        query=ArticleQuery(tag=tag),
    )
