"""Feed bytes to typed entries: RSS 0.9x/1.0/2.0 and Atom (feedparser), JSON Feed 1.0/1.1.

Runs in a worker process (feedparser holds the GIL for tens of ms per feed). Never fetches
anything: feedparser only ever gets bytes, because a string makes it open URLs and files.
"""

from __future__ import annotations

import calendar
import codecs
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import feedparser

from ingestor.decoding import codec_name, declared_charset, detect_encoding
from ingestor.errors import ParseError
from ingestor.record import clean_line, clean_text
from ingestor.text import html_to_text

_ROOT_START = re.compile(rb"<[A-Za-z_]")
_XML_ENCODING = re.compile(rb"""(?<=<\?xml)([^>]*?)encoding\s*=\s*["'][A-Za-z0-9._:-]+["']""")
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
_SKIP_HOURS = re.compile(rb"<skipHours>(.*?)</skipHours>", re.IGNORECASE | re.DOTALL)
_SKIP_DAYS = re.compile(rb"<skipDays>(.*?)</skipDays>", re.IGNORECASE | re.DOTALL)
_HOUR = re.compile(rb"<hour>\s*(\d{1,2})\s*</hour>", re.IGNORECASE)
_DAY = re.compile(rb"<day>\s*([A-Za-z]+)\s*</day>", re.IGNORECASE)
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_UPDATE_PERIODS = {
    "hourly": 3600,
    "daily": 86400,
    "weekly": 604800,
    "monthly": 2592000,
    "yearly": 31536000,
}
# A feed with more entries than this has only its first MAX_ENTRIES read (feedparser needs
# about 0.2 ms per tiny item and 2 ms per real one: 100,000 items took 22 s).
MAX_ENTRIES = 5000
_ITEM_ENDS = (b"</item>", b"</entry>")
_ROOT_CLOSERS = (
    (b"<rdf:RDF", b"</rdf:RDF>"),
    (b"<rss", b"</channel></rss>"),
    (b"<feed", b"</feed>"),
)
_LATIN_CODECS = frozenset({"ascii", "latin-1", "iso8859-1", "iso8859-15", "cp1252"})
MAX_SUMMARY_CHARS = 20_000
MAX_CONTENT_CHARS = 500_000


@dataclass(frozen=True)
class Enclosure:
    url: str
    type: str | None = None
    length: int | None = None


@dataclass(frozen=True)
class FeedEntry:
    key: str
    link: str | None
    title: str
    summary: str | None
    content: str | None
    authors: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    published: datetime | None = None
    updated: datetime | None = None
    enclosures: tuple[Enclosure, ...] = ()


@dataclass(frozen=True)
class FeedMeta:
    title: str | None = None
    link: str | None = None
    language: str | None = None
    ttl: float | None = None
    skip_hours: frozenset[int] = frozenset()
    skip_days: frozenset[int] = frozenset()  # 0 = Monday, as datetime.weekday()
    update_period: float | None = None  # seconds between updates, from sy:*


@dataclass(frozen=True)
class ParsedFeed:
    format: str
    meta: FeedMeta
    entries: tuple[FeedEntry, ...] = ()
    warning: str | None = field(default=None)


def parse_feed(body: bytes, url: str, content_type: str = "") -> ParsedFeed:
    """Parse a feed document; raises ParseError when nothing usable is in it."""
    if not body.strip():
        raise ParseError(url, "empty response body, not a feed")
    media = content_type.split(";", 1)[0].strip().lower()
    if _is_json_feed(body, media):
        return parse_json_feed(body, url)
    reject_entity_declarations(body, url)
    body, header = normalize_feed_charset(body, content_type)
    body, total = limit_entries(body)
    parsed = feedparser.parse(
        body,
        response_headers={"content-location": url, "content-type": header},
        resolve_relative_uris=False,
        sanitize_html=False,
    )
    entries = tuple(
        entry
        for entry in (_normalize_entry(e, url) for e in parsed.entries[:MAX_ENTRIES])
        if entry is not None
    )
    meta = _feed_meta(parsed.feed, body)
    if not entries and not parsed.version and not meta.title:
        reason = _bozo_reason(parsed) or "no feed found"
        raise ParseError(url, f"not a feed: {reason}")
    warning = _bozo_reason(parsed) if parsed.get("bozo") else None
    if total > MAX_ENTRIES:
        warning = f"the feed has {total} entries; only the first {MAX_ENTRIES} were read"
    return ParsedFeed(
        format=parsed.version or "unknown", meta=meta, entries=entries, warning=warning
    )


def normalize_feed_charset(body: bytes, content_type: str) -> tuple[bytes, str]:
    """Bytes and a Content-Type for feedparser whose charset tells the truth.

    Wrong declarations happen in both directions: UTF-8 bytes declared as latin-1 (the
    header or the XML declaration lies) and latin-1 bytes declared (or defaulted) as UTF-8.
    A strict decode settles which; the document is then handed on as UTF-8.
    """
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    declared = codec_name(match.group(1) if match else None) or declared_charset(body)
    if declared is not None and declared != "utf-8" and declared not in _LATIN_CODECS:
        return body, f"application/xml; charset={declared}"  # UTF-16, Shift_JIS...: trusted
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        if declared in _LATIN_CODECS:
            return body, f"application/xml; charset={declared}"  # an honest latin-1 feed
        # Declared (or defaulted to) UTF-8 but it is not: detect what it really is.
        text = body.decode(detect_encoding(body), "replace")
    # Valid UTF-8 wins over any single-byte declaration: such bytes are almost never latin-1.
    utf8 = _XML_ENCODING.sub(rb'\1encoding="utf-8"', text.encode("utf-8"), count=1)
    return utf8, "application/xml; charset=utf-8"


def limit_entries(body: bytes) -> tuple[bytes, int]:
    """Cut a document after its MAX_ENTRIES-th entry, closing the root properly."""
    total = max(body.count(end) for end in _ITEM_ENDS)
    if total <= MAX_ENTRIES:
        return body, total
    end_tag = max(_ITEM_ENDS, key=body.count)
    position = -1
    for _ in range(MAX_ENTRIES):
        position = body.find(end_tag, position + 1)
    cut = body[: position + len(end_tag)]
    closer = next((c for opener, c in _ROOT_CLOSERS if opener in body[:4096]), b"")
    return cut + closer, total


def reject_entity_declarations(body: bytes, url: str) -> None:
    """Refuse any document that declares an entity before its root element.

    feedparser's fallback parser expands internal entities (a 140 KB quadratic-blowup feed
    took 49 s and 2.9 GB); no real feed declares entities, so refusing them costs nothing.
    """
    head = _ascii_view(body)
    root = _ROOT_START.search(head)
    prolog = head[: root.start()] if root else head
    if _ENTITY_DECL.search(prolog):
        raise ParseError(url, "refused: the document declares XML entities (DOCTYPE)")


def _ascii_view(body: bytes) -> bytes:
    # UTF-16/32 documents hide "<!ENTITY" from a byte search: look at them transcoded.
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if body.startswith(bom):
            return body.decode(codec, "replace").encode("utf-8", "replace")
    if len(body) > 1 and (body[0] == 0 or body[1] == 0):
        codec = "utf-16-be" if body[0] == 0 else "utf-16-le"
        return body.decode(codec, "replace").encode("utf-8", "replace")
    return body


def _bozo_reason(parsed: Any) -> str | None:
    exc = parsed.get("bozo_exception")
    if exc is None:
        return None
    return clean_line(f"{type(exc).__name__}: {exc}", 200)


def _struct_to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, time.struct_time):
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _entry_key(guid: str | None, link: str | None, title: str, summary: str | None) -> str:
    if guid:
        return "guid:" + guid[:2000]
    if link:
        return "link:" + link[:2000]
    digest = hashlib.sha256(f"{title}\x00{summary or ''}".encode()).hexdigest()
    return "hash:" + digest


def _safe_link(base: str, link: Any) -> str | None:
    """An absolute http(s) URL, or None: javascript:, data:, file: and the like never pass."""
    if not isinstance(link, str) or not link.strip():
        return None
    try:
        absolute = urljoin(base, clean_line(link))
    except ValueError:
        return None
    return absolute if absolute.lower().startswith(("http://", "https://")) else None


def _normalize_entry(raw: Any, feed_url: str) -> FeedEntry | None:
    link = _safe_link(feed_url, raw.get("link"))
    title = clean_line(html_to_text(raw.get("title")) if raw.get("title") else "", 1000)
    summary_html = raw.get("summary") or raw.get("description")
    summary = (
        html_to_text(summary_html[:MAX_SUMMARY_CHARS] if isinstance(summary_html, str) else None)
        or None
    )
    content_parts = [
        c.get("value", "") for c in raw.get("content", []) or [] if isinstance(c, dict)
    ]
    content = html_to_text("\n".join(content_parts)[:MAX_CONTENT_CHARS]) or None
    if content and summary and content == summary:
        content = None
    if not (link or title or summary or content):
        return None
    authors = tuple(
        dict.fromkeys(
            clean_line(a.get("name"), 200)
            for a in raw.get("authors", []) or []
            if isinstance(a, dict) and a.get("name")
        )
    ) or ((clean_line(raw["author"], 200),) if isinstance(raw.get("author"), str) else ())
    tags = tuple(
        dict.fromkeys(
            clean_line(t.get("label") or t.get("term"), 200)
            for t in raw.get("tags", []) or []
            if isinstance(t, dict) and (t.get("label") or t.get("term"))
        )
    )
    enclosures = []
    for enc in raw.get("enclosures", []) or []:
        href = _safe_link(link or feed_url, enc.get("href"))
        if href:
            length = enc.get("length")
            enclosures.append(
                Enclosure(
                    url=href,
                    type=clean_line(enc.get("type"), 200) or None,
                    length=int(length) if isinstance(length, str) and length.isdigit() else None,
                )
            )
    guid = raw.get("id") if isinstance(raw.get("id"), str) else None
    return FeedEntry(
        key=_entry_key(clean_line(guid) or None, link, title, summary),
        link=link,
        title=title,
        summary=summary,
        content=content,
        authors=tuple(a for a in authors if a),
        tags=tags,
        published=_struct_to_datetime(raw.get("published_parsed"))
        or _struct_to_datetime(raw.get("created_parsed")),
        # dict.get: FeedParserDict.get would map a missing "updated" to "published".
        updated=_struct_to_datetime(dict.get(raw, "updated_parsed")),
        enclosures=tuple(enclosures),
    )


def _feed_meta(feed: Any, body: bytes) -> FeedMeta:
    ttl = feed.get("ttl")
    ttl_seconds = float(ttl) * 60 if isinstance(ttl, str) and ttl.strip().isdigit() else None
    period = _UPDATE_PERIODS.get(str(feed.get("sy_updateperiod", "")).strip().lower())
    frequency = str(feed.get("sy_updatefrequency", "1")).strip()
    update_period = None
    if period is not None:
        update_period = period / max(int(frequency) if frequency.isdigit() else 1, 1)
    skip_hours: set[int] = set()
    skip_days: set[int] = set()
    if match := _SKIP_HOURS.search(body[:200_000]):
        skip_hours = {int(h) % 24 for h in _HOUR.findall(match.group(1))}
    if match := _SKIP_DAYS.search(body[:200_000]):
        skip_days = {
            _DAYS.index(d.decode().lower())
            for d in _DAY.findall(match.group(1))
            if d.decode().lower() in _DAYS
        }
    language = clean_line(feed.get("language"), 40) or None
    return FeedMeta(
        title=clean_line(html_to_text(feed.get("title")), 500) or None,
        link=clean_line(feed.get("link"), 2000) or None,
        language=language,
        ttl=ttl_seconds,
        skip_hours=frozenset(skip_hours),
        skip_days=frozenset(skip_days),
        update_period=update_period,
    )


# --- JSON Feed (https://jsonfeed.org/version/1.1) ---


def _is_json_feed(body: bytes, content_type: str) -> bool:
    head = body[:4096].lstrip()
    if content_type in ("application/feed+json", "application/json"):
        return head.startswith((b"{", b"\xef\xbb\xbf{"))
    return head.startswith(b"{") and b"jsonfeed.org/version" in head


def _s(value: Any) -> str | None:
    """A string field of untrusted JSON: anything else counts as missing."""
    return value if isinstance(value, str) and value.strip() else None


def _json_date(value: Any) -> datetime | None:
    text = _s(value)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        parsed = feedparser.datetimes._parse_date(text)  # the many RSS-era formats
        return _struct_to_datetime(parsed)
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
    for item in items[:MAX_ENTRIES]:
        entry = _json_entry(item, url, data) if isinstance(item, dict) else None
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
    return ParsedFeed(format=fmt, meta=meta, entries=tuple(entries), warning=warning)


def _json_entry(item: dict[str, Any], feed_url: str, feed: dict[str, Any]) -> FeedEntry | None:
    link = _safe_link(feed_url, _s(item.get("url")) or _s(item.get("external_url")))
    title = clean_line(_s(item.get("title")), 1000)
    summary = html_to_text(_s(item.get("summary"))) or None
    content_html = _s(item.get("content_html"))
    if content_html:
        content = html_to_text(content_html[:MAX_CONTENT_CHARS])
    else:
        content = clean_text((_s(item.get("content_text")) or "")[:MAX_CONTENT_CHARS])
    if not (link or title or summary or content):
        return None
    raw_authors = (
        item.get("authors")
        if isinstance(item.get("authors"), list)
        else (
            [item["author"]]
            if isinstance(item.get("author"), dict)
            else feed.get("authors")
            if isinstance(feed.get("authors"), list)
            else []
        )
    )
    authors = tuple(
        dict.fromkeys(
            clean_line(a["name"], 200)
            for a in raw_authors
            if isinstance(a, dict) and _s(a.get("name"))
        )
    )
    tags = tuple(
        dict.fromkeys(
            clean_line(t, 200)
            for t in (item.get("tags") if isinstance(item.get("tags"), list) else [])
            if _s(t)
        )
    )
    enclosures = []
    for attachment in item.get("attachments") if isinstance(item.get("attachments"), list) else []:
        if isinstance(attachment, dict) and (
            href := _safe_link(feed_url, _s(attachment.get("url")))
        ):
            size = attachment.get("size_in_bytes")
            enclosures.append(
                Enclosure(
                    url=href,
                    type=clean_line(_s(attachment.get("mime_type")), 200) or None,
                    length=size
                    if isinstance(size, int) and not isinstance(size, bool) and size >= 0
                    else None,
                )
            )
    raw_id = item.get("id")
    guid = str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    return FeedEntry(
        key=_entry_key(clean_line(guid) or None, link, title, summary),
        link=link,
        title=title,
        summary=summary,
        content=content or None,
        authors=authors,
        tags=tags,
        published=_json_date(item.get("date_published")),
        updated=_json_date(item.get("date_modified")),
        enclosures=tuple(enclosures),
    )
