"""A page's metadata from its <head> tags alone: canonical link, Open Graph and article
meta tags, <title>, <html lang>. A scan of the raw text, no parse: trafilatura's own
metadata pass (its htmldate heuristics included) costs 12-20 ms per page, a third of the
extraction, and is only worth it when the feed lacks what it finds best, the date."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

from ingestor.core.analysis import PageMetadata
from ingestor.core.cleaning import clean_line

# The head is at the top; a page whose tags come later is rare and loses only metadata.
_SCAN_CHARS = 150_000
_TAG = re.compile(r"<(meta|link)\b([^>]*)>", re.IGNORECASE)
_ATTRIBUTE = re.compile(
    r"([A-Za-z_:][-A-Za-z0-9_:.]*)\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'>]+))"
)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_LANG = re.compile(r"<html[^>]*?\blang\s*=\s*[\"']?([A-Za-z]{2,3})", re.IGNORECASE)
_BODY = re.compile(r"<body\b", re.IGNORECASE)
_H1 = re.compile(r"<h1\b[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
_MARKUP = re.compile(r"<[^>]+>")

_DATE_KEYS = (
    "article:published_time",
    "og:published_time",
    "datepublished",
    "date",
    "dc.date",
    "dc.date.issued",
    "pubdate",
    "publishdate",
    "sailthru.date",
)


def scan_head(page: str) -> PageMetadata:
    head = page[:_SCAN_CHARS]
    body = _BODY.search(head)
    if body is not None:
        head = head[: body.start()]
    metas: dict[str, list[str]] = {}
    canonical: str | None = None
    for kind, attributes in _TAG.findall(head):
        attrs = {
            key.lower(): html.unescape(a or b or c)
            for key, a, b, c in _ATTRIBUTE.findall(attributes)
        }
        if kind.lower() == "link":
            if "canonical" in attrs.get("rel", "").lower().split() and canonical is None:
                canonical = attrs.get("href")
            continue
        key = (attrs.get("property") or attrs.get("name") or attrs.get("itemprop") or "").lower()
        value = attrs.get("content", "").strip()
        if key and value:
            metas.setdefault(key, []).append(value)

    def first(*keys: str) -> str | None:
        for key in keys:
            if metas.get(key):
                return metas[key][0]
        return None

    title_match = _TITLE.search(head)
    title = first("og:title", "twitter:title") or (
        html.unescape(title_match.group(1)) if title_match else None
    )
    authors = [a for a in metas.get("author", []) + metas.get("article:author", []) if a]
    tags = metas.get("article:tag", []) + [
        t for k in metas.get("keywords", []) for t in k.split(",")
    ]
    return PageMetadata(
        title=clean_line(title, 1000) or None,
        authors=tuple(
            dict.fromkeys(clean_line(a, 200) for a in authors if clean_line(a) and "://" not in a)
        ),
        date=parse_date(first(*_DATE_KEYS)),
        site_name=clean_line(first("og:site_name", "application-name"), 300) or None,
        image=clean_line(first("og:image", "og:image:url", "twitter:image"), 2000) or None,
        tags=tuple(dict.fromkeys(clean_line(t, 200) for t in tags if clean_line(t))),
        canonical_url=clean_line(canonical or first("og:url"), 4000) or None,
        html_lang=html_lang(page),
    )


def html_lang(page: str) -> str | None:
    """The primary subtag of `<html lang>`, lower-case."""
    match = _HTML_LANG.search(page[:20_000])
    return match.group(1).lower() if match else None


def first_heading(page: str) -> str | None:
    """The text of the page's first <h1>."""
    match = _H1.search(page)
    if match is None:
        return None
    return clean_line(html.unescape(_MARKUP.sub(" ", match.group(1)))) or None


def parse_date(value: object) -> datetime | None:
    """An ISO 8601 date or time as UTC (a time without offset is taken as UTC)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def title_tag(html_text: str) -> str | None:
    """The document's own <title> (not og:title, which error pages leave as the site's)."""
    match = _TITLE.search(html_text[:65536])
    return clean_line(html.unescape(match.group(1)), 1000) or None if match else None
