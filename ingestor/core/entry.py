"""A feed entry and its feed, as parsed: the plain data every layer shares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Enclosure:
    url: str
    type: str | None = None
    length: int | None = None
    duration: int | None = None  # seconds (itunes:duration, JSON Feed duration_in_seconds)
    episode: int | None = None
    season: int | None = None
    image: str | None = None


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
    # The link is shared with other entries of the feed (a podcast's show page, a live
    # blog): the entry is an item of its own, and the link is not its article page.
    shared_link: bool = False
    # Other keys this entry had: the guids of the entries that re-published one article.
    aliases: tuple[str, ...] = ()
    language: str | None = None  # the entry's own (a news sitemap's news:language)
    backfill: bool = False  # read from the feed's history (backfill:), not its live page

    @property
    def version_time(self) -> datetime | None:
        """The date of this version of the entry, in every format: Atom's <updated>, JSON
        Feed's date_modified, else the published date (RSS pubDate, dc:date). A later one
        than seen before makes the entry an update candidate (dedup.updates)."""
        return self.updated or self.published

    @property
    def version_stamp(self) -> float | None:
        moment = self.version_time
        return moment.timestamp() if moment is not None else None

    @property
    def text_digest(self) -> str:
        """A digest of what the feed says of the entry (title, summary, content, white
        space folded): another one than seen before makes it an update candidate too."""
        parts = (self.title, self.summary or "", self.content or "")
        folded = "\x00".join(" ".join(part.split()) for part in parts)
        return hashlib.sha256(folded.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class FeedMeta:
    title: str | None = None
    link: str | None = None
    language: str | None = None
    ttl: float | None = None
    skip_hours: frozenset[int] = frozenset()
    skip_days: frozenset[int] = frozenset()  # 0 = Monday, as datetime.weekday()
    update_period: float | None = None  # seconds between updates, from sy:*
    # RFC 5005: the archive document before this one, and the next page of a paged feed.
    prev_archive: str | None = None
    next_page: str | None = None


@dataclass(frozen=True)
class ParsedFeed:
    format: str
    meta: FeedMeta
    entries: tuple[FeedEntry, ...] = ()
    warning: str | None = field(default=None)
    # A sitemap index: the sitemaps it lists, with their lastmod (None when it gives none).
    sitemaps: tuple[tuple[str, datetime | None], ...] = ()

    @property
    def is_sitemap(self) -> bool:
        return self.format.startswith("sitemap")
