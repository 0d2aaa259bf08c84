"""Feed bytes to typed entries: RSS 0.9x/1.0/2.0 and Atom (feedparser), JSON Feed 1.0/1.1.

Runs in a worker process (feedparser holds the GIL for tens of ms per feed). Never fetches
anything: feedparser only ever gets bytes, because a string makes it open URLs and files.
"""

from __future__ import annotations

import calendar
import codecs
import contextlib
import hashlib
import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import feedparser

from ingestor.core.cleaning import clean_line, clean_text
from ingestor.core.entry import Enclosure, FeedEntry, FeedMeta, ParsedFeed
from ingestor.errors import ParseError
from ingestor.parse.decoding import codec_name, declared_charset, detect_encoding
from ingestor.parse.text import html_to_text

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
    if not parsed.entries and not parsed.version:
        refusal = html_instead_of_feed(body, media)
        if refusal:
            raise ParseError(url, refusal)
    meta = _feed_meta(parsed.feed, body)
    entries = mark_shared_links(
        [
            entry
            for entry in (
                _normalize_entry(e, url, meta.language) for e in parsed.entries[:MAX_ENTRIES]
            )
            if entry is not None
        ],
        meta.link,
    )
    if not entries and not parsed.version and not meta.title:
        reason = _bozo_reason(parsed) or "no feed found"
        raise ParseError(url, f"not a feed: {reason}")
    warning = _bozo_reason(parsed) if parsed.get("bozo") else None
    if total > MAX_ENTRIES:
        warning = f"the feed has {total} entries; only the first {MAX_ENTRIES} were read"
    return ParsedFeed(
        format=parsed.version or "unknown", meta=meta, entries=entries, warning=warning
    )


_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)
_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.I | re.S)
_FEED_LINK = re.compile(rb"<link\b[^>]*type=[\"']application/(?:rss|atom)\+xml[\"'][^>]*>", re.I)
_HREF = re.compile(rb"href=[\"']([^\"']+)[\"']", re.I)


def html_instead_of_feed(body: bytes, media: str) -> str | None:
    """Why an HTML page came back where a feed was expected, or None if it is not HTML:
    a bot check, a login or consent page, or the site's home page (named with the feed it
    links to, when it does)."""
    head = body[:65536]
    if media not in ("text/html", "application/xhtml+xml") and not _HTML_START.match(head):
        return None
    title = _HTML_TITLE.search(head)
    title_text = (
        clean_line(html_to_text(title.group(1).decode("utf-8", "replace")), 80) if title else ""
    )
    named = f" (page title {title_text!r})" if title_text else ""
    link = _FEED_LINK.search(head)
    href = _HREF.search(link.group(0)) if link else None
    if href:
        feed_url = clean_line(href.group(1).decode("utf-8", "replace"), 300)
        return f"an HTML page{named}, not a feed; the page names its feed: {feed_url}"
    return (
        f"an HTML page{named}, not a feed: a bot check, a login or a consent page? "
        "(a per-feed user_agent or headers may help)"
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


def _normalize_entry(raw: Any, feed_url: str, language: str | None) -> FeedEntry | None:
    link = _original_link(raw, feed_url) or _safe_link(feed_url, raw.get("link"))
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
    if content and summary and summary == content[: len(summary)]:
        # feedparser copies content:encoded (or Atom content) into `summary` when the
        # entry has no description of its own: that is not a summary.
        summary = None
    if not (link or title or summary or content):
        return None
    published, updated = _entry_dates(raw, language)
    guid = raw.get("id") if isinstance(raw.get("id"), str) else None
    return FeedEntry(
        key=_entry_key(clean_line(guid) or None, link, title, summary),
        link=link,
        title=title,
        summary=summary,
        content=content,
        authors=_authors(raw),
        tags=_tags(raw),
        published=published,
        updated=updated,
        enclosures=_enclosures(raw, link or feed_url),
    )


def _original_link(raw: Any, feed_url: str) -> str | None:
    """feedburner:origLink and its kin (pheedo, ...): the article's own URL, not a redirect."""
    for key in raw:
        if isinstance(key, str) and key.endswith("_origlink"):
            link = _safe_link(feed_url, raw.get(key))
            if link:
                return link
    return None


def _authors(raw: Any) -> tuple[str, ...]:
    names = tuple(
        dict.fromkeys(
            clean_line(a.get("name"), 200)
            for a in raw.get("authors", []) or []
            if isinstance(a, dict) and a.get("name")
        )
    ) or ((clean_line(raw["author"], 200),) if isinstance(raw.get("author"), str) else ())
    return tuple(a for a in names if a)


def _tags(raw: Any) -> tuple[str, ...]:
    return tuple(
        dict.fromkeys(
            clean_line(t.get("label") or t.get("term"), 200)
            for t in raw.get("tags", []) or []
            if isinstance(t, dict) and (t.get("label") or t.get("term"))
        )
    )


def _enclosures(raw: Any, base: str) -> tuple[Enclosure, ...]:
    found = []
    for enc in raw.get("enclosures", []) or []:
        href = _safe_link(base, enc.get("href"))
        if href:
            length = enc.get("length")
            found.append(
                Enclosure(
                    url=href,
                    type=clean_line(enc.get("type"), 200) or None,
                    length=int(length) if isinstance(length, str) and length.isdigit() else None,
                )
            )
    if not found:
        return ()
    # The itunes: fields describe the entry's episode: they go with its first enclosure.
    image = raw.get("image")
    first = Enclosure(
        url=found[0].url,
        type=found[0].type,
        length=found[0].length,
        duration=parse_duration_text(raw.get("itunes_duration")),
        episode=_small_int(raw.get("itunes_episode")),
        season=_small_int(raw.get("itunes_season")),
        image=_safe_link(base, image.get("href")) if isinstance(image, dict) else None,
    )
    return (first, *found[1:])


def parse_duration_text(value: Any) -> int | None:
    """itunes:duration: seconds ("2511"), "MM:SS" or "HH:MM:SS"."""
    if not isinstance(value, str) or not value.strip():
        return None
    parts = value.strip().split(":")
    if len(parts) > 3 or not all(p.strip().isdigit() for p in parts):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds


def _small_int(value: Any) -> int | None:
    text = value.strip() if isinstance(value, str) else ""
    return int(text) if text.isdigit() and len(text) <= 9 else None


def _entry_dates(raw: Any, language: str | None) -> tuple[datetime | None, datetime | None]:
    """(published, updated). feedparser files RSS/RSS 1.0 `dc:date` and Atom `<updated>`
    under `updated`: an entry with no other date was published then."""
    # dict.get: FeedParserDict.get would map a missing "updated" to "published".
    updated = _struct_to_datetime(dict.get(raw, "updated_parsed")) or _foreign_date(
        dict.get(raw, "updated"), language
    )
    published = (
        _struct_to_datetime(dict.get(raw, "published_parsed"))
        or _struct_to_datetime(dict.get(raw, "created_parsed"))
        or _foreign_date(dict.get(raw, "published"), language)
        or _foreign_date(dict.get(raw, "created"), language)
        or updated
    )
    return published, updated


def _foreign_date(text: Any, language: str | None) -> datetime | None:
    """The last resort for dates feedparser cannot read ("Seg, 24 Set 2018 10:00:00 -0300"):
    dateparser, told the feed's language when it has one (loading all its languages costs
    seconds), with the timezone kept."""
    if not isinstance(text, str) or not text.strip() or len(text) > 200:
        return None
    import dateparser  # only here: it takes a while to import and is rarely needed

    code = (language or "").strip().lower().replace("_", "-").split("-", 1)[0]
    settings = {"RETURN_AS_TIMEZONE_AWARE": True, "TO_TIMEZONE": "UTC"}
    try:
        moment = None
        if len(code) == 2 and code.isalpha():
            with contextlib.suppress(ValueError):
                moment = dateparser.parse(text, languages=[code], settings=settings)
        if moment is None:
            moment = dateparser.parse(text, settings=settings)
    except (ValueError, OverflowError, TypeError):
        return None
    return moment.astimezone(UTC) if moment is not None else None


def mark_shared_links(entries: list[FeedEntry], site_link: str | None) -> tuple[FeedEntry, ...]:
    """Entries whose link other entries share (or that link to the feed's own home page)
    are items of their own: marked, and keyed by guid, else enclosure, never by the link."""
    counts: dict[str, int] = {}
    for entry in entries:
        if entry.link:
            counts[entry.link] = counts.get(entry.link, 0) + 1
    home = site_link.rstrip("/") if site_link else None
    result = []
    for entry in entries:
        link = entry.link
        if link and (counts[link] > 1 or (home is not None and link.rstrip("/") == home)):
            key = entry.key
            if key.startswith("link:"):
                key = (
                    "enclosure:" + entry.enclosures[0].url[:2000]
                    if entry.enclosures
                    else _entry_key(None, None, entry.title, entry.summary or entry.content)
                )
            entry = replace(entry, key=key, shared_link=True)
        result.append(entry)
    return tuple(result)


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
    return ParsedFeed(
        format=fmt, meta=meta, entries=mark_shared_links(entries, meta.link), warning=warning
    )


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
            seconds = attachment.get("duration_in_seconds")
            enclosures.append(
                Enclosure(
                    url=href,
                    type=clean_line(_s(attachment.get("mime_type")), 200) or None,
                    length=int(size) if _count(size) else None,
                    duration=int(seconds) if _count(seconds) else None,
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
        published=_json_date(item.get("date_published")) or _json_date(item.get("date_modified")),
        updated=_json_date(item.get("date_modified")),
        enclosures=tuple(enclosures),
    )
