"""Builds the pipeline's parts from a Config and tears them down in the right order."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from ingestor.analyze.pool import WorkerPool
from ingestor.config.model import Config
from ingestor.core.metrics import Metrics
from ingestor.http.fetcher import Fetcher
from ingestor.pipeline.journal_upkeep import reconcile_journal, take_over_lost_instances
from ingestor.pipeline.orchestrator import Pipeline
from ingestor.service.logsetup import name_instance
from ingestor.sink.files import FileSink
from ingestor.sink.journal_files import JournalWriter
from ingestor.store.factory import instance_id, make_store
from ingestor.store.traffic import StoreTraffic


@asynccontextmanager
async def open_pipeline(config: Config, metrics: Metrics | None = None) -> AsyncIterator[Pipeline]:
    """State store and output checked first (fatal errors before any network traffic)."""
    traffic = StoreTraffic()
    store = make_store(config.state, traffic=traffic)
    # Before this point the main process imported its modules and read the configuration.
    startup_cpu, loop_started = time.process_time(), time.thread_time()
    if metrics is not None:
        metrics.instance = instance_id(config.state)
    if store.shared:
        name_instance(instance_id(config.state))
    await store.open()
    try:
        output = config.output
        journal = None
        if output.journal:
            journal = JournalWriter(
                output.dir,
                store.journal_writer,
                output.journal_segment_size,
                output.journal_segment_age,
            )
        sink = FileSink(output.dir, journal, store.journal_writer)
        sink.prepare()
        await reconcile_journal(store, sink, config.state.where)
        await take_over_lost_instances(store, sink)
        if metrics is not None:
            report = _cpu_report(metrics, traffic, store.shared, sink, startup_cpu, loop_started)
            metrics.collectors.append(report)
        pool = await asyncio.to_thread(
            WorkerPool, config.extraction.workers, config.extraction.timeout
        )
        try:
            async with Fetcher(config.http) as fetcher:
                pipeline = Pipeline(
                    config, fetcher=fetcher, pool=pool, store=store, sink=sink, metrics=metrics
                )
                await pipeline.start()
                try:
                    yield pipeline
                finally:
                    await pipeline.stop(config.pipeline.shutdown_grace)
        finally:
            await asyncio.to_thread(pool.close)
            if metrics is not None:
                # The pool has reaped its workers and the fork server: their CPU is here.
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                metrics.set_cpu("workers_total", children.ru_utime + children.ru_stime)
    finally:
        await store.close()


def _cpu_report(
    metrics: Metrics,
    traffic: StoreTraffic,
    shared: bool,
    sink: FileSink,
    startup: float,
    loop_started: float,
) -> Callable[[], Awaitable[None]]:
    """CPU by stage in the main process, as running totals: start-up (imports,
    configuration), the event loop's thread (HTTP, scheduling, hand-offs), the state
    store's thread (SQLite; there also the dedup decision and the record's JSON) and the
    writing of record files. Worker stages are counted per job. Also the state store's
    round trips per store method."""
    metrics.set_cpu("main_startup", startup)

    async def report() -> None:
        metrics.set_cpu("main_loop", time.thread_time() - loop_started)
        # SQLite puts record files from its own thread: counted as writing, not as state.
        for call, count in traffic.by_call.items():
            metrics.counters[("state_round_trips", call)] = float(count)
        state = traffic.thread_cpu_seconds - (0.0 if shared else sink.thread_cpu_seconds)
        metrics.set_cpu("main_state_thread", max(state, 0.0))
        metrics.set_cpu("main_write_thread", sink.thread_cpu_seconds)

    return report
