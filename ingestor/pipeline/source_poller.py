"""Sources beyond one feed document: a site's feeds and sitemaps, a sitemap index's
sitemaps, a feed's history. Every decision is core.sources'; this module only calls.

poll_site(site):
    if discovery is due (first poll, then daily):
        home page -> <link rel="alternate"> feeds; robots.txt -> Sitemap: lines;
        the usual paths (/feed, /rss.xml, ...) when the page names no feed
        found = sources.choose_site_sources(...)                # with why, for status
    for each used source: poll it as a feed, with the site's options
    coverage = sources.merge_coverage(what each source listed)
    store.commit_poll(site state)

poll_index(index, sitemaps): each sitemap it lists, polled as a feed of its own
history(feed, first page): prev-archive / next pages, until `backfill` entries are read
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

from ingestor.config.model import FeedConfig
from ingestor.core import poll_decider, sources
from ingestor.core.entry import FeedEntry, ParsedFeed
from ingestor.core.retrieved import RetrievedFeed
from ingestor.core.state import FeedState, PollCommit
from ingestor.core.urls import canonicalize_url
from ingestor.errors import IngestorError
from ingestor.parse.discovery import USUAL_FEED_PATHS, alternate_feeds
from ingestor.pipeline.outcomes import PollOutcome, PollStatus
from ingestor.pipeline.parts import Parts, UsesParts

log = logging.getLogger(__name__)

PollFeed = Callable[..., Awaitable[PollOutcome]]
ParseDoc = Callable[[RetrievedFeed], Awaitable[tuple[ParsedFeed, float]]]
MAX_HISTORY_PAGES = 200


class SourcePoller(UsesParts):
    def __init__(
        self,
        parts: Parts,
        states: Callable[[], dict[str, FeedState]],
        poll_feed: PollFeed,
        parse: ParseDoc,
    ) -> None:
        super().__init__(parts)
        self.states = states
        self._poll_feed = poll_feed
        self._parse = parse

    # --- a site ---

    async def poll_site(self, site: FeedConfig) -> PollOutcome:
        now = time.time()
        state = self.states().get(site.feed_id) or FeedState(feed_id=site.feed_id)
        changes: dict[str, object] = {}
        used = state.sources
        if sources.discovery_due(state, now):
            found = await self._discover(site)
            used = sources.used_sources(found)
            # A site where nothing was found (down, or its page changing) is looked at
            # again at its next poll, not a day later.
            changes = {"discovery": found, "sources": used, "discovered_at": now if used else None}
            log.info("site %s: %d sources found, %d used", site.url, len(found), len(used))
        coverage = state.coverage
        results = []
        for url in used:
            # Forced: the site's schedule says when; each source's own state still says
            # whether a server asked it to wait (Retry-After) or it is backing off.
            result = await self._poll_feed(self.source(site, url), force=True)
            results.append(result)
            where = sources.COVERAGE_SITEMAP if result.sitemap else sources.COVERAGE_FEED
            listed = (canonicalize_url(link, self.tracking) for link in result.listed)
            coverage = sources.merge_coverage(coverage, where, listed, now)
        outcome = _joined(site.feed_id, results)
        if not used:
            outcome = dataclasses.replace(
                outcome, status=PollStatus.FAILED, error="no feed or sitemap found on the site"
            )
        failed = outcome.error if outcome.status is PollStatus.FAILED else None
        state = poll_decider.sources_polled(
            site, state, self.config.schedule, now, self.rng, failed, coverage=coverage, **changes
        )
        self.states()[site.feed_id] = state
        await self.store.commit_poll(PollCommit(state, ()))
        return outcome

    def source(self, entry: FeedConfig, url: str) -> FeedConfig:
        """A discovered source, polled with its entry's options."""
        return dataclasses.replace(entry, url=url, site=False)

    async def _discover(self, site: FeedConfig) -> tuple[sources.Found, ...]:
        alternates: list[sources.Found] = []
        try:
            page = await self.fetcher.fetch_feed(site.url, options=site.request)
            alternates = alternate_feeds(page.body, page.final_url)
        except IngestorError as exc:
            log.warning("site %s: home page: %s", site.url, exc.reason)
        try:
            sitemaps = await self.fetcher.robots.sitemaps(site.url)
        except IngestorError as exc:
            log.warning("site %s: robots.txt: %s", site.url, exc.reason)
            sitemaps = []
        probed: list[sources.Found] = []
        if not any(why.startswith("used") for _url, _kind, why in alternates):
            probed = await self._probe_usual_paths(site)
        return sources.choose_site_sources(alternates, sitemaps, probed)

    async def _probe_usual_paths(self, site: FeedConfig) -> list[sources.Found]:
        for path in USUAL_FEED_PATHS:
            url = urljoin(site.url, path)
            try:
                response = await self.fetcher.fetch_feed(url, options=site.request)
                parsed, _seconds = await self._parse(response.retrieved())
            except IngestorError:
                continue
            if not parsed.is_sitemap:
                return [(url, parsed.format, f"used: found at {path}")]
        return []

    # --- a sitemap index ---

    async def poll_index(
        self, index: FeedConfig, parsed: ParsedFeed, state: FeedState
    ) -> tuple[PollOutcome, tuple[str, ...]]:
        backfill = 0 if state.backfilled else index.backfill
        listed = sources.index_sitemaps(
            parsed.sitemaps, time.time(), index.sitemap_max_age, backfill
        )
        host = _host(index.url)
        own = tuple(u for u in listed if _host(u) == host)
        if len(own) < len(listed):
            log.warning(
                "sitemap index %s: %d sitemaps on other hosts refused",
                index.url,
                len(listed) - len(own),
            )
        return await self.poll_listed(index, own), own

    async def poll_listed(self, index: FeedConfig, urls: tuple[str, ...]) -> PollOutcome:
        """The sitemaps an index lists, each polled as a feed of its own."""
        # Forced, as a site's sources are: the index's schedule says when.
        results = [await self._poll_feed(self.source(index, url), force=True) for url in urls]
        # The index itself was read: a sitemap of it that failed says so in its own state.
        return dataclasses.replace(
            _joined(index.feed_id, results), status=PollStatus.OK, error=None, sitemap=True
        )

    # --- a feed's history ---

    async def history(self, feed: FeedConfig, first: ParsedFeed) -> list[FeedEntry]:
        """Up to feed.backfill entries from the pages before this one (RFC 5005
        prev-archive, or a paged feed's next), oldest pages last."""
        wanted = feed.backfill
        seen = {e.key for e in first.entries}
        found: list[FeedEntry] = []
        visited = {feed.url}
        link = first.meta.prev_archive or first.meta.next_page
        pages = 0
        while link and link not in visited and len(found) < wanted:
            if pages >= MAX_HISTORY_PAGES:
                break
            visited.add(link)
            pages += 1
            try:
                response = await self.fetcher.fetch_feed(link, options=feed.request)
                page, _seconds = await self._parse(response.retrieved())
            except IngestorError as exc:
                log.warning("feed %s: history page %s: %s", feed.url, link, exc.reason)
                break
            for entry in page.entries:
                if entry.key not in seen and len(found) < wanted:
                    seen.add(entry.key)
                    found.append(dataclasses.replace(entry, backfill=True))
            link = page.meta.prev_archive or page.meta.next_page
        log.info("feed %s: %d older entries read from %d pages", feed.url, len(found), pages)
        return found


def _host(url: str) -> str | None:
    return urlsplit(url).hostname


def _joined(feed_id: str, results: list[PollOutcome]) -> PollOutcome:
    """One outcome for several sources: counts added, the URLs they listed joined; failed
    (with the first error) only when every source failed."""
    failed = [r for r in results if r.status is PollStatus.FAILED]
    return PollOutcome(
        feed_id,
        PollStatus.FAILED if results and len(failed) == len(results) else PollStatus.OK,
        new_entries=sum(r.new_entries for r in results),
        updated_entries=sum(r.updated_entries for r in results),
        error=failed[0].error if failed else None,
        listed=tuple(u for r in results for u in r.listed),
    )
