"""Build the output record from an entry, its page analysis and the dedup verdict (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingestor.config.model import FeedConfig
from ingestor.core.analysis import ArticleAnalysis
from ingestor.core.cleaning import MAX_TITLE_CHARS, clean_line
from ingestor.core.dedup import DuplicateVerdict
from ingestor.core.entry import Enclosure, FeedEntry
from ingestor.core.record import Record


def build_record(
    *,
    record_id: str,
    url: str,
    canonical_url: str,
    feed: FeedConfig,
    feed_title: str | None,
    entry: FeedEntry,
    analysis: ArticleAnalysis,
    verdict: DuplicateVerdict,
    fetched_at: datetime,
    updated_at: datetime | None = None,
    story_id: str | None = None,
    page_error: str | None = None,
) -> Record:
    meta = analysis.meta
    title = clean_line(entry.title or meta.title or "", MAX_TITLE_CHARS)
    text = analysis.body.text
    return Record(
        id=record_id,
        url=url,
        canonical_url=canonical_url,
        feed_url=feed.url,
        feed_name=clean_line(feed.name or feed_title or feed.url, 300),
        title=title,
        authors=list(entry.authors or meta.authors),
        # The page's date has no time of day: the feed's timestamp wins when there is one.
        published_at=entry.published or meta.date,
        fetched_at=fetched_at,
        language=analysis.language.language,
        language_confidence=analysis.language.confidence,
        text=text,
        summary=entry.summary,
        content_hash=analysis.fingerprint.content_hash,
        duplicate_of=verdict.duplicate_of,
        duplicate_kind=verdict.kind,
        similarity=verdict.similarity,
        updated_at=updated_at or _updated_at(entry, entry.published or meta.date),
        site_name=meta.site_name,
        image=meta.image,
        tags=list(dict.fromkeys([*entry.tags, *meta.tags])),
        feed_tags=list(feed.tags),
        extraction_method=analysis.body.method,
        entry_id=entry.key,
        word_count=len(text.split()),
        enclosures=[_enclosure(e) for e in entry.enclosures],
        backfill=entry.backfill,
        page_error=page_error,
        story_id=story_id or record_id,
    )


def _enclosure(enclosure: Enclosure) -> dict[str, Any]:
    found: dict[str, Any] = {
        "url": enclosure.url,
        "type": enclosure.type,
        "length": enclosure.length,
    }
    for name in ("duration", "episode", "season", "image"):
        value = getattr(enclosure, name)
        if value is not None:
            found[name] = value
    return found


def _updated_at(entry: FeedEntry, published: datetime | None) -> datetime | None:
    """The entry's own `updated`, when it says something `published` does not."""
    if entry.updated is None or published is None:
        return None
    return entry.updated if abs((entry.updated - published).total_seconds()) > 1 else None
