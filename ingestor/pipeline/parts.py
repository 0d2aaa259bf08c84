"""The dependencies the pipeline's workers share, built once by the Pipeline."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ingestor.analyze.pool import WorkerPool
from ingestor.config.model import Config
from ingestor.core.metrics import Metrics
from ingestor.core.urls import TrackingParams
from ingestor.http.fetcher import Fetcher
from ingestor.sink.files import OutputSink
from ingestor.store.protocol import StateStore


@dataclass(frozen=True)
class Parts:
    config: Config
    fetcher: Fetcher
    pool: WorkerPool
    store: StateStore
    sink: OutputSink
    metrics: Metrics
    rng: random.Random


class UsesParts:
    """Gives a worker class the shared dependencies as attributes."""

    def __init__(self, parts: Parts) -> None:
        self.config = parts.config
        self.fetcher = parts.fetcher
        self.pool = parts.pool
        self.store = parts.store
        self.sink = parts.sink
        self.metrics = parts.metrics
        self.rng = parts.rng
        self.tracking = TrackingParams(parts.config.dedup.tracking_params)
