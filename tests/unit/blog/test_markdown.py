"""Markdown rendering and sanitizing: no script, event handler or javascript: URL survives."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from engineroom.blog.markdown import render_markdown, sanitize_html

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<body onload=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](java\tscript:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "![x](javascript:alert(1))",
    '![x](x" onerror="alert(1))',
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<a href="#" onclick="alert(1)">x</a>',
    "<<script>script>alert(1)<</script>/script>",
    '<object data="javascript:alert(1)"></object>',
    '<form action="javascript:alert(1)"><input type=submit></form>',
    "```\n</code><script>alert(1)</script>\n```",
    "[x]: javascript:alert(1)\n\n[link][x]",
    "<details open ontoggle=alert(1)>",
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
]

FORBIDDEN_TAGS = {"script", "iframe", "svg", "object", "form", "style", "meta", "math", "body"}


class _Elements(HTMLParser):
    """The elements and attributes a browser would build from the HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))


def _elements(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser.elements


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_no_payload_survives(payload: str) -> None:
    for html in (render_markdown(payload), sanitize_html(payload)):
        for tag, attrs in _elements(html):
            assert tag not in FORBIDDEN_TAGS, html
            for name, value in attrs:
                assert not name.startswith("on"), html
                assert name != "style" or tag in ("th", "td"), html
                if name in ("href", "src"):
                    scheme = re.sub(r"\s", "", value or "").lower().partition(":")[0]
                    assert scheme in ("http", "https", "mailto") or ":" not in (value or ""), html


def test_markdown_features_are_kept() -> None:
    html = render_markdown(
        "# Title\n\n*em* **strong** ~~gone~~ `code`\n\n"
        "| a | b |\n|:--|--:|\n| 1 | 2 |\n\n"
        "```python\nprint(1)\n```\n\n[link](https://example.com) ![alt](https://example.com/i.png)"
    )
    assert "<h1>Title</h1>" in html
    assert "<em>em</em>" in html
    assert "<strong>strong</strong>" in html
    assert "<s>gone</s>" in html or "<del>gone</del>" in html
    assert '<th style="text-align:left">a</th>' in html
    assert '<code class="language-python">' in html
    assert '<a href="https://example.com" rel="nofollow noopener noreferrer">link</a>' in html
    assert '<img src="https://example.com/i.png" alt="alt">' in html


def test_raw_html_is_text_not_markup() -> None:
    assert render_markdown("<b>bold</b>") == "<p>&lt;b&gt;bold&lt;/b&gt;</p>\n"


def test_only_language_classes_survive() -> None:
    assert (
        sanitize_html('<code class="language-go">x</code>') == '<code class="language-go">x</code>'
    )
    assert sanitize_html('<code class="navbar">x</code>') == "<code>x</code>"
    assert sanitize_html('<p class="x">y</p>') == "<p>y</p>"
