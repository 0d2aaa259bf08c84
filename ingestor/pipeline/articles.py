"""Finishing one frontier item: fetch its page when its host allows, analyze it in a
worker, decide duplicates, write the record and commit it; or put it back for later.

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
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urldefrag

from ingestor.analyze.fingerprint import scheme_id
from ingestor.analyze.jobs import ArticleJob, analyze_article
from ingestor.config.model import FeedConfig
from ingestor.core import frontier
from ingestor.core.analysis import ArticleAnalysis
from ingestor.core.assemble import build_record
from ingestor.core.dedup import (
    NOT_DUPLICATE,
    DuplicateVerdict,
    changed_substantially,
    judge_duplicate,
)
from ingestor.core.frontier import FrontierItem
from ingestor.core.polling import article_request
from ingestor.core.state import (
    ArticleCommit,
    ArticleLookup,
    CommitItem,
    DedupQuery,
    HostWait,
    ItemRetry,
)
from ingestor.core.urls import page_canonical, record_id
from ingestor.errors import FetchError, SinkError, WorkerError
from ingestor.http.fetcher import FetchResult
from ingestor.pipeline.dispatcher import ArticleDispatcher
from ingestor.pipeline.outcomes import Article
from ingestor.pipeline.parts import Parts, UsesParts

log = logging.getLogger(__name__)


class ArticleWorker(UsesParts):
    def __init__(
        self,
        parts: Parts,
        dispatcher: Callable[[], ArticleDispatcher],
        on_result: Callable[[Article | None], None],
    ) -> None:
        super().__init__(parts)
        self._dispatcher = dispatcher
        # Each finished item, or None for a page given up on (the record has feed text).
        self.on_result = on_result
        config = parts.config
        self.feeds: dict[str, FeedConfig] = {f.feed_id: f for f in config.feeds}
        self.scheme = scheme_id(config.dedup.num_perm, config.dedup.threshold)
        self._inflight: dict[str, asyncio.Event] = {}
        self._dedup_lock = asyncio.Lock()

    @property
    def dispatcher(self) -> ArticleDispatcher:
        return self._dispatcher()

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
            await self.store.reschedule_article(
                ItemRetry(item.item_id, due_again, item.attempts, str(exc))
            )
            result = Article.RETRY
        self.on_result(result)
        return due_again

    async def _process(self, feed: FeedConfig, item: FrontierItem) -> tuple[Article, float | None]:
        if item.known_record is not None and not item.is_update:
            return await self._url_duplicate(item, item.known_record), None
        async with self._claim(item.canonical_url) as first:
            if not first and not item.is_update:
                known = await self.store.record_by_canonical(item.canonical_url)
                if known is not None and known.done:
                    return await self._url_duplicate(item, known.record_id), None
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
            url, _fragment = urldefrag(page.final_url if page else (entry.link or feed.url))
            analysis = await self._analyze(feed, item, page, url)
            canonical = item.canonical_url
            if page is not None:
                canonical = page_canonical(
                    page.final_url, analysis.meta.canonical_url, self.tracking
                )
            minimum = feed.min_text_length  # resolved by Config against the global one
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
        link = item.entry.link or exc.url
        # The error may come from a redirect target or from the host's robots.txt.
        where = "" if exc.url == link else f" (at {exc.url})"
        if isinstance(decision, frontier.Fallback):
            self.on_result(None)
            log.warning(
                "feed %s: article %s not fetched (%s%s); using the feed's own text",
                feed.url,
                link,
                decision.reason,
                where,
            )
            return decision
        host_wait = None
        if decision.host_not_before is not None:
            host_wait = HostWait(item.host, decision.host_not_before, decision.error)
            self.fetcher.limiter.defer_host(item.host, decision.host_not_before)
        await self.store.reschedule_article(
            ItemRetry(
                item.item_id, decision.not_before, decision.attempts, decision.error, host_wait
            )
        )
        if decision.attempts > item.attempts:
            self.metrics.inc("article_retries")
            log.info(
                "feed %s: article %s: %s%s; try %d of %d in %.0fs",
                feed.url,
                link,
                decision.error,
                where,
                decision.attempts + 1,
                pipeline.max_article_attempts,
                max(decision.not_before - time.time(), 0.0),
            )
        return decision

    async def _analyze(
        self, feed: FeedConfig, item: FrontierItem, page: FetchResult | None, url: str
    ) -> ArticleAnalysis:
        entry = item.entry
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
            # The feed's date wins over the page's: without one, trafilatura finds it.
            page_metadata=entry.published is None and entry.updated is None,
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
            self.metrics.cpu(stage, seconds)
        return analysis

    async def _url_duplicate(self, item: FrontierItem, record_id: str) -> Article:
        """An article already written under this canonical URL: the entry maps to it."""
        self.metrics.inc("duplicates", "url")
        await self._finish(item, seen=record_id)
        return Article.DUPLICATE

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

    async def _fetch_page(self, feed: FeedConfig, link: str) -> FetchResult:
        robots = feed.respect_robots_txt is not False  # resolved by Config
        started = time.perf_counter()
        try:
            return await self.fetcher.fetch_article(
                link, respect_robots=robots, options=article_request(feed, link)
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
            query = DedupQuery(
                prints.content_hash,
                self.scheme,
                bands,
                now.timestamp() - dedup.window,
                prints.signature,
            )
            prep = await self.store.prepare_article(
                ArticleLookup(
                    rid,
                    canonical,
                    self.sink.location_for(rid, now),
                    now.timestamp(),
                    query if analysis.body.text else None,
                    want_signature=item.is_update,
                )
            )
            existing = prep.existing
            updated_at: datetime | None = None
            if existing is not None and existing.done:
                if not item.is_update:
                    # The page's rel=canonical named an article written already.
                    return await self._url_duplicate(item, rid)
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
