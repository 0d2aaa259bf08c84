"""RSS 0.9x/1.0/2.0 and Atom through feedparser (always given bytes, never a string: a
string makes it open URLs and files)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import feedparser

from ingestor.core.cleaning import clean_line
from ingestor.core.entry import Enclosure, FeedEntry, FeedMeta, ParsedFeed
from ingestor.core.retrieved import RetrievedFeed
from ingestor.errors import ParseError
from ingestor.parse.bases import LinkBases
from ingestor.parse.entries import (
    MAX_CONTENT_CHARS,
    MAX_SUMMARY_CHARS,
    build_entry,
    clean_names,
    foreign_date,
    mark_shared_links,
    parse_duration_text,
    safe_link,
    small_int,
    struct_to_datetime,
)
from ingestor.parse.safety import (
    MAX_ENTRIES,
    html_instead_of_feed,
    limit_entries,
    normalize_feed_charset,
)
from ingestor.parse.text import html_to_text

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


def _bozo_reason(parsed: Any) -> str | None:
    exc = parsed.get("bozo_exception")
    if exc is None:
        return None
    return clean_line(f"{type(exc).__name__}: {exc}", 200)


def parse_rss_atom(doc: RetrievedFeed) -> ParsedFeed:
    """An RSS or Atom document (already past the safety checks) to entries."""
    body, header = normalize_feed_charset(doc.body, doc.charset)
    body, total = limit_entries(body)
    url = doc.url
    bases = LinkBases(url)
    parsed = feedparser.parse(
        body,
        response_headers={"content-location": bases.marker, "content-type": header},
        resolve_relative_uris=False,
        sanitize_html=False,
    )
    if not parsed.entries and not parsed.version:
        refusal = html_instead_of_feed(body, doc.media_type)
        if refusal:
            raise ParseError(url, refusal)
    meta = _feed_meta(parsed.feed, body, bases)
    bases.set_site(meta.link)
    found = (_normalize_entry(e, bases, meta.language) for e in parsed.entries[:MAX_ENTRIES])
    entries = mark_shared_links([e for e in found if e is not None], meta.link)
    if not entries and not parsed.version and not meta.title:
        reason = _bozo_reason(parsed) or "no feed found"
        raise ParseError(url, f"not a feed: {reason}")
    warning = _bozo_reason(parsed) if parsed.get("bozo") else None
    if total > MAX_ENTRIES:
        warning = f"the feed has {total} entries; only the first {MAX_ENTRIES} were read"
    return ParsedFeed(
        format=parsed.version or "unknown", meta=meta, entries=entries, warning=warning
    )


def _normalize_entry(raw: Any, bases: LinkBases, language: str | None) -> FeedEntry | None:
    feed_url = bases.document_url
    link = _original_link(raw, bases) or safe_link(feed_url, bases.entry(raw.get("link")))
    summary_html = raw.get("summary") or raw.get("description")
    content_parts = [
        c.get("value", "") for c in raw.get("content", []) or [] if isinstance(c, dict)
    ]
    published, updated = _entry_dates(raw, language)
    guid = bases.document(raw.get("id"))
    guid = guid if isinstance(guid, str) else None
    return build_entry(
        FeedEntry(
            key="",
            link=link,
            title=clean_line(html_to_text(raw.get("title")) if raw.get("title") else "", 1000),
            summary=html_to_text(
                summary_html[:MAX_SUMMARY_CHARS] if isinstance(summary_html, str) else None
            )
            or None,
            content=html_to_text("\n".join(content_parts)[:MAX_CONTENT_CHARS]) or None,
            authors=_authors(raw),
            tags=clean_names(
                [
                    t.get("label") or t.get("term")
                    for t in raw.get("tags", []) or []
                    if isinstance(t, dict)
                ]
            ),
            published=published,
            updated=updated,
            enclosures=_enclosures(raw, bases, link or feed_url),
        ),
        guid,
    )


def _original_link(raw: Any, bases: LinkBases) -> str | None:
    """feedburner:origLink and its kin (pheedo, ...): the article's own URL, not a redirect."""
    for key in raw:
        if isinstance(key, str) and key.endswith("_origlink"):
            link = safe_link(bases.document_url, bases.entry(raw.get(key)))
            if link:
                return link
    return None


def _authors(raw: Any) -> tuple[str, ...]:
    names = clean_names(
        [a.get("name") for a in raw.get("authors", []) or [] if isinstance(a, dict)]
    )
    return names or clean_names([raw.get("author")])


def _enclosures(raw: Any, bases: LinkBases, base: str) -> tuple[Enclosure, ...]:
    found = []
    for enc in raw.get("enclosures", []) or []:
        href = safe_link(base, bases.document(enc.get("href")))
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
        episode=small_int(raw.get("itunes_episode")),
        season=small_int(raw.get("itunes_season")),
        image=safe_link(base, bases.document(image.get("href")))
        if isinstance(image, dict)
        else None,
    )
    return (first, *found[1:])


def _entry_dates(raw: Any, language: str | None) -> tuple[datetime | None, datetime | None]:
    """(published, updated). feedparser files RSS/RSS 1.0 `dc:date` and Atom `<updated>`
    under `updated`: an entry with no other date was published then."""
    # dict.get: FeedParserDict.get would map a missing "updated" to "published".
    updated = struct_to_datetime(dict.get(raw, "updated_parsed")) or foreign_date(
        dict.get(raw, "updated"), language
    )
    published = (
        struct_to_datetime(dict.get(raw, "published_parsed"))
        or struct_to_datetime(dict.get(raw, "created_parsed"))
        or foreign_date(dict.get(raw, "published"), language)
        or foreign_date(dict.get(raw, "created"), language)
        or updated
    )
    return published, updated


def _feed_meta(feed: Any, body: bytes, bases: LinkBases) -> FeedMeta:
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
        link=clean_line(bases.document(feed.get("link")), 2000) or None,
        language=language,
        ttl=ttl_seconds,
        skip_hours=frozenset(skip_hours),
        skip_days=frozenset(skip_days),
        update_period=update_period,
        prev_archive=_link_by_rel(feed, "prev-archive", bases),
        next_page=_link_by_rel(feed, "next", bases),
    )


def _link_by_rel(feed: Any, rel: str, bases: LinkBases) -> str | None:
    """An RFC 5005 link (Atom's <link>, or atom:link inside RSS), made absolute."""
    for link in feed.get("links", []) or []:
        if isinstance(link, dict) and link.get("rel") == rel:
            return safe_link(bases.document_url, bases.document(link.get("href")))
    return None
