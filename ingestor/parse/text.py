"""HTML fragments (feed summaries and content) to plain text."""

from __future__ import annotations

import re

import lxml.etree
import lxml.html

from ingestor.core.cleaning import clean_text

_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "pre",
        "tr",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "figure",
        "figcaption",
        "dd",
        "dt",
        "dl",
        "hr",
    ]
)
_DROP_TAGS = ("script", "style", "noscript", "template", "iframe", "object", "embed", "svg")
_HAS_MARKUP = re.compile(r"<[a-zA-Z!/][^>]*>|&[#a-zA-Z0-9]+;")
_MAX_FRAGMENT_CHARS = 2_000_000


def html_to_text(fragment: str | None) -> str:
    """Plain text of an HTML fragment, one paragraph per block element; never raises."""
    if not fragment:
        return ""
    fragment = fragment[:_MAX_FRAGMENT_CHARS]
    if not _HAS_MARKUP.search(fragment):
        return clean_text(fragment)
    try:
        root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return clean_text(re.sub(r"<[^>]+>", " ", fragment))
    for unwanted in list(root.iter(*_DROP_TAGS)):
        unwanted.drop_tree()
    parts: list[str] = []
    _walk(root, parts)
    return clean_text("".join(parts))


def _walk(element: lxml.html.HtmlElement, parts: list[str]) -> None:
    if element.text:
        parts.append(element.text)
    for child in element:
        if not isinstance(child.tag, str):  # comments, processing instructions
            if child.tail:
                parts.append(child.tail)
            continue
        block = child.tag.lower() in _BLOCK_TAGS
        if block:
            parts.append("\n")
        _walk(child, parts)
        if block:
            parts.append("\n")
        if child.tail:
            parts.append(child.tail)
