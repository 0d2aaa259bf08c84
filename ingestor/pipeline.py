"""The orchestrator: calls the fetcher, the worker pool, the state store and the sink in
order. Decisions live in pure modules (dedup, schedule, assemble); this only does.

poll_feed(feed):
    skip if disabled (410) or the server asked us to wait
    response = fetch feed with stored validators           # 304: done, nothing parsed
    if body hash == last body hash: done                    # unchanged: nothing parsed
    parsed = parse in a worker process
    new = entries whose key this feed never produced
    for each new entry: put an ArticleTask on the bounded queue (backpressure)
    wait for those tasks; only if all finished, store the new validators and body hash,
    so entries cut short by a crash or a full disk are found again next time
    store feed metadata, error count and next due time

process(task):                                             # article consumers
    canonical = canonical URL of the entry link; known and done -> entry seen, stop
    page = fetch article (robots, SSRF guard, caps) unless fetch_articles is false
    analysis = extract + language + fingerprint in a worker process
    canonical = page's rel=canonical on the same site, else the final URL
    under the dedup lock:
        verdict = exact body hash, else MinHash LSH candidates confirmed by similarity
        near duplicate and mode drop -> entry seen, stop
        location = reserve (an earlier reservation wins: redo rewrites the same file)
        write the record atomically, then commit it (record done, fingerprint, entry seen)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urldefrag

from ingestor import schedule
from ingestor.assemble import build_record
from ingestor.config import Config, FeedConfig
from ingestor.dedup import (
    NOT_DUPLICATE,
    DuplicateVerdict,
    changed_substantially,
    judge_duplicate,
    new_entries,
    updated_entries,
)
from ingestor.errors import (
    FetchError,
    GoneError,
    HostBackoffError,
    IngestorError,
    ParseError,
    RateLimitedError,
    SinkError,
)
from ingestor.feeds import FeedEntry, FeedMeta, ParsedFeed
from ingestor.fetcher import Fetcher, FetchResult
from ingestor.fingerprint import scheme_id
from ingestor.metrics import Metrics
from ingestor.sink import OutputSink
from ingestor.state import CommitItem, FeedState, StateStore
from ingestor.urls import TrackingParams, canonicalize_url, host_key, record_id, same_site
from ingestor.workers import (
    ArticleAnalysis,
    ArticleJob,
    WorkerError,
    WorkerPool,
    analyze_article,
    parse_feed_job,
)

log = logging.getLogger(__name__)


class Deferred(IngestorError):
    """An article could not be finished now (host backoff, sink failure): retry later."""


@dataclass
class ArticleTask:
    feed: FeedConfig
    entry: FeedEntry
    feed_title: str | None
    feed_language: str | None
    # "written" | "written_duplicate" (marked) | "duplicate" | "dropped" | "skipped"
    # | "unchanged" (an update that changed too little to re-emit)
    done: asyncio.Future[str]
    is_update: bool = False  # a known entry whose `updated` time moved (dedup.updates)


@dataclass
class PollOutcome:
    feed_id: str
    status: str  # ok | not_modified | unchanged | failed | skipped | disabled
    new_entries: int = 0
    written: int = 0
    duplicates: int = 0
    error: str | None = None


@dataclass
class PassSummary:
    feeds: int = 0
    polled: int = 0
    not_modified: int = 0
    failed: int = 0
    skipped: int = 0
    written: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: PollOutcome) -> None:
        self.feeds += 1
        if outcome.status in ("skipped", "disabled"):
            self.skipped += 1
        else:
            self.polled += 1
        if outcome.status in ("not_modified", "unchanged"):
            self.not_modified += 1
        if outcome.status == "failed":
            self.failed += 1
            if outcome.error:
                self.errors.append(outcome.error)
        self.written += outcome.written
        self.duplicates += outcome.duplicates


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
        self.tracking = TrackingParams(config.dedup.tracking_params)
        self.scheme = scheme_id(config.dedup.num_perm, config.dedup.threshold)
        self.queue: asyncio.Queue[ArticleTask] = asyncio.Queue(config.pipeline.queue_size)
        self._consumers: list[asyncio.Task[None]] = []
        self._inflight: dict[str, asyncio.Event] = {}
        self._dedup_lock = asyncio.Lock()
        self._feed_locks: dict[str, asyncio.Lock] = {}
        self.metrics.gauges["article_queue_depth"] = lambda: float(self.queue.qsize())
        self.metrics.gauges["articles_in_flight"] = lambda: float(len(self._inflight))

    # --- lifecycle ---

    async def start(self) -> None:
        self.states = await self.store.load_feeds()
        for _ in range(self.config.pipeline.article_concurrency):
            self._consumers.append(asyncio.create_task(self._consume()))

    async def stop(self) -> None:
        for task in self._consumers:
            task.cancel()
        for task in self._consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._consumers.clear()
        # Tasks still queued were never started: their feeds keep old validators and
        # find those entries again next time.
        while not self.queue.empty():
            task = self.queue.get_nowait()
            if not task.done.done():
                task.done.set_exception(Deferred("shutting down"))
                task.done.exception()

    def state_of(self, feed: FeedConfig) -> FeedState:
        return self.states.get(feed.feed_id) or FeedState(feed_id=feed.feed_id)

    async def _save(self, state: FeedState) -> None:
        self.states[state.feed_id] = state
        await self.store.save_feed(state)

    # --- one pass (run --once, demo) ---

    async def run_once(
        self,
        feeds: Iterable[FeedConfig],
        progress: Callable[[PassSummary, int], None] | None = None,
    ) -> PassSummary:
        summary = PassSummary()
        feeds = [f for f in feeds if f.enabled]
        semaphore = asyncio.Semaphore(self.config.pipeline.max_concurrent_feeds)

        async def one(feed: FeedConfig) -> PollOutcome:
            async with semaphore:
                return await self.poll_feed(feed, force=True)

        for finished in asyncio.as_completed([one(f) for f in feeds]):
            outcome = await finished
            summary.add(outcome)
            if progress is not None:
                progress(summary, len(feeds))
        return summary

    # --- polling a feed ---

    async def poll_feed(self, feed: FeedConfig, force: bool = False) -> PollOutcome:
        lock = self._feed_locks.setdefault(feed.feed_id, asyncio.Lock())
        if lock.locked():
            return PollOutcome(feed.feed_id, "skipped")
        async with lock:
            try:
                return await self._poll_feed(feed, force)
            finally:
                self._feed_locks.pop(feed.feed_id, None)

    async def _poll_feed(self, feed: FeedConfig, force: bool) -> PollOutcome:
        state = self.state_of(feed)
        now = time.time()
        fingerprint = _feed_fingerprint(feed)
        if state.disabled_reason:
            if state.disabled_config == fingerprint:
                return PollOutcome(feed.feed_id, "disabled", error=state.disabled_reason)
            log.info(
                "feed %s: configuration changed, re-enabling (was: %s)",
                feed.url,
                state.disabled_reason,
            )
            state = replace(state, disabled_reason=None, disabled_config=None, error_count=0)
        waiting = schedule.blocked_until(state, now) if force else 0.0
        host_wait = self.fetcher.limiter.not_before(host_key(state.url))
        if waiting > now or host_wait > now:
            return PollOutcome(feed.feed_id, "skipped")
        self.metrics.inc("feeds_polled")
        started = time.perf_counter()
        try:
            response = await self.fetcher.fetch_feed(state.url, state.etag, state.last_modified)
        except FetchError as exc:
            return await self._feed_failed(feed, state, exc)
        finally:
            self.metrics.observe("fetch_feed", time.perf_counter() - started)
        state = self._note_redirect(feed, state, response)
        state = replace(state, last_fetch_at=now, fresh_until=now + (response.max_age or 0.0))
        if response.not_modified:
            self.metrics.inc("feeds_not_modified")
            return await self._feed_succeeded(
                feed, state, PollOutcome(feed.feed_id, "not_modified")
            )
        body_hash = hashlib.sha256(response.body).hexdigest()
        if body_hash == state.body_hash:
            self.metrics.inc("feeds_unchanged")
            state = replace(state, etag=response.etag, last_modified=response.last_modified)
            return await self._feed_succeeded(feed, state, PollOutcome(feed.feed_id, "unchanged"))
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
        outcome = await self._ingest_entries(feed, state, parsed)
        if outcome.status == "ok":
            state = replace(
                state, etag=response.etag, last_modified=response.last_modified, body_hash=body_hash
            )
        times = [
            e.timestamp()
            for e in (x.published or x.updated for x in parsed.entries)
            if e is not None and e.timestamp() <= now + 86400
        ]
        state = replace(
            state,
            recent_entry_times=schedule.merge_entry_times(state.recent_entry_times, times),
            items=state.items + outcome.written,
        )
        return await self._feed_succeeded(feed, state, outcome)

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

    async def _ingest_entries(
        self, feed: FeedConfig, state: FeedState, parsed: ParsedFeed
    ) -> PollOutcome:
        outcome = PollOutcome(feed.feed_id, "ok")
        keys = [e.key for e in parsed.entries]
        known = await self.store.entry_updated_times(feed.feed_id, keys)
        fresh = new_entries(parsed.entries, set(keys) - set(known))
        changed = updated_entries(parsed.entries, known) if self.config.dedup.updates else []
        outcome.new_entries = len(fresh)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[str]] = []
        for entry, is_update in [(e, False) for e in fresh] + [(e, True) for e in changed]:
            done: asyncio.Future[str] = loop.create_future()
            await self.queue.put(
                ArticleTask(feed, entry, state.title, state.language, done, is_update)
            )
            futures.append(done)
        results = await asyncio.gather(*futures, return_exceptions=True)
        deferred = 0
        for result in results:
            if isinstance(result, BaseException):
                deferred += 1
            else:
                outcome.written += result in ("written", "written_duplicate")
                outcome.duplicates += result in ("written_duplicate", "duplicate", "dropped")
        if deferred:
            first = next(r for r in results if isinstance(r, BaseException))
            log.warning(
                "feed %s: %d new entr%s deferred to the next poll: %s",
                feed.url,
                deferred,
                "y" if deferred == 1 else "ies",
                first,
            )
            outcome.status = "partial"
        return outcome

    async def _feed_succeeded(
        self, feed: FeedConfig, state: FeedState, outcome: PollOutcome
    ) -> PollOutcome:
        now = time.time()
        state = replace(state, error_count=0, last_error=None, last_success_at=now)
        state = replace(
            state, next_due=schedule.next_due(feed, state, self.config.schedule, now, self.rng)
        )
        await self._save(state)
        if outcome.status == "partial":
            outcome.status = "ok"
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
        if isinstance(exc, RateLimitedError | HostBackoffError):
            state = replace(state, not_before=exc.not_before)
        state = replace(
            state,
            next_due=schedule.next_due(
                feed, state, self.config.schedule, now, self.rng, failed=True
            ),
        )
        await self._save(state)
        return PollOutcome(
            feed.feed_id,
            "failed",
            error=f"{feed.url}: {message}" if not message.startswith(feed.url) else message,
        )

    # --- articles ---

    async def _consume(self) -> None:
        while True:
            task = await self.queue.get()
            try:
                result = await self._process(task)
            except asyncio.CancelledError:
                if not task.done.done():
                    task.done.set_exception(Deferred("shutting down"))
                    task.done.exception()
                raise
            except Exception as exc:
                if not isinstance(exc, IngestorError):
                    log.exception(
                        "feed %s: unexpected error on entry %s", task.feed.url, task.entry.link
                    )
                    self.metrics.inc("article_errors", "internal")
                if not task.done.done():
                    task.done.set_exception(exc)
                    task.done.exception()
            else:
                if not task.done.done():
                    task.done.set_result(result)
            finally:
                self.queue.task_done()

    async def _process(self, task: ArticleTask) -> str:
        entry, feed = task.entry, task.feed
        link = entry.link
        canonical = (
            canonicalize_url(link, self.tracking)
            if link
            else f"{feed.url}#entry-{hashlib.sha256(entry.key.encode()).hexdigest()}"
        )
        # An update re-processes a known article on purpose: the URL-level check is skipped.
        check_known = not task.is_update
        if check_known and await self._already_done(feed, entry, canonical):
            return "duplicate"
        async with self._claim(canonical) as claimed:
            if check_known and not claimed and await self._already_done(feed, entry, canonical):
                return "duplicate"
            page = await self._fetch_page(feed, entry) if link and feed.fetch_articles else None
            url, _fragment = urldefrag(page.final_url if page else (link or feed.url))
            job = ArticleJob(
                url=url,
                page=page.body if page else None,
                charset=page.charset if page else None,
                title=entry.title,
                feed_content=entry.content,
                language_hints=(task.feed_language,),
                use_json_ld=self.config.extraction.use_json_ld,
                fast=self.config.extraction.fast,
                extensive_date_search=self.config.extraction.extensive_date_search,
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
                    "feed %s: extraction of %s failed: %s; using the feed's text",
                    feed.url,
                    url,
                    exc,
                )
                self.metrics.inc("article_errors", "extraction")
                job = replace(job, page=None)
                analysis = await self.pool.run(analyze_article, job)
            self.metrics.observe("analyze_roundtrip", time.perf_counter() - started)
            for stage, seconds in analysis.timings.items():
                self.metrics.observe(stage, seconds)
            if page is not None:
                better = self._page_canonical(page.final_url, analysis.meta.canonical_url)
                if better != canonical:
                    canonical = better
                    if check_known and await self._already_done(feed, entry, canonical):
                        return "duplicate"
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
                await self.store.mark_entries_seen(feed.feed_id, [entry.key], time.time())
                return "skipped"
            return await self._dedup_and_write(task, url, canonical, analysis)

    async def _already_done(self, feed: FeedConfig, entry: FeedEntry, canonical: str) -> bool:
        known = await self.store.record_by_canonical(canonical)
        if known is not None and known.done:
            await self.store.mark_entries_seen(
                feed.feed_id, [entry.key], time.time(), known.record_id
            )
            self.metrics.inc("duplicates", "url")
            return True
        return False

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

    async def _fetch_page(self, feed: FeedConfig, entry: FeedEntry) -> FetchResult | None:
        assert entry.link is not None
        robots = (
            feed.respect_robots_txt
            if feed.respect_robots_txt is not None
            else self.config.http.respect_robots_txt
        )
        started = time.perf_counter()
        try:
            return await self.fetcher.fetch_article(entry.link, respect_robots=robots)
        except (HostBackoffError, RateLimitedError) as exc:
            self.metrics.inc("article_errors", exc.kind)
            raise Deferred(str(exc)) from None
        except FetchError as exc:
            self.metrics.inc("article_errors", exc.kind)
            log.info(
                "feed %s: article %s not fetched (%s); using the feed's own text",
                feed.url,
                entry.link,
                exc.reason,
            )
            return None
        finally:
            self.metrics.observe("fetch_article", time.perf_counter() - started)

    async def _dedup_and_write(
        self, task: ArticleTask, url: str, canonical: str, analysis: ArticleAnalysis
    ) -> str:
        feed, entry = task.feed, task.entry
        rid = record_id(canonical)
        prints = analysis.fingerprint
        dedup = self.config.dedup
        async with self._dedup_lock:
            updated_at: datetime | None = None
            if task.is_update:
                if not await self._changed_enough(task, canonical, analysis):
                    return "unchanged"
                updated_at = datetime.now(UTC)
            started = time.perf_counter()
            verdict: DuplicateVerdict = NOT_DUPLICATE
            if analysis.body.text:
                exact, candidates = await self.store.duplicate_candidates(
                    prints.content_hash,
                    self.scheme,
                    prints.band_keys if prints.signature is not None else (),
                    time.time() - dedup.window,
                    rid,
                )
                verdict = judge_duplicate(exact, prints.signature, candidates, dedup.threshold)
            self.metrics.observe("dedup", time.perf_counter() - started)
            if verdict.is_duplicate:
                self.metrics.inc("duplicates", verdict.kind or "")
                if verdict.kind == "near" and dedup.near_duplicates == "drop":
                    await self.store.mark_entries_seen(
                        feed.feed_id, [entry.key], time.time(), verdict.duplicate_of
                    )
                    return "dropped"
            now = datetime.now(UTC)
            started = time.perf_counter()
            try:
                location = await self.store.reserve_record(
                    rid, canonical, self.sink.location_for(rid, now), now.timestamp()
                )
                record = build_record(
                    record_id=rid,
                    url=url,
                    canonical_url=canonical,
                    feed=feed,
                    feed_title=task.feed_title,
                    entry=entry,
                    analysis=analysis,
                    verdict=verdict,
                    fetched_at=now,
                    updated_at=updated_at,
                )
                await self.sink.write(record, location)
            except SinkError as exc:
                self.metrics.inc("article_errors", "sink")
                log.error("%s; the item will be retried on the next poll", exc)
                raise Deferred(str(exc)) from None
            # The file is safely in place before the state says "done": a crash between the
            # two redoes the item, which rewrites the same file under the same id.
            await self.store.commit_record(
                CommitItem(
                    record_id=rid,
                    canonical_url=canonical,
                    content_hash=prints.content_hash,
                    feed_id=feed.feed_id,
                    entry_key=entry.key,
                    scheme=self.scheme,
                    signature=prints.signature,
                    band_keys=prints.band_keys,
                    committed_at=now.timestamp(),
                    entry_updated=entry.updated.timestamp() if entry.updated else None,
                )
            )
            self.metrics.observe("write", time.perf_counter() - started)
        self.metrics.inc("articles_updated" if updated_at else "articles_written")
        return "written_duplicate" if verdict.is_duplicate else "written"

    async def _changed_enough(
        self, task: ArticleTask, canonical: str, analysis: ArticleAnalysis
    ) -> bool:
        """An update is re-emitted only when the body changed substantially; otherwise the
        entry's new `updated` time is remembered so it is not fetched again."""
        known = await self.store.record_by_canonical(canonical)
        if known is None or not known.done:
            return True
        prints = analysis.fingerprint
        old_signature = await self.store.signature_of(known.record_id)
        if known.content_hash != prints.content_hash and changed_substantially(
            old_signature, prints.signature, self.config.dedup.update_threshold
        ):
            return True
        entry = task.entry
        await self.store.mark_entries_seen(
            task.feed.feed_id,
            [entry.key],
            time.time(),
            known.record_id,
            entry.updated.timestamp() if entry.updated else None,
        )
        return False


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
