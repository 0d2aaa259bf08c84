"""The orchestrator: calls the fetcher, the worker pool, the state store and the sink in
order. Decisions live in pure modules (frontier, dedup, schedule, assemble); this only does.

poll_feed(feed):                                            # feed pollers
    skip if disabled (410) or the server asked us to wait
    response = fetch feed with stored validators           # 304: done, nothing parsed
    if body hash == last body hash: done                    # unchanged: nothing parsed
    parsed = parse in a worker process
    items = frontier.plan_items(entries this feed never produced, or updated ones)
    store.commit_poll(feed state + validators + items)      # one transaction
    dispatcher.add(items' hosts)                            # articles never block a poll

process_item(item):                                         # called by the dispatcher
    canonical URL already written -> entry seen, done
    page = fetch article (robots, SSRF guard, caps) unless fetch_articles is false
        transient failure -> store.reschedule_article (frontier.after_failure decides when)
        permanent failure -> carry on with the feed's own text
    analysis = extract + language + fingerprint in a worker process
    canonical = page's rel=canonical on the same site, else the final URL
    under the dedup lock:
        prep = store.prepare_article (reserve the location, dedup candidates)
        verdict = exact body hash, else MinHash LSH candidates confirmed by similarity
        near duplicate and mode drop -> entry seen, done
        write the record atomically, then store.commit_article (record, entry, frontier)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urldefrag

from ingestor.analyze.fingerprint import scheme_id
from ingestor.analyze.jobs import ArticleJob, analyze_article, parse_feed_job
from ingestor.analyze.pool import WorkerPool
from ingestor.config import Config, FeedConfig, RequestOptions
from ingestor.core import frontier, schedule
from ingestor.core.analysis import ArticleAnalysis
from ingestor.core.assemble import build_record
from ingestor.core.dedup import (
    NOT_DUPLICATE,
    DuplicateVerdict,
    changed_substantially,
    judge_duplicate,
    new_entries,
    updated_entries,
)
from ingestor.core.entry import FeedMeta, ParsedFeed
from ingestor.core.frontier import FrontierItem, NewItem
from ingestor.core.metrics import Metrics
from ingestor.core.state import ArticleCommit, CommitItem, FeedState, HostWait, PollCommit
from ingestor.core.urls import TrackingParams, canonicalize_url, host_key, record_id, same_site
from ingestor.errors import (
    FetchError,
    GoneError,
    HostBackoffError,
    IngestorError,
    ParseError,
    RateLimitedError,
    SinkError,
    WorkerError,
)
from ingestor.http.fetcher import Fetcher, FetchResult
from ingestor.pipeline.dispatcher import ArticleDispatcher
from ingestor.sink.files import OutputSink
from ingestor.store.protocol import StateStore

log = logging.getLogger(__name__)


class Article(enum.Enum):
    """What became of one frontier item."""

    WRITTEN = "written"
    WRITTEN_DUPLICATE = "written_duplicate"  # written, marked as a near/exact duplicate
    DUPLICATE = "duplicate"  # its URL was written already
    DROPPED = "dropped"  # a near duplicate, dedup.near_duplicates: drop
    SKIPPED = "skipped"  # under min_text_length
    UNCHANGED = "unchanged"  # an update whose body changed too little to re-emit
    RETRY = "retry"  # back in the frontier for later


class PollStatus(enum.Enum):
    OK = "ok"
    NOT_MODIFIED = "not_modified"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    SKIPPED = "skipped"
    DISABLED = "disabled"


@dataclass
class PollOutcome:
    feed_id: str
    status: PollStatus
    new_entries: int = 0
    error: str | None = None
    retry_at: float | None = None  # the server (or its host) asked us to come back then


@dataclass
class PassSummary:
    feeds: int = 0
    total_feeds: int = 0
    polled: int = 0
    not_modified: int = 0
    failed: int = 0
    skipped: int = 0
    queued: int = 0  # new entries put into the frontier
    written: int = 0
    duplicates: int = 0
    retries: int = 0
    fallbacks: int = 0  # records from the feed's text because the page could not be had
    errors: list[str] = field(default_factory=list)
    left: int = 0  # items still in the frontier at the end of a pass
    left_why: list[str] = field(default_factory=list)

    def add(self, outcome: PollOutcome) -> None:
        self.feeds += 1
        if outcome.status in (PollStatus.SKIPPED, PollStatus.DISABLED):
            self.skipped += 1
        else:
            self.polled += 1
        if outcome.status in (PollStatus.NOT_MODIFIED, PollStatus.UNCHANGED):
            self.not_modified += 1
        if outcome.status is PollStatus.FAILED:
            self.failed += 1
            if outcome.error:
                self.errors.append(outcome.error)
        self.queued += outcome.new_entries

    def count(self, result: Article) -> None:
        self.written += result in (Article.WRITTEN, Article.WRITTEN_DUPLICATE)
        self.duplicates += result in (
            Article.WRITTEN_DUPLICATE,
            Article.DUPLICATE,
            Article.DROPPED,
        )
        self.retries += result is Article.RETRY


# run --once polls a feed that answered Retry-After (or whose host is waiting) again after
# the wait, while the wait fits in once_max_wait, at most this often.
_ONCE_FEED_TRIES = 20


def _feed_fingerprint(feed: FeedConfig) -> str:
    return hashlib.sha256(repr(feed).encode()).hexdigest()[:16]


class Pipeline:
    def __init__(
        self,
        config: Config,
        *,
        fetcher: Fetcher,
        pool: WorkerPool,
        store: StateStore,
        sink: OutputSink,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.fetcher = fetcher
        self.pool = pool
        self.store = store
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        self.states: dict[str, FeedState] = {}
        self.feeds: dict[str, FeedConfig] = {f.feed_id: f for f in config.feeds}
        self.tracking = TrackingParams(config.dedup.tracking_params)
        self.scheme = scheme_id(config.dedup.num_perm, config.dedup.threshold)
        self.summary = PassSummary()
        self.progress: Callable[[PassSummary], None] | None = None
        self.dispatcher = ArticleDispatcher(
            store,
            fetcher.limiter,
            self.process_item,
            concurrency=config.pipeline.article_concurrency,
            per_host=config.http.per_host_connections,
            batch=config.pipeline.queue_size,
        )
        self._inflight: dict[str, asyncio.Event] = {}
        self._dedup_lock = asyncio.Lock()
        self._feed_locks: dict[str, asyncio.Lock] = {}
        self.metrics.gauges["articles_in_flight"] = lambda: float(self.dispatcher.in_flight)
        self.metrics.gauges["frontier_hosts_waiting"] = lambda: float(
            self.dispatcher.hosts_waiting(time.time())
        )
        self.metrics.collectors.append(self._collect_frontier)

    # --- lifecycle ---

    async def start(self) -> None:
        self.states = await self.store.load_feeds()
        await self.dispatcher.start()

    async def stop(self, grace: float = 0.0) -> None:
        """In-flight articles get `grace` seconds; what is cut short stays queued."""
        await self.dispatcher.stop(grace)

    def set_feeds(self, feeds: Iterable[FeedConfig]) -> None:
        self.feeds = {f.feed_id: f for f in feeds}

    def state_of(self, feed: FeedConfig) -> FeedState:
        return self.states.get(feed.feed_id) or FeedState(feed_id=feed.feed_id)

    async def _collect_frontier(self) -> None:
        summary = await self.store.frontier_summary(time.time())
        oldest = summary.oldest_enqueued_at
        self.metrics.gauges["frontier_size"] = lambda: float(summary.size)
        self.metrics.gauges["frontier_oldest_age_seconds"] = lambda: (
            max(time.time() - oldest, 0.0) if oldest is not None else 0.0
        )

    # --- one pass (run --once, demo) ---

    async def run_once(
        self,
        feeds: Iterable[FeedConfig],
        progress: Callable[[PassSummary], None] | None = None,
    ) -> PassSummary:
        """Poll every enabled feed now, then work the frontier until nothing is due within
        pipeline.once_max_wait; what waits longer stays queued for the next run."""
        summary = self.summary = PassSummary()
        self.progress = progress
        feeds = [f for f in feeds if f.enabled]
        summary.total_feeds = len(feeds)
        semaphore = asyncio.Semaphore(self.config.pipeline.max_concurrent_feeds)

        max_wait = self.config.pipeline.once_max_wait

        async def one(feed: FeedConfig) -> PollOutcome:
            # A feed (or its host) that asked for a short pause is polled again after it.
            for attempt in range(_ONCE_FEED_TRIES):
                async with semaphore:
                    outcome = await self.poll_feed(feed, force=True, after_wait=attempt > 0)
                retry_at = outcome.retry_at
                if retry_at is None or retry_at > time.time() + max_wait:
                    break
                await asyncio.sleep(max(retry_at - time.time(), 0.0) + 0.05)
            return outcome

        for finished in asyncio.as_completed([one(f) for f in feeds]):
            summary.add(await finished)
            self._report()
        await self.dispatcher.wait_settled(self.config.pipeline.once_max_wait)
        now = time.time()
        left = await self.store.frontier_summary(now)
        summary.left = left.size
        summary.left_why = frontier.describe_waiting(
            [(r.key, r.queued, r.ready_at, r.last_error) for r in left.hosts], now
        )
        self.progress = None
        return summary

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.summary)

    # --- polling a feed ---

    async def poll_feed(
        self, feed: FeedConfig, force: bool = False, after_wait: bool = False
    ) -> PollOutcome:
        """Poll one feed. `force`: whatever its interval (run --once), still honouring
        what the server asked for and the error backoff; `after_wait`: the poll follows a
        wait the server asked for in this same pass, so the error backoff is not applied."""
        lock = self._feed_locks.setdefault(feed.feed_id, asyncio.Lock())
        if lock.locked():
            return PollOutcome(feed.feed_id, PollStatus.SKIPPED)
        async with lock:
            try:
                return await self._poll_feed(feed, force, after_wait)
            finally:
                self._feed_locks.pop(feed.feed_id, None)

    async def _poll_feed(self, feed: FeedConfig, force: bool, after_wait: bool) -> PollOutcome:
        state = self.state_of(feed)
        now = time.time()
        fingerprint = _feed_fingerprint(feed)
        if state.disabled_reason:
            if state.disabled_config == fingerprint:
                return PollOutcome(feed.feed_id, PollStatus.DISABLED, error=state.disabled_reason)
            log.info(
                "feed %s: configuration changed, re-enabling (was: %s)",
                feed.url,
                state.disabled_reason,
            )
            state = replace(state, disabled_reason=None, disabled_config=None, error_count=0)
        waiting = schedule.blocked_until(state, now, after_wait) if force else 0.0
        if waiting > now:
            # Only a server's Retry-After invites a poll right after it; a Cache-Control
            # lifetime or the error backoff mean "not in this pass".
            retry_at = waiting if waiting <= state.not_before else None
            return PollOutcome(feed.feed_id, PollStatus.SKIPPED, retry_at=retry_at)
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
        state = self._note_redirect(feed, state, response)
        state = replace(state, last_fetch_at=now, fresh_until=now + (response.max_age or 0.0))
        if response.not_modified:
            self.metrics.inc("feeds_not_modified")
            return await self._feed_succeeded(
                feed, state, PollOutcome(feed.feed_id, PollStatus.NOT_MODIFIED)
            )
        body_hash = hashlib.sha256(response.body).hexdigest()
        state = replace(state, etag=response.etag, last_modified=response.last_modified)
        if body_hash == state.body_hash:
            self.metrics.inc("feeds_unchanged")
            return await self._feed_succeeded(
                feed, state, PollOutcome(feed.feed_id, PollStatus.UNCHANGED)
            )
        started = time.perf_counter()
        try:
            parsed, parse_seconds = await self.pool.run(
                parse_feed_job,
                response.body,
                response.final_url,
                response.headers.get("content-type", response.content_type),
            )
            self.metrics.observe("parse", parse_seconds)
        except (ParseError, WorkerError) as exc:
            return await self._feed_failed(feed, state, exc)
        finally:
            self.metrics.observe("parse_roundtrip", time.perf_counter() - started)
        if parsed.warning:
            log.info("feed %s: %s", feed.url, parsed.warning)
        state = _with_meta(state, parsed.meta)
        items = await self._new_items(feed, state, parsed, now)
        times = [
            e.timestamp()
            for e in (x.published or x.updated for x in parsed.entries)
            if e is not None and e.timestamp() <= now + 86400
        ]
        state = replace(
            state,
            body_hash=body_hash,
            recent_entry_times=schedule.merge_entry_times(state.recent_entry_times, times),
            items=state.items + sum(not i.is_update for i in items),
        )
        outcome = PollOutcome(feed.feed_id, PollStatus.OK, new_entries=len(items))
        return await self._feed_succeeded(feed, state, outcome, items)

    async def _new_items(
        self, feed: FeedConfig, state: FeedState, parsed: ParsedFeed, now: float
    ) -> list[NewItem]:
        keys = [e.key for e in parsed.entries]
        known = await self.store.entry_updated_times(feed.feed_id, keys)
        fresh = new_entries(parsed.entries, set(keys) - set(known))
        changed = updated_entries(parsed.entries, known) if self.config.dedup.updates else []
        return frontier.plan_items(
            feed.feed_id,
            [(e, False) for e in fresh] + [(e, True) for e in changed],
            fetch_articles=feed.fetch_articles,
            feed_title=state.title,
            feed_language=state.language,
            tracking=self.tracking,
            now=now,
        )

    def _note_redirect(
        self, feed: FeedConfig, state: FeedState, response: FetchResult
    ) -> FeedState:
        if response.permanent_url and response.permanent_url != state.url:
            log.warning(
                "feed %s: moved permanently to %s; polling the new URL from now on "
                "(the configured URL stays the feed's identity)",
                feed.url,
                response.permanent_url,
            )
            return replace(state, effective_url=response.permanent_url)
        return state

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

    async def _feed_succeeded(
        self,
        feed: FeedConfig,
        state: FeedState,
        outcome: PollOutcome,
        items: Sequence[NewItem] = (),
    ) -> PollOutcome:
        now = time.time()
        state = replace(state, error_count=0, last_error=None, last_success_at=now)
        state = replace(
            state, next_due=schedule.next_due(feed, state, self.config.schedule, now, self.rng)
        )
        await self._commit_poll(state, items)
        return outcome

    async def _feed_failed(
        self, feed: FeedConfig, state: FeedState, exc: IngestorError
    ) -> PollOutcome:
        now = time.time()
        kind = getattr(exc, "kind", type(exc).__name__)
        self.metrics.inc("feed_errors", kind)
        message = str(exc)
        state = replace(
            state,
            error_count=state.error_count + 1,
            last_error=message,
            last_error_at=now,
            last_fetch_at=now,
        )
        if isinstance(exc, GoneError):
            state = replace(
                state,
                disabled_reason=f"410 Gone at {exc.url}; disabled until the "
                "feed's configuration changes",
                disabled_config=_feed_fingerprint(feed),
            )
            log.error("feed %s: %s", feed.url, state.disabled_reason)
        else:
            # The error's own text names the URL it failed on; the log line names the feed.
            reason = getattr(exc, "reason", message)
            where = getattr(exc, "url", feed.url)
            detail = reason if where == feed.url else f"{where}: {reason}"
            log.warning("feed %s: %s (failure %d in a row)", feed.url, detail, state.error_count)
        host_wait = None
        if isinstance(exc, RateLimitedError | HostBackoffError):
            state = replace(state, not_before=exc.not_before)
            if isinstance(exc, RateLimitedError):
                host_wait = HostWait(host_key(exc.url), exc.not_before, exc.reason)
        state = replace(
            state,
            next_due=schedule.next_due(
                feed, state, self.config.schedule, now, self.rng, failed=True
            ),
        )
        await self._commit_poll(state, host_wait=host_wait)
        return PollOutcome(
            feed.feed_id,
            PollStatus.FAILED,
            error=f"{feed.url}: {message}" if not message.startswith(feed.url) else message,
            retry_at=getattr(exc, "not_before", None),
        )

    # --- articles ---

    def _feed_config(self, feed_id: str) -> FeedConfig:
        # A feed removed from the configuration still has its queued entries finished:
        # they were found while it was configured, and nothing found is dropped silently.
        return self.feeds.get(feed_id) or FeedConfig(url=feed_id)

    async def process_item(self, item: FrontierItem) -> float | None:
        """Finish one frontier item; returns when it is due again if it went back."""
        feed = self._feed_config(item.feed_id)
        try:
            result, due_again = await self._process(feed, item)
        except SinkError as exc:
            # Our own disk, not the site: retry without counting an attempt.
            self.metrics.inc("article_errors", "sink")
            due_again = time.time() + frontier.SINK_PAUSE
            self.dispatcher.pause(due_again)
            log.error(
                "%s; the article stays queued and is retried in %.0fs", exc, frontier.SINK_PAUSE
            )
            await self.store.reschedule_article(item.item_id, due_again, item.attempts, str(exc))
            result = Article.RETRY
        self.summary.count(result)
        self._report()
        return due_again

    async def _process(self, feed: FeedConfig, item: FrontierItem) -> tuple[Article, float | None]:
        if item.known_record is not None and not item.is_update:
            self.metrics.inc("duplicates", "url")
            await self._finish(item, seen=item.known_record)
            return Article.DUPLICATE, None
        async with self._claim(item.canonical_url) as first:
            if not first and not item.is_update:
                known = await self.store.record_by_canonical(item.canonical_url)
                if known is not None and known.done:
                    self.metrics.inc("duplicates", "url")
                    await self._finish(item, seen=known.record_id)
                    return Article.DUPLICATE, None
            page: FetchResult | None = None
            failure: str | None = None
            entry = item.entry
            if entry.link and feed.fetch_articles and item.host != frontier.NO_FETCH_HOST:
                try:
                    page = await self._fetch_page(feed, entry.link)
                except FetchError as exc:
                    decision = await self._after_fetch_failure(feed, item, exc)
                    if isinstance(decision, frontier.Retry):
                        return Article.RETRY, decision.not_before
                    failure = decision.reason
            analysis = await self._analyze(feed, item, page)
            canonical = item.canonical_url
            url, _fragment = urldefrag(page.final_url if page else (entry.link or feed.url))
            if page is not None:
                canonical = self._page_canonical(page.final_url, analysis.meta.canonical_url)
            minimum = (
                feed.min_text_length
                if feed.min_text_length is not None
                else self.config.extraction.min_text_length
            )
            if minimum and len(analysis.body.text) < minimum:
                log.debug(
                    "feed %s: %s has %d characters of text, under the minimum %d; skipped",
                    feed.url,
                    url,
                    len(analysis.body.text),
                    minimum,
                )
                await self._finish(item, failure=failure)
                return Article.SKIPPED, None
            written = await self._dedup_and_write(feed, item, url, canonical, analysis, failure)
            return written, None

    async def _after_fetch_failure(
        self, feed: FeedConfig, item: FrontierItem, exc: FetchError
    ) -> frontier.ArticleFailureDecision:
        """Put the item back for later, or go on without the page (Fallback)."""
        self.metrics.inc("article_errors", exc.kind)
        pipeline = self.config.pipeline
        decision = frontier.after_failure(
            exc,
            item.attempts,
            max_attempts=pipeline.max_article_attempts,
            base_delay=pipeline.article_retry_delay,
            now=time.time(),
            rng=self.rng,
        )
        if isinstance(decision, frontier.Fallback):
            self.summary.fallbacks += 1
            log.warning(
                "feed %s: article %s not fetched (%s); using the feed's own text",
                feed.url,
                exc.url,
                decision.reason,
            )
            return decision
        host_wait = None
        if decision.host_not_before is not None:
            host_wait = HostWait(item.host, decision.host_not_before, decision.error)
            self.fetcher.limiter.defer_host(item.host, decision.host_not_before)
        await self.store.reschedule_article(
            item.item_id, decision.not_before, decision.attempts, decision.error, host_wait
        )
        if decision.attempts > item.attempts:
            self.metrics.inc("article_retries")
            log.info(
                "feed %s: article %s: %s; try %d of %d in %.0fs",
                feed.url,
                exc.url,
                decision.error,
                decision.attempts + 1,
                pipeline.max_article_attempts,
                max(decision.not_before - time.time(), 0.0),
            )
        return decision

    async def _analyze(
        self, feed: FeedConfig, item: FrontierItem, page: FetchResult | None
    ) -> ArticleAnalysis:
        entry = item.entry
        url, _fragment = urldefrag(page.final_url if page else (entry.link or feed.url))
        extraction = self.config.extraction
        job = ArticleJob(
            url=url,
            page=page.body if page else None,
            charset=page.charset if page else None,
            title=entry.title,
            feed_content=entry.content,
            feed_summary=entry.summary,
            language_hints=(item.feed_language,),
            use_json_ld=extraction.use_json_ld,
            fast=extraction.fast,
            extensive_date_search=extraction.extensive_date_search,
            detector=self.config.language.detector,
            max_language_chars=self.config.language.max_chars,
            num_perm=self.config.dedup.num_perm,
            threshold=self.config.dedup.threshold,
        )
        started = time.perf_counter()
        try:
            analysis = await self.pool.run(analyze_article, job)
        except WorkerError as exc:
            log.warning(
                "feed %s: extraction of %s failed: %s; using the feed's text", feed.url, url, exc
            )
            self.metrics.inc("article_errors", "extraction")
            analysis = await self.pool.run(analyze_article, replace(job, page=None))
        self.metrics.observe("analyze_roundtrip", time.perf_counter() - started)
        for stage, seconds in analysis.timings.items():
            self.metrics.observe(stage, seconds)
        return analysis

    async def _finish(
        self,
        item: FrontierItem,
        *,
        seen: str | None = None,
        record: CommitItem | None = None,
        release: str | None = None,
        failure: str | None = None,
    ) -> None:
        entry = item.entry
        await self.store.commit_article(
            ArticleCommit(
                item_id=item.item_id,
                feed_id=item.feed_id,
                entry_key=entry.key,
                committed_at=time.time(),
                record=record,
                seen_record_id=seen,
                entry_updated=entry.updated.timestamp() if entry.updated else None,
                release_record=release,
                failure=failure,
                failed_url=entry.link if failure else None,
            )
        )

    @contextlib.asynccontextmanager
    async def _claim(self, canonical: str) -> AsyncIterator[bool]:
        """One task per canonical URL at a time; a second one waits, then re-checks."""
        claimed = True
        while (event := self._inflight.get(canonical)) is not None:
            claimed = False
            await event.wait()
        event = self._inflight[canonical] = asyncio.Event()
        try:
            yield claimed
        finally:
            del self._inflight[canonical]
            event.set()

    def _page_canonical(self, final_url: str, rel_canonical: str | None) -> str:
        if (
            rel_canonical
            and rel_canonical.startswith(("http://", "https://"))
            and same_site(rel_canonical, final_url)
        ):
            return canonicalize_url(rel_canonical, self.tracking)
        return canonicalize_url(final_url, self.tracking)

    async def _fetch_page(self, feed: FeedConfig, link: str) -> FetchResult:
        robots = (
            feed.respect_robots_txt
            if feed.respect_robots_txt is not None
            else self.config.http.respect_robots_txt
        )
        started = time.perf_counter()
        try:
            return await self.fetcher.fetch_article(
                link, respect_robots=robots, options=_article_request(feed, link)
            )
        finally:
            self.metrics.observe("fetch_article", time.perf_counter() - started)

    async def _dedup_and_write(
        self,
        feed: FeedConfig,
        item: FrontierItem,
        url: str,
        canonical: str,
        analysis: ArticleAnalysis,
        failure: str | None = None,
    ) -> Article:
        rid = record_id(canonical)
        prints = analysis.fingerprint
        dedup = self.config.dedup
        async with self._dedup_lock:
            now = datetime.now(UTC)
            started = time.perf_counter()
            bands = prints.band_keys if prints.signature is not None else ()
            prep = await self.store.prepare_article(
                rid,
                canonical,
                self.sink.location_for(rid, now),
                now.timestamp(),
                (prints.content_hash, self.scheme, bands, now.timestamp() - dedup.window)
                if analysis.body.text
                else None,
                want_signature=item.is_update,
            )
            existing = prep.existing
            updated_at: datetime | None = None
            if existing is not None and existing.done:
                if not item.is_update:
                    # The page's rel=canonical named an article written already.
                    self.metrics.inc("duplicates", "url")
                    await self._finish(item, seen=rid)
                    return Article.DUPLICATE
                if existing.content_hash == prints.content_hash or not changed_substantially(
                    prep.old_signature, prints.signature, dedup.update_threshold
                ):
                    await self._finish(item, seen=rid)
                    return Article.UNCHANGED
                updated_at = now
            verdict: DuplicateVerdict = NOT_DUPLICATE
            if analysis.body.text:
                verdict = judge_duplicate(
                    prep.exact, prints.signature, prep.candidates, dedup.threshold
                )
            self.metrics.observe("dedup", time.perf_counter() - started)
            if verdict.is_duplicate:
                self.metrics.inc("duplicates", verdict.kind or "")
                if verdict.kind == "near" and dedup.near_duplicates == "drop":
                    release = rid if existing is None else None
                    await self._finish(
                        item, seen=verdict.duplicate_of, release=release, failure=failure
                    )
                    return Article.DROPPED
            started = time.perf_counter()
            record = build_record(
                record_id=rid,
                url=url,
                canonical_url=canonical,
                feed=feed,
                feed_title=item.feed_title,
                entry=item.entry,
                analysis=analysis,
                verdict=verdict,
                fetched_at=now,
                updated_at=updated_at,
            )
            # The file is safely in place before the state says "done": a crash between the
            # two redoes the item, which rewrites the same file under the same id.
            await self.sink.write(record, prep.location)
            commit = CommitItem(
                record_id=rid,
                canonical_url=canonical,
                content_hash=prints.content_hash,
                feed_id=feed.feed_id,
                entry_key=item.entry.key,
                scheme=self.scheme,
                signature=prints.signature,
                band_keys=prints.band_keys,
                committed_at=now.timestamp(),
                entry_updated=item.entry.updated.timestamp() if item.entry.updated else None,
            )
            await self._finish(item, record=commit, failure=failure)
            self.metrics.observe("write", time.perf_counter() - started)
        self.metrics.inc("articles_updated" if updated_at else "articles_written")
        return Article.WRITTEN_DUPLICATE if verdict.is_duplicate else Article.WRITTEN


def _article_request(feed: FeedConfig, link: str) -> RequestOptions:
    """A feed's request options for one of its article pages: its headers and credentials
    only on the feed's own host, its user agent, proxy and timeout everywhere."""
    options = feed.request
    if host_key(link) == host_key(feed.url):
        return options
    return replace(options, headers=(), auth=None)


def _with_meta(state: FeedState, meta: FeedMeta) -> FeedState:
    return replace(
        state,
        title=meta.title or state.title,
        site_link=meta.link or state.site_link,
        language=meta.language or state.language,
        ttl=meta.ttl,
        skip_hours=tuple(sorted(meta.skip_hours)),
        skip_days=tuple(sorted(meta.skip_days)),
        update_period=meta.update_period,
    )
