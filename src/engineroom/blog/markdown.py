"""Markdown bodies to HTML that is safe to insert into a page.

Two layers, so that a mistake in one is caught by the other: markdown-it renders
CommonMark with raw HTML turned off (``<script>`` in a body comes out as text), then nh3
(the Rust ``ammonia`` sanitizer) keeps only an allow-list of tags and attributes, only
http(s)/mailto URLs, and marks every link ``rel="nofollow noopener noreferrer"``. See
docs/adr for why these two.
"""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt

_ALLOWED_TAGS = frozenset(
    {
        "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
        "hr", "img", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th",
        "thead", "tr", "ul",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
    "code": {"class"},
}
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#-]{1,40}")
_URL_SCHEMES = frozenset({"http", "https", "mailto"})
_LINK_REL = "nofollow noopener noreferrer"

# "html": False escapes raw HTML instead of passing it through; linkify stays off so
# that no URL the author did not write as a link becomes one.
_renderer = MarkdownIt("commonmark", {"html": False, "breaks": False}).enable(
    ["table", "strikethrough"]
)


def render_markdown(source: str) -> str:
    """Render ``source`` (CommonMark + tables + strikethrough) to sanitized HTML."""
    return sanitize_html(_renderer.render(source))


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    # Code blocks keep their "language-x" class (for highlighters) and nothing else: a
    # free class could borrow the page's own styles to imitate its interface.
    if attribute == "class":
        if tag == "code" and _LANGUAGE_CLASS.fullmatch(value):
            return value
        return None
    return value


def sanitize_html(html: str) -> str:
    """Keep only the allow-listed tags, attributes and URL schemes of ``html``."""
    return nh3.clean(
        html,
        tags=set(_ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in _ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(_URL_SCHEMES),
        link_rel=_LINK_REL,
        # Only "text-align" survives in style attributes (tables use it for alignment).
        filter_style_properties={"text-align"},
        strip_comments=True,
        attribute_filter=_filter_attribute,
    )
