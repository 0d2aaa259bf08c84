"""Finishing one frontier item: fetch its page when its host allows, analyze it in a
worker, decide duplicates, write the record and commit it; or put it back for later.

process_item(item):                                         # called by the dispatcher
    canonical URL already written (found by the claim, or by the task that had the URL
        just before) -> entry seen, done
    page = fetch article (robots, SSRF guard, caps) unless fetch_articles is false
        transient failure -> store.reschedule_article (frontier.after_failure decides when)
        permanent failure -> carry on with the feed's own text
    analysis = extract + language + fingerprint in a worker process
    canonical = page's rel=canonical on the same site, else the final URL
    store.settle_article, one transaction (SQLite: shared by the articles that finish
    together):
        prep = reserve the location, dedup candidates
        decide: verdict = exact body hash, else MinHash LSH candidates confirmed by
            similarity; near duplicate and mode drop -> entry seen, done
        stage the record file (durable), then commit (record, entry, frontier, journal
        row); after the commit, the file takes its name and its journal line
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from urllib.parse import urldefrag

from ingestor.analyze.fingerprint import legacy_scheme_id, scheme_id
from ingestor.analyze.jobs import ArticleJob, analyze_article
from ingestor.config.model import FeedConfig
from ingestor.core import frontier, settle
from ingestor.core.analysis import ArticleAnalysis
from ingestor.core.frontier import FrontierItem
from ingestor.core.payload import feed_from_settings
from ingestor.core.polling import article_request
from ingestor.core.settle import ArticleFacts
from ingestor.core.settle_steps import settle_steps
from ingestor.core.state import (
    ArticleLookup,
    DedupQuery,
    HostWait,
    ItemRetry,
    SettleOutcome,
)
from ingestor.core.urls import page_canonical, record_id
from ingestor.errors import FetchError, SinkError, WorkerError
from ingestor.http.fetcher import FetchResult
from ingestor.pipeline.outcomes import Article
from ingestor.pipeline.parts import Parts, UsesParts
from ingestor.pipeline.signals import WorkSignals
from ingestor.pipeline.url_claims import UrlClaims

log = logging.getLogger(__name__)

# What a settlement means for the pass's counts.
_ARTICLE_OF = {
    SettleOutcome.WRITTEN: Article.WRITTEN,
    SettleOutcome.WRITTEN_DUPLICATE: Article.WRITTEN_DUPLICATE,
    SettleOutcome.URL_DUPLICATE: Article.DUPLICATE,
    SettleOutcome.UNCHANGED: Article.UNCHANGED,
    SettleOutcome.DROPPED: Article.DROPPED,
}


class ArticleWorker(UsesParts):
    def __init__(
        self,
        parts: Parts,
        signals: WorkSignals,
        on_result: Callable[[Article | None], None],
    ) -> None:
        super().__init__(parts)
        self.signals = signals
        # Each finished item, or None for a page given up on (the record has feed text).
        self.on_result = on_result
        config = parts.config
        self.feeds: dict[str, FeedConfig] = {f.feed_id: f for f in config.feeds}
        self.scheme = scheme_id(config.dedup.num_perm, config.dedup.threshold)
        self.legacy_scheme = legacy_scheme_id(config.dedup.num_perm, config.dedup.threshold)
        self._legacy_checked_at = -math.inf
        self._compare_legacy = False
        self._claims = UrlClaims()

    def _feed_config(self, item: FrontierItem) -> FeedConfig:
        # A feed removed from the configuration still has its queued entries finished, as
        # it asked when they were queued: nothing found is dropped silently.
        configured = self.feeds.get(item.feed_id)
        if configured is not None:
            return configured
        feed = feed_from_settings(item.feed_id, item.queued_with)
        # Queued before the settings travelled with items: the global settings.
        if feed.respect_robots_txt is None:
            feed = replace(feed, respect_robots_txt=self.config.http.respect_robots_txt)
        if feed.min_text_length is None:
            feed = replace(feed, min_text_length=self.config.extraction.min_text_length)
        return feed

    async def process_item(self, item: FrontierItem) -> float | None:
        """Finish one frontier item; returns when it is due again if it went back."""
        feed = self._feed_config(item)
        try:
            if self.signals.failing_since is not None:
                # The output failed lately: no page is fetched for a record that cannot
                # be written (the probe raises SinkError while it still fails).
                await asyncio.to_thread(self.sink.check_writable, b"a record's worth\n" * 64)
            result, due_again = await self._process(feed, item)
        except SinkError as exc:
            # Our own disk, not the site: retry without counting an attempt.
            self.metrics.inc("article_errors", "sink")
            due_again = time.time() + frontier.SINK_PAUSE
            self.signals.pause(due_again, str(exc))
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
        async with self._claims.claim(item.canonical_url) as claim:
            if claim.known is not None and not item.is_update:
                return await self._url_duplicate(item, claim.known), None
            page: FetchResult | None = None
            failure: str | None = None
            host_wait: HostWait | None = None
            entry = item.entry
            if entry.link and feed.fetch_articles and item.host != frontier.NO_FETCH_HOST:
                try:
                    page = await self._fetch_page(feed, entry.link)
                    self.signals.page_fetched(item.host)
                except FetchError as exc:
                    decision = await self._after_fetch_failure(feed, item, exc)
                    if isinstance(decision, frontier.Retry):
                        return Article.RETRY, decision.not_before
                    failure = decision.reason
                    if decision.host_not_before is not None:
                        host_wait = HostWait(item.host, decision.host_not_before, failure)
            url, _fragment = urldefrag(page.final_url if page else (entry.link or feed.url))
            analysis = await self._analyze(feed, item, page, url)
            if page is not None and analysis.page_error:
                self.metrics.inc("article_errors", "soft_404")
                log.warning(
                    "feed %s: article %s: %s; using the feed's own text",
                    feed.url,
                    url,
                    analysis.page_error,
                )
                self.on_result(None)
                page, failure = None, analysis.page_error
                url, _fragment = urldefrag(entry.link or feed.url)
            if failure and self.config.extraction.page_failures == "skip":
                log.info(
                    "feed %s: article %s: no record (extraction.page_failures: skip): %s",
                    feed.url,
                    entry.link or url,
                    failure,
                )
                await self._finish(item, failure=failure, host_wait=host_wait)
                return Article.SKIPPED, None
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
                await self._finish(item, failure=failure, host_wait=host_wait)
                return Article.SKIPPED, None
            written, rid = await self._dedup_and_write(
                feed, item, url, canonical, analysis, failure, host_wait
            )
            if written is not Article.DROPPED:
                # A task waiting for this link needs no page: it is this one's article,
                # whatever URL the page named or redirected to (fetched again, a page
                # that redirects only now and then would be written twice).
                claim.known = rid
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
        pass_wait = self.signals.pass_wait
        if frontier.is_slow_failure(exc):
            self.signals.mark_slow(item.host, f"{link}: {exc.reason}")
            if isinstance(decision, frontier.Retry) and pass_wait is not None:
                decision = frontier.after_the_pass(decision, time.time(), pass_wait)
                self.signals.deferred_past_pass(item.host, decision.not_before)
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

    async def _legacy_in_window(self) -> bool:
        """Whether records fingerprinted in the previous MinHash scheme are still in the
        dedup window (asked hourly): while they are, bodies are fingerprinted in both."""
        now = time.monotonic()
        if now - self._legacy_checked_at >= 3600:
            self._legacy_checked_at = now
            since = time.time() - self.config.dedup.window
            self._compare_legacy = self.legacy_scheme in await self.store.fingerprint_schemes(since)
        return self._compare_legacy

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
            engine=extraction.engine,
            second_opinion=extraction.second_opinion,
            # The feed's date wins over the page's: without one, trafilatura finds it.
            page_metadata=entry.published is None and entry.updated is None,
            detector=self.config.language.detector,
            max_language_chars=self.config.language.max_chars,
            num_perm=self.config.dedup.num_perm,
            threshold=self.config.dedup.threshold,
            legacy_fingerprint=await self._legacy_in_window(),
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
        failure: str | None = None,
        host_wait: HostWait | None = None,
    ) -> None:
        await self.store.commit_article(
            settle.article_commit(item, seen=seen, failure=failure, host_wait=host_wait)
        )

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
        host_wait: HostWait | None = None,
    ) -> tuple[Article, str]:
        """How the article settled, and its record id."""
        rid = record_id(canonical)
        prints = analysis.fingerprint
        dedup = self.config.dedup
        now = datetime.now(UTC)
        bands = prints.band_keys if prints.signature is not None else ()
        since = now.timestamp() - dedup.window
        legacy = None
        if prints.legacy_signature is not None:
            legacy = DedupQuery(
                prints.content_hash,
                self.legacy_scheme,
                prints.legacy_band_keys,
                since,
                prints.legacy_signature,
            )
        query = DedupQuery(prints.content_hash, self.scheme, bands, since, prints.signature, legacy)
        # The day the entry was queued names the directory: an item done again after a
        # crash before its commit lands under the same name.
        queued = datetime.fromtimestamp(item.enqueued_at, UTC)
        lookup = ArticleLookup(
            rid,
            canonical,
            self.sink.location_for(rid, queued),
            now.timestamp(),
            query if analysis.body.text else None,
            want_signature=item.is_update,
        )
        decide = partial(
            settle.decide_article,
            ArticleFacts(feed, item, url, canonical, rid, analysis, failure, now, host_wait),
            self.config.dedup,
            self.scheme,
            self.config.output.pretty,
        )
        started = time.perf_counter()
        settlement = await self.store.settle_article(settle_steps(lookup, decide), self.sink)
        self.metrics.observe("settle", time.perf_counter() - started)
        outcome = settlement.outcome
        if outcome is SettleOutcome.URL_DUPLICATE:
            self.metrics.inc("duplicates", "url")
        elif settlement.duplicate_kind is not None:
            self.metrics.inc("duplicates", settlement.duplicate_kind.value)
        if outcome in (SettleOutcome.WRITTEN, SettleOutcome.WRITTEN_DUPLICATE):
            self.metrics.inc("articles_updated" if settlement.updated else "articles_written")
        return _ARTICLE_OF[outcome], rid
