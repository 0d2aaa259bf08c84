"""The long-running service: one APScheduler tick job dispatches the feeds that are due.

Due times live in state (they survive restarts) and in a heap in memory; the tick pops
what is due, so 10,000 feeds cost one cheap job, not 10,000 interval jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ingestor.config.load import load_config
from ingestor.config.model import Config, FeedConfig, sections
from ingestor.core import schedule
from ingestor.core.journal import upkeep_interval
from ingestor.core.metrics import Metrics
from ingestor.core.state import FeedState
from ingestor.core.urls import host_key
from ingestor.errors import ConfigError, IngestorError, StateError
from ingestor.pipeline.journal_upkeep import apply_retention, take_over_lost_instances
from ingestor.pipeline.orchestrator import Pipeline
from ingestor.pipeline.outcomes import PollOutcome, PollStatus
from ingestor.service.metrics_server import MetricsServer
from ingestor.service.runtime import open_pipeline
from ingestor.service.webhooks import RunningSinks, make_sinks, place_sinks

log = logging.getLogger(__name__)
_PRUNE_EVERY = 3600.0


class DueQueue:
    """Feeds by next due time. Re-scheduling a feed leaves its old heap entry stale; stale
    entries are skipped when they surface (cheaper than removing them)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}

    def set(self, feed_id: str, due: float) -> None:
        self._due[feed_id] = due
        heapq.heappush(self._heap, (due, feed_id))
        if len(self._heap) > 4 * len(self._due) + 64:
            self._heap = [(d, f) for f, d in self._due.items()]
            heapq.heapify(self._heap)

    def discard(self, feed_id: str) -> None:
        self._due.pop(feed_id, None)

    def pop_due(self, now: float, limit: int) -> list[str]:
        ready: list[str] = []
        while self._heap and self._heap[0][0] <= now and len(ready) < limit:
            due, feed_id = heapq.heappop(self._heap)
            if self._due.get(feed_id) == due:
                del self._due[feed_id]
                ready.append(feed_id)
        return ready

    def __len__(self) -> int:
        return len(self._due)


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.feeds: dict[str, FeedConfig] = {f.feed_id: f for f in config.feeds if f.enabled}
        self.due = DueQueue()
        self.metrics = Metrics()
        self.rng = random.Random()
        self.pipeline: Pipeline | None = None
        self._running: dict[str, asyncio.Task[PollOutcome]] = {}
        self._stopping = asyncio.Event()
        self._accepting = True
        self._claiming: asyncio.Task[None] | None = None
        self._registering: asyncio.Task[None] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        server: MetricsServer | None = None
        async with open_pipeline(self.config, self.metrics) as pipeline:
            self.pipeline = pipeline
            now = time.time()
            # New feeds are polled at once: max_concurrent_feeds and the per-host limits
            # keep a start with many feeds polite.
            spread = 0.0
            for feed_id in self.feeds:
                self.due.set(
                    feed_id, schedule.first_due(pipeline.states.get(feed_id), now, spread, self.rng)
                )
            if pipeline.store.shared:
                # The schedule lives in the shared state; each instance claims what is due.
                await self._register(self.feeds.values(), now, spread)
            self.metrics.gauges["feeds_scheduled"] = lambda: float(len(self.feeds))
            self.metrics.gauges["feeds_polling"] = lambda: float(len(self._running))
            if self.config.metrics.enabled:
                server = MetricsServer(
                    self.metrics,
                    self.config.metrics.host,
                    self.config.metrics.port,
                    self._health,
                )
                await server.start()
                log.info("metrics on http://%s:%d/metrics", server.host, server.port)
            scheduler = AsyncIOScheduler(event_loop=loop)
            upkeep = upkeep_interval(
                self.config.output.retention, self.config.output.journal_segment_age
            )
            # Each job at most once at a time; one missed while busy runs once, late.
            for job, seconds in (
                (self._tick, self.config.schedule.tick),
                (self._prune, _PRUNE_EVERY),
                (self._take_over, self.config.state.lease_ttl),
                (self._journal_upkeep, upkeep),
            ):
                scheduler.add_job(
                    job,
                    "interval",
                    seconds=seconds,
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=None,
                )
            scheduler.start()
            log.info(
                "ingestor running: %d feeds, output %s, state %s, instance %s",
                len(self.feeds),
                self.config.output.dir,
                self.config.state.where,
                self.metrics.instance,
            )
            delivering = make_sinks(self.config, pipeline.store, self.metrics)
            await place_sinks(delivering)
            self._log_first_polls(pipeline, now)
            self._dispatch_due()
            sinks = RunningSinks(delivering)
            try:
                await self._stopping.wait()
            finally:
                await sinks.stop()
                scheduler.shutdown(wait=False)
                await self._drain()
                if server is not None:
                    await server.stop()
        log.info("ingestor stopped cleanly")
        return 0

    def _health(self) -> tuple[bool, str]:
        if not self._accepting:
            return False, "stopping"
        if self.pipeline is None:
            return False, "starting"
        return self.pipeline.health()

    def _log_first_polls(self, pipeline: Pipeline, now: float) -> None:
        states = pipeline.states
        new = sum(1 for feed_id in self.feeds if feed_id not in states)
        due = [schedule.first_due(states.get(f), now, 0.0, self.rng) for f in self.feeds]
        due_now = sum(1 for when in due if when <= now)
        later = [when for when in due if when > now]
        line = f"first polls: {due_now} of {len(self.feeds)} feeds due now ({new} new)"
        if later:
            line += (
                f"; the others as their saved schedule says, the next in {min(later) - now:.0f}s"
            )
        log.info(line)

    def request_stop(self, reason: str = "stop") -> None:
        if self._accepting:
            log.info(
                "%s received: finishing in-flight work (grace %.0fs)",
                reason,
                self.config.pipeline.shutdown_grace,
            )
        self._accepting = False
        self._stopping.set()

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.config.pipeline.shutdown_grace
        tasks = list(self._running.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.config.pipeline.shutdown_grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if pending:
                log.info(
                    "abandoned %d feed poll(s) at shutdown; they are redone next start",
                    len(pending),
                )
        if self.pipeline is not None:
            # Articles in flight share what is left of the grace; the rest stay queued.
            await self.pipeline.stop(max(deadline - time.monotonic(), 0.0))

    async def _tick(self) -> None:
        # A coroutine on purpose: APScheduler runs plain functions in a thread pool, but
        # dispatching must happen on the event loop.
        self._dispatch_due()

    def _dispatch_due(self) -> None:
        if not self._accepting or self.pipeline is None:
            return
        room = self.config.pipeline.max_concurrent_feeds - len(self._running)
        if room <= 0:
            return
        if self.pipeline.store.shared:
            if self._claiming is None or self._claiming.done():
                self._claiming = asyncio.create_task(self._claim_due(room))
            return
        for feed_id in self.due.pop_due(time.time(), room):
            feed = self.feeds.get(feed_id)
            if feed is None or feed_id in self._running:
                continue
            task = asyncio.create_task(self._poll(feed))
            self._running[feed_id] = task

    async def _claim_due(self, room: int) -> None:
        """Shared state: claim what is due from the fleet's schedule and poll it here."""
        assert self.pipeline is not None
        store = self.pipeline.store
        try:
            claimed = await store.claim_due_feeds(time.time(), room)
        except StateError as exc:
            log.warning("could not claim due feeds (%s); trying again at the next tick", exc)
            return
        for feed_id, state in claimed.items():
            feed = self.feeds.get(feed_id)
            if feed is None:
                # Not in this instance's configuration (removed, or only another's).
                await store.release_feeds([feed_id], time.time() + self.config.schedule.interval)
                continue
            self._running[feed_id] = asyncio.create_task(self._poll(feed, state))

    async def _register(self, feeds: Iterable[FeedConfig], now: float, spread: float) -> None:
        assert self.pipeline is not None
        rows = [(f.feed_id, host_key(f.url), now + self.rng.uniform(0, spread)) for f in feeds]
        await self.pipeline.store.register_feeds(rows)

    async def _poll(self, feed: FeedConfig, claimed: FeedState | None = None) -> PollOutcome:
        assert self.pipeline is not None
        outcome: PollOutcome | None = None
        try:
            outcome = await self.pipeline.poll_feed(feed, claimed=claimed)
            if outcome.new_entries or outcome.updated_entries:
                log.info("feed %s: %s", feed.url, outcome.describe_entries())
            return outcome
        except Exception:
            log.exception("feed %s: unexpected error while polling", feed.url)
            return PollOutcome(feed.feed_id, PollStatus.FAILED)
        finally:
            self._running.pop(feed.feed_id, None)
            if feed.feed_id in self.feeds and self.feeds[feed.feed_id] is feed:
                state = self.pipeline.state_of(feed)
                due = (
                    state.next_due
                    if state.next_due > time.time()
                    else (
                        time.time()
                        + schedule.error_backoff(
                            1, self.config.schedule.interval, self.config.schedule
                        )
                    )
                )
                skipped = outcome is not None and outcome.status is PollStatus.SKIPPED
                if skipped and outcome is not None and outcome.retry_at is not None:
                    # Skipped because its host asked for a pause: poll it right after.
                    due = min(due, outcome.retry_at + self.rng.uniform(0, 2.0))
                if not state.disabled_reason:
                    self.due.set(feed.feed_id, due)

    async def _prune(self) -> None:
        if self.pipeline is None:
            return
        removed = await self.pipeline.store.prune(
            time.time(), self.config.state.seen_entry_max_age, self.config.dedup.window
        )
        if removed:
            log.info("pruned %d old entry keys and fingerprints", removed)

    async def _take_over(self) -> None:
        """A fleet's dead instances: their committed records published here."""
        if self.pipeline is None:
            return
        try:
            await take_over_lost_instances(self.pipeline.store, self.pipeline.sink)
        except IngestorError as exc:
            log.error("taking over a lost instance: %s (tried again later)", exc)

    async def _journal_upkeep(self) -> None:
        if self.pipeline is None:
            return
        # The configuration the pipeline started with: output changes wait for a restart.
        output, sink = self.pipeline.config.output, self.pipeline.sink
        try:
            if output.retention is not None:
                await apply_retention(self.pipeline.store, sink, output.retention, time.time())
            elif sink.journal is not None:
                await asyncio.to_thread(sink.journal.rotate_if_old, time.time())
        except IngestorError as exc:
            log.error("journal upkeep: %s (tried again later)", exc)

    def reload(self) -> None:
        """SIGHUP: re-read the config; feeds added, removed and changed take effect now."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: no configuration file to reload")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config reload rejected, keeping the running config: %s", problem)
            return
        old_feeds = self.feeds
        new_feeds = {f.feed_id: f for f in new.feeds if f.enabled}
        now = time.time()
        added = [f for f in new_feeds if f not in old_feeds]
        removed = [f for f in old_feeds if f not in new_feeds]
        changed = [f for f in new_feeds if f in old_feeds and new_feeds[f] != old_feeds[f]]
        self.feeds = new_feeds
        if self.pipeline is not None:
            self.pipeline.set_feeds(new.feeds)
        for feed_id in removed:
            self.due.discard(feed_id)
        spread = min(new.schedule.interval, 30.0)  # added feeds: soon, not all at once
        for feed_id in added:
            state = self.pipeline.states.get(feed_id) if self.pipeline else None
            self.due.set(feed_id, schedule.first_due(state, now, spread, self.rng))
        if self.pipeline is not None and self.pipeline.store.shared and added:
            self._registering = asyncio.get_running_loop().create_task(
                self._register([new_feeds[f] for f in added], now, spread)
            )
        for feed_id in changed:
            # A changed feed (e.g. a new interval, or a fix for a 410) is polled soon.
            self.due.set(feed_id, now + self.rng.uniform(0, 5.0))
        untouched = [s for s in sections() if getattr(new, s) != getattr(self.config, s)]
        self.config = new
        log.info(
            "config reloaded: %d feeds (%d added, %d removed, %d changed)",
            len(new_feeds),
            len(added),
            len(removed),
            len(changed),
        )
        if untouched:
            log.warning("changes to %s take effect after a restart", ", ".join(untouched))
