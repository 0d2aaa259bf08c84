"""`ingestor run --once`: one pass with progress on stderr, stopped cleanly by SIGTERM or
SIGINT, and the summary it prints."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from ingestor.config.model import Config
from ingestor.pipeline.outcomes import PassSummary

log = logging.getLogger("ingestor")


async def run_once(config: Config, metrics_file: Path | None) -> PassSummary:
    from ingestor.core.metrics import Metrics
    from ingestor.pipeline.journal_upkeep import apply_retention
    from ingestor.service.runtime import open_pipeline
    from ingestor.service.webhooks import deliver_pending, make_sinks, place_sinks

    progress = _Progress() if sys.stderr.isatty() else _LogProgress()
    metrics = Metrics()
    stop = asyncio.Event()
    stopped_by: list[str] = []

    def on_signal(name: str) -> None:
        if not stopped_by:
            log.warning(
                "%s received: no new work; in-flight articles get %gs "
                "(pipeline.shutdown_grace), the rest stays queued for the next run",
                name,
                config.pipeline.shutdown_grace,
            )
        stopped_by.append(name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    async with open_pipeline(config, metrics) as pipeline:
        sinks = make_sinks(config, pipeline.store, metrics)
        await place_sinks(sinks)
        summary = await pipeline.run_once_until(config.feeds, stop, progress)
        summary.stopped_by = stopped_by[0] if stopped_by else None
        await metrics.collect()
        # A cron-driven deployment never runs the daemon's hourly clean-up: do it here.
        await pipeline.store.prune(
            time.time(), config.state.seen_entry_max_age, config.dedup.window
        )
        if config.output.retention is not None:
            retention = config.output.retention
            await apply_retention(pipeline.store, pipeline.sink, retention, time.time())
        if sinks and not stopped_by:
            await deliver_pending(sinks, config.pipeline.once_max_wait)
    if isinstance(progress, _Progress):
        progress.finish()
    if metrics_file is not None:
        metrics_file.write_text(metrics.render(), encoding="utf-8")
    return summary


class _LogProgress:
    """Not a terminal: a plain log line now and then instead of a bar."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, summary: PassSummary) -> None:
        now = time.monotonic()
        if now - self.last >= 10.0:
            self.last = now
            log.info(
                "progress: feeds %d/%d, articles queued %d, written %d, retrying %d",
                summary.feeds,
                summary.total_feeds,
                summary.queued,
                summary.written,
                summary.retries,
            )


class _Progress:
    """A one-line progress bar on a terminal: feeds polled, articles queued, written and
    waiting for a retry."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, summary: PassSummary) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and summary.feeds < summary.total_feeds:
            return
        self.last = now
        width = 24
        filled = int(width * summary.feeds / max(summary.total_feeds, 1))
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(
            f"\r[{bar}] feeds {summary.feeds}/{summary.total_feeds}  "
            f"queued {summary.queued}  written {summary.written}  "
            f"waiting {summary.retries}  feed errors {summary.failed}"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")


def print_summary(summary: PassSummary, output_dir: Path) -> None:
    print(
        f"feeds: {summary.feeds} ({summary.polled} polled, {summary.not_modified} unchanged, "
        f"{summary.failed} failed, {summary.skipped} skipped)"
    )
    print(f"articles written: {summary.written}")
    print(f"duplicates: {summary.duplicates}")
    if summary.retries or summary.fallbacks:
        print(
            f"article retries: {summary.retries}; records from the feed's text after "
            f"a failed page: {summary.fallbacks}"
        )
    if summary.unfinished:
        print(f"feeds left for the next run: {len(summary.unfinished)}")
        for line in summary.unfinished[:20]:
            print(f"  {line}")
    if summary.left:
        print(f"still queued for the next run: {summary.left}")
        for line in summary.left_why[:20]:
            print(f"  {line}")
    print(f"errors: {len(summary.errors)}")
    for error in summary.errors:
        print(f"  {error}")
    print(f"records in: {output_dir}")
    if summary.stopped_by:
        print(
            f"stopped by {summary.stopped_by}: the pass ended early; what it had not done "
            "stays queued for the next run"
        )
