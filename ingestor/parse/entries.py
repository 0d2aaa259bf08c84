"""The entry fields every format shares, built by the same rules (RSS/Atom and JSON Feed
alike): safe links, stable keys, text from HTML, dates, shared links."""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from ingestor.core.cleaning import clean_line
from ingestor.core.entry import FeedEntry

MAX_SUMMARY_CHARS = 20_000


MAX_CONTENT_CHARS = 500_000


def struct_to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, time.struct_time):
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


def entry_key(guid: str | None, link: str | None, title: str, summary: str | None) -> str:
    if guid:
        return "guid:" + guid[:2000]
    if link:
        return "link:" + link[:2000]
    digest = hashlib.sha256(f"{title}\x00{summary or ''}".encode()).hexdigest()
    return "hash:" + digest


def safe_link(base: str, link: Any) -> str | None:
    """An absolute http(s) URL, or None: javascript:, data:, file: and the like never pass."""
    if not isinstance(link, str) or not link.strip():
        return None
    try:
        absolute = urljoin(base, clean_line(link))
    except ValueError:
        return None
    return absolute if absolute.lower().startswith(("http://", "https://")) else None


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


def small_int(value: Any) -> int | None:
    text = value.strip() if isinstance(value, str) else ""
    return int(text) if text.isdigit() and len(text) <= 9 else None


def foreign_date(text: Any, language: str | None) -> datetime | None:
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


# A link that this many entries with different titles share is a landing page (a live
# blog, a topic page): each entry is an item of its own.
LANDING_PAGE_TITLES = 3


def mark_shared_links(entries: list[FeedEntry], site_link: str | None) -> tuple[FeedEntry, ...]:
    """Entries of one feed that share a link are one article (a re-published item: same
    URL, new guid, later date), unless something tells them apart: each has its own
    enclosure (podcast episodes linking to the show page), the link is the feed's own home
    page, or it is a landing page (three or more different titles). Such entries are
    items of their own, keyed by guid, else enclosure, never by the link. Entries of one
    article are keyed by the link, so the later one is an update of the earlier."""
    groups: dict[str, list[FeedEntry]] = {}
    for entry in entries:
        if entry.link:
            groups.setdefault(entry.link, []).append(entry)
    home = site_link.rstrip("/") if site_link else None
    result = []
    for entry in entries:
        link = entry.link
        group = groups.get(link or "", [])
        if link and home is not None and link.rstrip("/") == home:
            result.append(_own_item(entry))
        elif len(group) < 2:
            result.append(entry)
        elif _distinguishable(group):
            result.append(_own_item(entry))
        elif entry is group[0]:
            result.append(one_article(group))
    return tuple(result)


def one_article(group: list[FeedEntry]) -> FeedEntry:
    """Entries that are one article, as one entry keyed by their link: the latest one's
    text, first published when the earliest was, updated when the latest was; the
    entries' own keys stay as aliases (a poll that saw one of them alone knows it)."""

    def moment(entry: FeedEntry) -> datetime:
        return entry.updated or entry.published or datetime.min.replace(tzinfo=UTC)

    latest = max(group, key=moment)
    published = [e.published for e in group if e.published is not None]
    first = min(published) if published else latest.published
    last = max(moment(e) for e in group)
    updated = last if first is not None and last > first else latest.updated
    link = latest.link or ""
    return replace(
        latest,
        key="link:" + link[:2000],
        published=first,
        updated=updated,
        aliases=tuple(dict.fromkeys(e.key for e in group if not e.key.startswith("link:"))),
    )


def _distinguishable(group: list[FeedEntry]) -> bool:
    """Entries sharing a link that are not one article: each has its own enclosure, or
    a landing page lists them."""
    enclosures = [e.enclosures[0].url for e in group if e.enclosures]
    if len(enclosures) == len(group) and len(set(enclosures)) == len(group):
        return True
    return len({e.title.strip().casefold() for e in group}) >= LANDING_PAGE_TITLES


def _own_item(entry: FeedEntry) -> FeedEntry:
    key = entry.key
    if key.startswith("link:"):
        key = (
            "enclosure:" + entry.enclosures[0].url[:2000]
            if entry.enclosures
            else entry_key(None, None, entry.title, entry.summary or entry.content)
        )
    return replace(entry, key=key, shared_link=True)


def build_entry(draft: FeedEntry, guid: str | None) -> FeedEntry | None:
    """A format parser's draft entry (its key not yet set) finished by the rules every
    format shares; None when it has nothing at all (no link, title or text)."""
    summary, content = draft.summary, draft.content
    if content and summary and summary == content[: len(summary)]:
        # feedparser copies content:encoded (or Atom content) into `summary` when the
        # entry has no description of its own: that is not a summary.
        summary = None
    if not (draft.link or draft.title or summary or content):
        return None
    return replace(
        draft,
        key=entry_key(clean_line(guid) or None, draft.link, draft.title, summary),
        summary=summary,
        published=draft.published or draft.updated,
    )


def clean_names(values: object) -> tuple[str, ...]:
    """Author names or tags: one line each, at most 200 characters, no repeats."""
    if not isinstance(values, list | tuple):
        return ()
    names = (clean_line(v, 200) for v in values if isinstance(v, str))
    return tuple(dict.fromkeys(n for n in names if n))
