"""JSON Feed 1.0/1.1 (https://jsonfeed.org/version/1.1), read defensively: any field may
be missing or of the wrong type."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import feedparser

from ingestor.core.cleaning import clean_line, clean_text
from ingestor.core.entry import Enclosure, FeedEntry, FeedMeta, ParsedFeed
from ingestor.errors import ParseError
from ingestor.parse.entries import (
    MAX_CONTENT_CHARS,
    build_entry,
    clean_names,
    mark_shared_links,
    safe_link,
    struct_to_datetime,
)
from ingestor.parse.safety import MAX_ENTRIES
from ingestor.parse.text import html_to_text


def is_json_feed(body: bytes, content_type: str) -> bool:
    head = body[:4096].lstrip()
    if content_type in ("application/feed+json", "application/json"):
        return head.startswith((b"{", b"\xef\xbb\xbf{"))
    return head.startswith(b"{") and b"jsonfeed.org/version" in head


def looks_like_json(body: bytes) -> bool:
    """A body that opens as JSON does (an array; an object is_json_feed turned down),
    whatever the media type said: XML served as JSON still goes to the XML parser."""
    head = body[:64].lstrip().removeprefix(b"\xef\xbb\xbf")
    return head.startswith((b"[", b"{"))


def not_a_json_feed(body: bytes) -> str:
    """What a JSON document that is no JSON Feed is, in a few words."""
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        return f"invalid JSON: {clean_line(str(exc), 200)}"
    kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(data), "a number" if isinstance(data, int | float) else "an object"
    )
    if isinstance(data, dict):
        return "JSON, but not a JSON Feed: the object has no 'items' list"
    return f"JSON, but not a JSON Feed: the top level is {kind}, not an object"


def _s(value: Any) -> str | None:
    """A string field of untrusted JSON: anything else counts as missing."""
    return value if isinstance(value, str) and value.strip() else None


def _count(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 2**53


def _json_date(value: Any) -> datetime | None:
    text = _s(value)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        parsed = feedparser.datetimes._parse_date(text)  # the many RSS-era formats
        return struct_to_datetime(parsed)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_json_feed(body: bytes, url: str) -> ParsedFeed:
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ParseError(url, f"invalid JSON Feed: {clean_line(str(exc), 200)}") from None
    if not isinstance(data, dict):
        raise ParseError(url, "invalid JSON Feed: the top level is not an object")
    items = data.get("items")
    if not isinstance(items, list):
        raise ParseError(url, "invalid JSON Feed: 'items' is missing or not a list")
    entries: list[FeedEntry] = []
    skipped = 0
    # An item's relative url means the site (see parse/bases.py): its home page.
    home = safe_link(url, _s(data.get("home_page_url")))
    for item in items[:MAX_ENTRIES]:
        entry = _json_entry(item, url, home or url, data) if isinstance(item, dict) else None
        if entry is None:
            skipped += 1
        else:
            entries.append(entry)
    version = _s(data.get("version")) or ""
    meta = FeedMeta(
        title=clean_line(_s(data.get("title")), 500) or None,
        link=clean_line(_s(data.get("home_page_url")), 2000) or None,
        language=clean_line(_s(data.get("language")), 40) or None,
    )
    warning = f"{skipped} item(s) without usable fields skipped" if skipped else None
    fmt = "json11" if version.endswith("1.1") else "json10"
    return ParsedFeed(
        format=fmt, meta=meta, entries=mark_shared_links(entries, meta.link), warning=warning
    )


def _json_entry(
    item: dict[str, Any], feed_url: str, site_url: str, feed: dict[str, Any]
) -> FeedEntry | None:
    content_html = _s(item.get("content_html"))
    if content_html:
        content = html_to_text(content_html[:MAX_CONTENT_CHARS])
    else:
        content = clean_text((_s(item.get("content_text")) or "")[:MAX_CONTENT_CHARS])
    raw_id = item.get("id")
    guid = str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    return build_entry(
        FeedEntry(
            key="",
            link=safe_link(site_url, _s(item.get("url")) or _s(item.get("external_url"))),
            title=clean_line(_s(item.get("title")), 1000),
            summary=html_to_text(_s(item.get("summary"))) or None,
            content=content or None,
            authors=_json_authors(item, feed),
            tags=clean_names(item.get("tags")),
            published=_json_date(item.get("date_published")),
            updated=_json_date(item.get("date_modified")),
            enclosures=_attachments(item, feed_url),
        ),
        guid,
    )


def _json_authors(item: dict[str, Any], feed: dict[str, Any]) -> tuple[str, ...]:
    """The item's authors (1.1), its author (1.0), else the feed's authors."""
    for raw in (item.get("authors"), [item.get("author")], feed.get("authors")):
        if isinstance(raw, list):
            names = clean_names([a.get("name") for a in raw if isinstance(a, dict)])
            if names:
                return names
    return ()


def _attachments(item: dict[str, Any], feed_url: str) -> tuple[Enclosure, ...]:
    found = []
    attachments = item.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else []:
        if isinstance(attachment, dict) and (
            href := safe_link(feed_url, _s(attachment.get("url")))
        ):
            size = attachment.get("size_in_bytes")
            seconds = attachment.get("duration_in_seconds")
            found.append(
                Enclosure(
                    url=href,
                    type=clean_line(_s(attachment.get("mime_type")), 200) or None,
                    length=int(size) if _count(size) else None,
                    duration=int(seconds) if _count(seconds) else None,
                )
            )
    return tuple(found)
