"""Sitemaps as feeds: a urlset (plain or Google News) to entries, a sitemap index to the
sitemaps it lists. Recognized by content; a gzip file (sitemap.xml.gz, often served as
application/octet-stream) is inflated here, with the protocol's 50 MB cap.

The protocol's rules kept here: at most 50,000 URLs per sitemap (more is an error, not a
silent cut), and a sitemap speaks only for its own host: a URL on another host is refused.
"""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime
from urllib.parse import urlsplit

from lxml import etree

from ingestor.core.cleaning import clean_line
from ingestor.core.entry import FeedEntry, FeedMeta, ParsedFeed
from ingestor.errors import ParseError
from ingestor.parse.entries import build_entry, clean_names, safe_link

MAX_SITEMAP_URLS = 50_000
MAX_SITEMAP_BYTES = 50 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_ROOT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(urlset|sitemapindex)[\s>]")
_NEWS_NS = b"google.com/schemas/sitemap-news"


def inflate_if_gzip(body: bytes, url: str) -> bytes:
    """The body itself, or its gzip content when it is a gzip file (capped)."""
    if not body.startswith(_GZIP_MAGIC):
        return body
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, MAX_SITEMAP_BYTES + 1)
    except zlib.error as exc:
        raise ParseError(url, f"broken gzip file: {exc}") from None
    if len(data) > MAX_SITEMAP_BYTES or inflater.unconsumed_tail:
        raise ParseError(url, "sitemap larger than 50 MB uncompressed (the protocol's limit)")
    return data


def sitemap_kind(body: bytes) -> str | None:
    """ "urlset" or "sitemapindex" when the document's root is one, else None."""
    match = _ROOT.search(body[:4096])
    return match.group(1).decode() if match else None


def parse_sitemap(body: bytes, url: str) -> ParsedFeed:
    kind = sitemap_kind(body)
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=False
    )
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise ParseError(url, f"malformed sitemap: {clean_line(str(exc), 200)}") from None
    children = [c for c in root if isinstance(c.tag, str)]
    if len(children) > MAX_SITEMAP_URLS:
        raise ParseError(
            url,
            f"sitemap lists {len(children):,} URLs; the protocol allows at most "
            f"{MAX_SITEMAP_URLS:,}",
        )
    if kind == "sitemapindex":
        found = ((_loc(c, url), _date(_child_text(c, "lastmod"))) for c in children)
        listed = tuple((loc, moment) for loc, moment in found if loc)
        return ParsedFeed(format="sitemapindex", meta=FeedMeta(), sitemaps=listed)
    host = urlsplit(url).hostname
    entries: list[FeedEntry] = []
    refused = 0
    for child in children:
        loc = _loc(child, url)
        if loc is None:
            continue
        if urlsplit(loc).hostname != host:
            refused += 1
            continue
        entry = _entry(child, loc)
        if entry is not None:
            entries.append(entry)
    warning = None
    if refused:
        warning = f"{refused} URL(s) on other hosts refused: a sitemap speaks only for its own host"
    news = _NEWS_NS in body[:8192]
    return ParsedFeed(
        format="sitemap-news" if news else "sitemap",
        meta=FeedMeta(link=f"{urlsplit(url).scheme}://{urlsplit(url).netloc}/"),
        entries=tuple(entries),
        warning=warning,
    )


def _entry(element: etree._Element, loc: str) -> FeedEntry | None:
    news = _first(element, "news")
    title = _child_text(news, "title") if news is not None else None
    published = _date(_child_text(news, "publication_date")) if news is not None else None
    keywords = (_child_text(news, "keywords") or "") if news is not None else ""
    publication = _first(news, "publication") if news is not None else None
    language = _child_text(publication, "language") if publication is not None else None
    return build_entry(
        FeedEntry(
            key="",
            link=loc,
            title=clean_line(title or "", 1000),
            summary=None,
            content=None,
            tags=clean_names([k for k in keywords.split(",")]),
            published=published,
            updated=_date(_child_text(element, "lastmod")),
            language=clean_line(language, 40) or None,
        ),
        loc,
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _first(element: etree._Element, name: str) -> etree._Element | None:
    for child in element:
        if isinstance(child.tag, str) and _local(child.tag) == name:
            return child
    return None


def _child_text(element: etree._Element, name: str) -> str | None:
    child = _first(element, name)
    return (child.text or "").strip() or None if child is not None else None


def _loc(element: etree._Element, base: str) -> str | None:
    return safe_link(base, _child_text(element, "loc"))


def _date(text: str | None) -> datetime | None:
    """W3C Datetime as sitemaps use it: a day, or a time with a zone (Z or +hh:mm)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
