"""Decisions about sources beyond one feed document, from plain data: which of a site's
discovered feeds and sitemaps to poll, which sitemap entries are news (or history), what
a site's feeds leave out (coverage), and whether a feed has gone quiet for too long."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime

from ingestor.core.entry import FeedEntry
from ingestor.core.schedule import publishing_interval
from ingestor.core.state import FeedState

DISCOVERY_EVERY = 86400.0  # a site's sources are looked for again daily
COVERAGE_WINDOW = 2 * 86400.0
COVERAGE_FEED = 1
COVERAGE_SITEMAP = 2
MAX_SITE_SITEMAPS = 5
MAX_INDEX_SITEMAPS = 50
# A feed is stale when its newest item is older than this many of its usual gaps between
# items (and at least a day): a daily feed silent for 8 days, an hourly one for a day.
STALE_GAPS = 8
STALE_FLOOR = 86400.0

Found = tuple[str, str, str]  # (url, kind, why it is or is not used)


def discovery_due(state: FeedState, now: float) -> bool:
    return state.discovered_at is None or now - state.discovered_at >= DISCOVERY_EVERY


def choose_site_sources(
    alternates: Sequence[Found], sitemaps: Sequence[str], probed: Sequence[Found]
) -> tuple[Found, ...]:
    """Everything discovery found, each with its verdict. Feeds the home page names are
    used (comment feeds are not); the usual paths were only tried when it named none.
    Of robots.txt's sitemaps, news sitemaps are preferred when there are any."""
    found = [*alternates, *probed]
    news = [s for s in sitemaps if "news" in s.lower()]
    preferred = news or list(sitemaps)
    for url in dict.fromkeys(sitemaps):
        if url in preferred[:MAX_SITE_SITEMAPS]:
            found.append((url, "sitemap", "used: listed in robots.txt"))
        elif url in preferred:
            found.append((url, "sitemap", f"not used: more than {MAX_SITE_SITEMAPS} sitemaps"))
        else:
            found.append((url, "sitemap", "not used: robots.txt lists a news sitemap"))
    return tuple(found)


def used_sources(found: Iterable[Found]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(url for url, _kind, why in found if why.startswith("used")))


def sitemap_entries(
    entries: Iterable[FeedEntry], now: float, max_age: float, backfill: int
) -> list[FeedEntry]:
    """A sitemap's entries that are news (dated within max_age), then, when backfilling,
    up to `backfill` older ones, newest first, marked as history. An undated entry is
    neither: a sitemap without dates lists the whole site, not its news."""
    recent: list[FeedEntry] = []
    older: list[tuple[float, FeedEntry]] = []
    for entry in entries:
        moment = entry.published or entry.updated
        if moment is None:
            continue
        stamp = moment.timestamp()
        if now - stamp <= max_age:
            recent.append(entry)
        elif backfill:
            older.append((stamp, entry))
    older.sort(key=lambda pair: -pair[0])
    history = [dataclasses.replace(e, backfill=True) for _, e in older[:backfill]]
    return recent + history


def index_sitemaps(
    listed: Iterable[tuple[str, datetime | None]], now: float, max_age: float, backfill: int
) -> list[str]:
    """The sitemaps of an index worth reading: those changed within max_age (or undated),
    newest first, at most MAX_INDEX_SITEMAPS; all of them (to the bound) when backfilling."""
    keep = [
        (moment.timestamp() if moment else now, url)
        for url, moment in listed
        if backfill or moment is None or now - moment.timestamp() <= max_age
    ]
    keep.sort(key=lambda pair: -pair[0])
    return list(dict.fromkeys(url for _, url in keep))[:MAX_INDEX_SITEMAPS]


def merge_coverage(
    coverage: Iterable[tuple[str, int, float]], where: int, urls: Iterable[str], now: float
) -> tuple[tuple[str, int, float], ...]:
    """The site's recent URLs with `urls` seen now in a source of kind `where`; URLs not
    seen for COVERAGE_WINDOW are forgotten."""
    merged = {url: (flags, seen) for url, flags, seen in coverage if now - seen <= COVERAGE_WINDOW}
    for url in urls:
        flags, _seen = merged.get(url, (0, now))
        merged[url] = (flags | where, now)
    return tuple((url, flags, seen) for url, (flags, seen) in merged.items())


def coverage_counts(coverage: Iterable[tuple[str, int, float]], now: float) -> dict[str, int]:
    """Over the last COVERAGE_WINDOW: articles in the site's feeds, in its sitemaps, and in
    its sitemaps but none of its feeds."""
    recent = [flags for _url, flags, seen in coverage if now - seen <= COVERAGE_WINDOW]
    return {
        "feed_articles": sum(1 for f in recent if f & COVERAGE_FEED),
        "sitemap_articles": sum(1 for f in recent if f & COVERAGE_SITEMAP),
        "missed_by_feeds": sum(1 for f in recent if f == COVERAGE_SITEMAP),
    }


def coverage_sentence(counts: dict[str, int]) -> str:
    listed = counts["sitemap_articles"]
    if not listed:
        return f"its feeds carried {counts['feed_articles']} articles; no sitemap listed any"
    carried = listed - counts["missed_by_feeds"]
    return f"its feeds carried {carried} of the {listed} articles the site listed"


def stale_since(state: FeedState, now: float) -> float | None:
    """The date of the feed's newest item when the feed has been silent for much longer
    than its usual rhythm; None while it keeps its pace (or has too few items to judge)."""
    pace = publishing_interval(state.recent_entry_times)
    if pace is None or not state.recent_entry_times:
        return None
    newest = max(state.recent_entry_times)
    return newest if now - newest > max(STALE_GAPS * pace, STALE_FLOOR) else None
