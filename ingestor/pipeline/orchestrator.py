"""The orchestrator: a feed poller, an article worker and the dispatcher between them,
over one fetcher, worker pool, state store and sink. It calls them in order and decides
nothing itself: the rules live in core/ (frontier, dedup, schedule, polling, assemble).

    scheduler -> FeedPoller.poll_feed -> store.commit_poll (feed state + frontier items)
    ArticleDispatcher -> claims due items host by host -> ArticleWorker.process_item
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable

from ingestor.analyze.pool import WorkerPool
from ingestor.config.model import Config, FeedConfig
from ingestor.core import frontier, sources
from ingestor.core.metrics import Metrics
from ingestor.core.state import FeedState
from ingestor.http.fetcher import Fetcher
from ingestor.pipeline.articles import ArticleWorker
from ingestor.pipeline.dispatcher import ArticleDispatcher
from ingestor.pipeline.feed_poller import FeedPoller
from ingestor.pipeline.outcomes import (
    Article,
    PassSummary,
    PollOutcome,
    PollStatus,
    final_outcome,
)
from ingestor.pipeline.parts import Parts
from ingestor.pipeline.signals import WorkSignals
from ingestor.sink.files import OutputSink
from ingestor.store.protocol import StateStore

# run --once polls a feed that answered Retry-After (or whose host is waiting) again after
# the wait, while the wait ends within once_max_wait of the pass's start, and at most this
# many times in all: a feed that always answers 429 ends its polls with the wait, not a
# pass that never ends.
_ONCE_FEED_POLLS = 10


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
        self.store = store
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.summary = PassSummary()
        self.progress: Callable[[PassSummary], None] | None = None
        parts = Parts(config, fetcher, pool, store, sink, self.metrics, rng or random.Random())
        # What article work tells the dispatcher: output pauses, slow hosts, a pass's wait.
        self.signals = WorkSignals()
        self.articles = ArticleWorker(parts, self.signals, self._count)
        self.dispatcher = ArticleDispatcher(
            store,
            fetcher.limiter,
            self.articles.process_item,
            concurrency=config.pipeline.article_concurrency,
            per_host=config.http.per_host_connections,
            batch=config.pipeline.queue_size,
            # Shared: a dead instance's items come back after state.lease_ttl (renewed
            # by the store's heartbeat while in flight).
            **({"lease_seconds": config.state.lease_ttl} if store.shared else {}),
            signals=self.signals,
        )
        self.poller = FeedPoller(parts, self.dispatcher)
        # Poll one feed now (the daemon's scheduler, run --once): FeedPoller.poll_feed.
        self.poll_feed = self.poller.poll_feed
        store.watch_hosts(fetcher.limiter.ready_at)
        self.metrics.gauges["articles_in_flight"] = lambda: float(self.dispatcher.in_flight)
        self.metrics.gauges["frontier_hosts_waiting"] = lambda: float(
            self.dispatcher.hosts_waiting(time.time())
        )
        self.metrics.collectors.append(self._collect_frontier)
        # The journal's progress, for a consumer's lag alert (its cursor vs this seq).
        if sink.journal is not None:
            journal = sink.journal
            self.metrics.gauges["journal_last_seq"] = lambda: float(journal.last_seq)
        self.metrics.gauges["record_publish_errors"] = lambda: float(sink.publish_errors)
        self.metrics.labeled_gauges["site_missed_by_feeds"] = ("site", self._missed_by_feeds)
        self.metrics.labeled_gauges["feed_stale_since"] = ("feed", self._stale_feeds)
        self._stale_judged: tuple[float, dict[str, float]] = (0.0, {})

    def _missed_by_feeds(self) -> dict[str, float]:
        now = time.time()
        return {
            feed_id: float(sources.coverage_counts(state.coverage, now)["missed_by_feeds"])
            for feed_id, state in self.states.items()
            if state.discovered_at is not None
        }

    def _stale_feeds(self) -> dict[str, float]:
        """Feeds silent for much longer than their rhythm: the date of their last item.
        Judged at most once a minute: at 100,000 feeds a judgement takes about a second."""
        now = time.time()
        if now - self._stale_judged[0] >= 60.0:
            stale = ((f, sources.stale_since(s, now)) for f, s in self.states.items())
            found = {feed_id: since for feed_id, since in stale if since is not None}
            self._stale_judged = (now, found)
        return self._stale_judged[1]

    @property
    def states(self) -> dict[str, FeedState]:
        return self.poller.states

    def _count(self, result: Article | None) -> None:
        if result is None:
            self.summary.fallbacks += 1
        else:
            self.summary.count(result)
        self._report()

    def health(self) -> tuple[bool, str]:
        """Whether records can be written (and the state committed with them): `/healthz`."""
        since = self.signals.failing_since
        if since is not None:
            return False, (
                f"record writes failing for {max(time.time() - since, 0.0):.0f}s: "
                f"{self.signals.output_error}"
            )
        return True, "ok"

    # --- lifecycle ---

    async def start(self) -> None:
        self.poller.states = await self.store.load_feeds()
        await self.dispatcher.start()

    async def stop(self, grace: float = 0.0) -> None:
        """In-flight articles get `grace` seconds; what is cut short stays queued."""
        await self.dispatcher.stop(grace)

    def set_feeds(self, feeds: Iterable[FeedConfig]) -> None:
        self.articles.feeds = {f.feed_id: f for f in feeds}

    def state_of(self, feed: FeedConfig) -> FeedState:
        return self.poller.state_of(feed)

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
        self.signals.new_pass(self.config.pipeline.once_max_wait)
        feeds = [f for f in feeds if f.enabled]
        summary.total_feeds = len(feeds)
        semaphore = asyncio.Semaphore(self.config.pipeline.max_concurrent_feeds)

        max_wait = self.config.pipeline.once_max_wait

        polls_end = time.time() + max_wait
        # At most a few times max_concurrent_feeds polls exist at once (a waiting one
        # holds no slot of the semaphore): a task per feed for 100,000 feeds at once
        # took about 200 MB (issue 16).
        window = asyncio.Semaphore(self.config.pipeline.max_concurrent_feeds * 4)
        finished: asyncio.Queue[tuple[PollOutcome | None, BaseException | None]]
        finished = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def tracked(feed: FeedConfig) -> None:
            try:
                finished.put_nowait((await self._poll_in_pass(feed, semaphore, polls_end), None))
            except BaseException as exc:  # re-raised by the pass, as the poll's own error
                finished.put_nowait((None, exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
            finally:
                window.release()

        async def launch() -> None:
            for feed in feeds:
                await window.acquire()
                task = asyncio.create_task(tracked(feed))
                running.add(task)
                task.add_done_callback(running.discard)

        launcher = asyncio.create_task(launch())
        try:
            for _ in feeds:
                outcome, error = await finished.get()
                if error is not None:
                    raise error
                assert outcome is not None
                summary.add(outcome)
                self._report()
        finally:
            launcher.cancel()
            for task in list(running):
                task.cancel()
        await self.dispatcher.wait_settled(self.config.pipeline.once_max_wait)
        await self._count_left(summary)
        self.progress = None
        return summary

    async def _poll_in_pass(
        self, feed: FeedConfig, semaphore: asyncio.Semaphore, polls_end: float
    ) -> PollOutcome:
        """One feed's polls in a pass: again after a wait its server (or host) asked for,
        while the wait ends before `polls_end`, at most _ONCE_FEED_POLLS times."""
        answered: PollOutcome | None = None  # the last poll that got an answer
        for attempt in range(_ONCE_FEED_POLLS):
            async with semaphore:
                outcome = await self.poll_feed(feed, force=True, after_wait=attempt > 0)
            if outcome.status is not PollStatus.SKIPPED:
                answered = outcome
            retry_at = outcome.retry_at
            if retry_at is None or retry_at > polls_end:
                break
            await asyncio.sleep(max(retry_at - time.time(), 0.0) + 0.05)
        return final_outcome(feed.url, outcome, answered)

    async def run_once_until(
        self,
        feeds: Iterable[FeedConfig],
        stop: asyncio.Event,
        progress: Callable[[PassSummary], None] | None = None,
    ) -> PassSummary:
        """run_once, ended early when `stop` is set (SIGTERM, SIGINT): no feed is polled
        and no article started after it; articles in flight get pipeline.shutdown_grace
        to finish, the rest stays queued for the next run. The summary says so."""
        work = asyncio.create_task(self.run_once(feeds, progress))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        await self.stop(self.config.pipeline.shutdown_grace)
        summary = self.summary
        await self._count_left(summary)
        self.progress = None
        return summary

    async def _count_left(self, summary: PassSummary) -> None:
        now = time.time()
        left = await self.store.frontier_summary(now)
        summary.left = left.size
        summary.left_why = frontier.describe_waiting(
            [(r.key, r.queued, r.ready_at, r.last_error) for r in left.hosts],
            now,
            self.signals.slow_hosts,
        )

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.summary)
