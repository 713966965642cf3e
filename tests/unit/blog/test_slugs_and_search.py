"""Slugs and search terms: pure functions."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from engineroom.blog.feeds import render_feed
from engineroom.blog.search import terms_of
from engineroom.blog.slugs import RESERVED, candidates, slugify


def test_slugify() -> None:
    assert slugify("How to train your Dragon!") == "how-to-train-your-dragon"
    assert slugify("  --Ünïcödé   and_underscores--  ") == "ünïcödé-and-underscores"
    assert slugify("日本語のタイトル") == "日本語のタイトル"
    assert slugify("!!!") == "article"
    assert len(slugify("x" * 500)) <= 152


def test_candidates_avoid_reserved_words() -> None:
    for word in RESERVED:
        options = candidates(word, 3)
        assert len(options) == 3
        assert word not in options
        assert all(option.startswith(f"{word}-") for option in options)
    plain = candidates("Hello", 3)
    assert plain[0] == "hello"
    assert len(set(plain)) == 3


def test_search_terms_drop_operators() -> None:
    assert terms_of('"dragons" AND (cats* OR -dogs)') == ["dragons", "AND", "cats", "OR", "dogs"]
    assert terms_of("!!! ***") == []
    assert len(terms_of("a " * 100)) == 12


def test_empty_feed_is_valid_atom() -> None:
    document = render_feed(
        feed_key="tag:x",
        title="Articles tagged x\x01",
        self_url="http://h/api/feeds/tags/x",
        base_url="http://h",
        articles=[],
    )
    root = ET.fromstring(document)
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    assert root.findtext("{http://www.w3.org/2005/Atom}title") == "Articles tagged x"
