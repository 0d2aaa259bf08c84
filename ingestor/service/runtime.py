"""Builds the pipeline's parts from a Config and tears them down in the right order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ingestor.analyze.pool import WorkerPool
from ingestor.config.model import Config
from ingestor.core.metrics import Metrics
from ingestor.http.fetcher import Fetcher
from ingestor.pipeline.pipeline import Pipeline
from ingestor.service.logsetup import name_instance
from ingestor.sink.files import FileSink
from ingestor.store.factory import instance_id, make_store


@asynccontextmanager
async def open_pipeline(config: Config, metrics: Metrics | None = None) -> AsyncIterator[Pipeline]:
    """State store and output checked first (fatal errors before any network traffic)."""
    store = make_store(config.state)
    if metrics is not None:
        metrics.instance = instance_id(config.state)
    if store.shared:
        name_instance(instance_id(config.state))
    await store.open()
    try:
        sink = FileSink(config.output.dir, config.output.pretty)
        sink.prepare()
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
    finally:
        await store.close()
