"""Polling one feed: fetch with its validators, parse in a worker, queue its new entries in
the frontier with the feed's new state in one store commit. Articles never block a poll.
Every change to the feed's state is decided in core.poll_decider; this module only calls.

poll_feed(feed):
    gate = poll_decider.gate(feed, state)       # disabled (410)? must it wait? -> skip
    response = fetch feed with stored validators        # error -> poll_decider.failed
    state = poll_decider.fetched(response)              # moved (301), fresh until
    304, or body hash == last body hash -> poll_decider.not_modified, commit
    parsed = parse in a worker process                  # error -> poll_decider.failed
    items = frontier.plan_items(entries this feed never produced, or changed ones)
    state = poll_decider.polled_ok(validators, metadata, entry dates, items)
    store.commit_poll(feed state + items)               # one transaction
    dispatcher.add(items' hosts)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from ingestor.analyze.jobs import parse_feed_job
from ingestor.config.model import FeedConfig
from ingestor.core import frontier, poll_decider, schedule, sources
from ingestor.core.dedup import new_entries, republished_entries, updated_entries
from ingestor.core.entry import ParsedFeed
from ingestor.core.frontier import NewItem
from ingestor.core.payload import feed_settings
from ingestor.core.poll_decider import Gate
from ingestor.core.polling import with_meta
from ingestor.core.retrieved import RetrievedFeed
from ingestor.core.state import FeedState, HostWait, PollCommit
from ingestor.core.urls import host_key
from ingestor.errors import (
    FetchError,
    IngestorError,
    ParseError,
    WorkerError,
)
from ingestor.pipeline.dispatcher import ArticleDispatcher
from ingestor.pipeline.outcomes import PollOutcome, PollStatus
from ingestor.pipeline.parts import Parts, UsesParts
from ingestor.pipeline.source_poller import SourcePoller

log = logging.getLogger(__name__)

# A feed this small is parsed in the event loop: it takes feedparser under about 2.5 ms
# (0.3 ms per KB of RSS, less for JSON), no more than a round trip to a worker costs
# across the two processes, and a pass of quiet feeds never starts the workers (100,000
# of them: about 570 MB of worker RSS spared, issue 28). Larger documents go to a worker,
# whose time limit protects the loop from a pathological one.
INLINE_PARSE_MAX_BYTES = 8 * 1024


class FeedPoller(UsesParts):
    def __init__(self, parts: Parts, dispatcher: ArticleDispatcher) -> None:
        super().__init__(parts)
        self.dispatcher = dispatcher
        self.states: dict[str, FeedState] = {}
        self._feed_locks: dict[str, asyncio.Lock] = {}
        self.sources = SourcePoller(parts, lambda: self.states, self.poll_feed, self._parse)

    def state_of(self, feed: FeedConfig) -> FeedState:
        return self.states.get(feed.feed_id) or FeedState(feed_id=feed.feed_id)

    async def poll_feed(
        self,
        feed: FeedConfig,
        force: bool = False,
        after_wait: bool = False,
        claimed: FeedState | None = None,
    ) -> PollOutcome:
        """Poll one feed. `force`: whatever its interval (run --once), still honouring
        what the server asked for and the error backoff; `after_wait`: the poll follows a
        wait the server asked for in this same pass, so the error backoff is not applied.
        `claimed`: a shared store already gave this instance the poll, with this state."""
        lock = self._feed_locks.setdefault(feed.feed_id, asyncio.Lock())
        if lock.locked():
            return PollOutcome(feed.feed_id, PollStatus.SKIPPED)
        async with lock:
            try:
                if not self.store.shared:
                    return await self._poll_feed(feed, force, after_wait)
                return await self._poll_claimed(feed, force, after_wait, claimed)
            finally:
                self._feed_locks.pop(feed.feed_id, None)

    async def _poll_claimed(
        self, feed: FeedConfig, force: bool, after_wait: bool, claimed: FeedState | None
    ) -> PollOutcome:
        """Several instances share the state: poll only with the feed's lease (and its
        host's), from the feed's current state, which another instance may have moved on."""
        if claimed is None:
            host = host_key(self.state_of(feed).url)
            claims = await self.store.claim_feeds([(feed.feed_id, host)], time.time(), force)
            claimed = claims.claimed.get(feed.feed_id)
            if claimed is None:
                when, why = claims.busy[feed.feed_id]
                log.debug("feed %s: not polled here now: %s", feed.url, why)
                return PollOutcome(feed.feed_id, PollStatus.SKIPPED, retry_at=when)
        self.states[feed.feed_id] = claimed
        outcome: PollOutcome | None = None
        try:
            outcome = await self._poll_feed(feed, force, after_wait)
            return outcome
        finally:
            # A poll that committed has given the feed back already; one that did not
            # (skipped, disabled, cut short) is due again when the poll says, or later.
            schedule_config = self.config.schedule
            later = time.time() + schedule.error_backoff(
                1, schedule_config.interval, schedule_config
            )
            retry_at = outcome.retry_at if outcome is not None else None
            await self.store.release_feeds([feed.feed_id], retry_at or later)

    async def _poll_feed(self, feed: FeedConfig, force: bool, after_wait: bool) -> PollOutcome:
        if feed.site:
            return await self.sources.poll_site(feed)
        now = time.time()
        decision = poll_decider.gate(feed, self.state_of(feed), now, force, after_wait)
        state = decision.state
        if decision.gate is Gate.DISABLED:
            return PollOutcome(feed.feed_id, PollStatus.DISABLED, error=state.disabled_reason)
        if decision.reenabled_from:
            log.info(
                "feed %s: configuration changed, re-enabling (was: %s)",
                feed.url,
                decision.reenabled_from,
            )
        if decision.gate is Gate.WAITING:
            return PollOutcome(feed.feed_id, PollStatus.SKIPPED, retry_at=decision.retry_at)
        host_wait = self.fetcher.limiter.not_before(host_key(state.url))
        if host_wait > now:
            return PollOutcome(feed.feed_id, PollStatus.SKIPPED, retry_at=host_wait)
        self.metrics.inc("feeds_polled")
        started = time.perf_counter()
        try:
            response = await self.fetcher.fetch_feed(
                state.url, state.etag, state.last_modified, feed.request
            )
        except FetchError as exc:
            return await self._feed_failed(feed, state, exc)
        finally:
            self.metrics.observe("fetch_feed", time.perf_counter() - started)
        moved_from = state.url
        state = poll_decider.fetched(
            state, now, response.permanent_url, response.max_age, response.failed_requests
        )
        if state.url != moved_from:
            log.warning(
                "feed %s: moved permanently to %s; polling the new URL from now on "
                "(the configured URL stays the feed's identity)",
                feed.url,
                state.url,
            )
        if response.not_modified:
            self.metrics.inc("feeds_not_modified")
            state = poll_decider.not_modified(feed, state, self.config.schedule, now, self.rng)
            outcome = await self._same_document(feed, state, PollStatus.NOT_MODIFIED)
            return await self._committed(state, outcome)
        body_hash = hashlib.sha256(response.body).hexdigest()
        if body_hash == state.body_hash:
            self.metrics.inc("feeds_unchanged")
            state = poll_decider.not_modified(
                feed,
                state,
                self.config.schedule,
                now,
                self.rng,
                response.etag,
                response.last_modified,
                same_body=True,
            )
            outcome = await self._same_document(feed, state, PollStatus.UNCHANGED)
            return await self._committed(state, outcome)
        started = time.perf_counter()
        try:
            parsed, parse_seconds = await self._parse(response.retrieved())
            self.metrics.observe("parse", parse_seconds)
            self.metrics.cpu("parse", parse_seconds)
        except (ParseError, WorkerError) as exc:
            return await self._feed_failed(feed, state, exc)
        finally:
            self.metrics.observe("parse_roundtrip", time.perf_counter() - started)
        if parsed.warning:
            log.info("feed %s: %s", feed.url, parsed.warning)
        parsed, index, listed_sitemaps = await self._beyond_the_document(feed, state, parsed, now)
        items = await self._new_items(feed, with_meta(state, parsed.meta), parsed, now)
        new, updated = poll_decider.entries_counted([i.is_update for i in items])
        state = poll_decider.polled_ok(
            feed,
            state,
            self.config.schedule,
            now,
            self.rng,
            meta=parsed.meta,
            etag=response.etag,
            last_modified=response.last_modified,
            body_hash=body_hash,
            entry_dates=[e.published or e.updated for e in parsed.entries],
            new_entries=new,
            sources=listed_sitemaps,
        )
        outcome = index or PollOutcome(
            feed.feed_id,
            PollStatus.OK,
            new_entries=new,
            updated_entries=updated,
            listed=tuple(
                e.link for e in parsed.entries if e.link and not e.backfill and not e.shared_link
            ),
            sitemap=parsed.is_sitemap,
        )
        return await self._committed(state, outcome, items)

    async def _same_document(
        self, feed: FeedConfig, state: FeedState, status: PollStatus
    ) -> PollOutcome:
        """A 304 or the same body: nothing new, but the sitemaps an unchanged index
        lists still are polled (they change without it)."""
        if not state.sources:
            return PollOutcome(feed.feed_id, status)
        outcome = await self.sources.poll_listed(feed, state.sources)
        return replace(outcome, status=status)

    async def _beyond_the_document(
        self, feed: FeedConfig, state: FeedState, parsed: ParsedFeed, now: float
    ) -> tuple[ParsedFeed, PollOutcome | None, tuple[str, ...]]:
        """A sitemap index's sitemaps polled (their outcome is the index's, and they are
        returned); a sitemap's entries cut to its news (and, at the first poll, its
        history); a feed's first poll with its older pages' entries when it asks for
        backfill."""
        backfill = 0 if state.backfilled else feed.backfill
        if parsed.format == "sitemapindex":
            index, listed = await self.sources.poll_index(feed, parsed, state)
            return parsed, index, listed
        if parsed.is_sitemap:
            taken = sources.sitemap_entries(parsed.entries, now, feed.sitemap_max_age, backfill)
            return replace(parsed, entries=tuple(taken)), None, ()
        if backfill and (parsed.meta.prev_archive or parsed.meta.next_page):
            history = await self.sources.history(feed, parsed)
            return replace(parsed, entries=parsed.entries + tuple(history)), None, ()
        return parsed, None, ()

    async def _parse(self, doc: RetrievedFeed) -> tuple[ParsedFeed, float]:
        if len(doc.body) > INLINE_PARSE_MAX_BYTES:
            return await self.pool.run(parse_feed_job, doc)
        try:
            return parse_feed_job(doc)
        except IngestorError:
            raise
        except Exception as exc:
            # What the worker pool would have reported for the same document.
            raise ParseError(doc.url, f"{type(exc).__name__}: {str(exc)[:300]}") from None

    async def _new_items(
        self, feed: FeedConfig, state: FeedState, parsed: ParsedFeed, now: float
    ) -> list[NewItem]:
        keys = [e.key for e in parsed.entries]
        aliases = [a for e in parsed.entries for a in e.aliases]
        known = await self.store.entry_versions(feed.feed_id, keys + aliases)
        republished = republished_entries(parsed.entries, set(known))
        unseen = set(keys) - set(known) - {e.key for e in republished}
        fresh = new_entries(parsed.entries, unseen)
        changed = []
        if self.config.dedup.updates:
            changed = updated_entries(parsed.entries, known) + republished
        return frontier.plan_items(
            feed.feed_id,
            [(e, False) for e in fresh] + [(e, True) for e in changed],
            fetch_articles=feed.fetch_articles,
            feed_title=state.title,
            feed_language=state.language,
            tracking=self.tracking,
            now=now,
            settings=feed_settings(feed),
        )

    async def _commit_poll(
        self,
        state: FeedState,
        items: Sequence[NewItem] = (),
        host_wait: HostWait | None = None,
    ) -> None:
        self.states[state.feed_id] = state
        await self.store.commit_poll(PollCommit(state, items, host_wait))
        if items:
            self.dispatcher.add(frontier.earliest_by_host(items))

    async def _committed(
        self, state: FeedState, outcome: PollOutcome, items: Sequence[NewItem] = ()
    ) -> PollOutcome:
        await self._commit_poll(state, items)
        return outcome

    async def _feed_failed(
        self, feed: FeedConfig, state: FeedState, exc: IngestorError
    ) -> PollOutcome:
        now = time.time()
        self.metrics.inc("feed_errors", exc.kind)
        failure = poll_decider.failed(feed, state, exc, self.config.schedule, now, self.rng)
        state = failure.state
        # The error's own text names the URL it failed on; the log line names the feed.
        where = exc.url or feed.url
        detail = exc.reason if where == feed.url else f"{where}: {exc.reason}"
        if failure.disabled:
            log.error("feed %s: %s", feed.url, state.disabled_reason)
        elif failure.server_wait is not None:
            log.info(
                "feed %s: %s; polled again in %.0fs, as the server asked",
                feed.url,
                detail,
                max(failure.server_wait - now, 0.0),
            )
        else:
            log.warning("feed %s: %s (failure %d in a row)", feed.url, detail, state.error_count)
        await self._commit_poll(state, host_wait=failure.host_wait)
        message = str(exc)
        return PollOutcome(
            feed.feed_id,
            PollStatus.FAILED,
            error=f"{feed.url}: {message}" if not message.startswith(feed.url) else message,
            retry_at=failure.server_wait,
        )
