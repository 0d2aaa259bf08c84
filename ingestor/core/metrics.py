"""In-process metrics: counters by name and label, stage timing histograms, gauges read on
demand, and their Prometheus text exposition (pure; service/metrics_server.py serves it)."""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping

_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = _DEFAULT_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class Metrics:
    """Counters by name and label, per-stage timing histograms, gauges read on demand."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], float] = defaultdict(float)
        self.stages: dict[str, Histogram] = defaultdict(Histogram)
        self.gauges: dict[str, Callable[[], float]] = {}
        # name -> (label name, read): one series per label value (a site, a feed).
        self.labeled_gauges: dict[str, tuple[str, Callable[[], Mapping[str, float]]]] = {}
        # Refreshed before each exposition: gauges that need a state-store query.
        self.collectors: list[Callable[[], Awaitable[None]]] = []
        self.started = time.time()
        self.instance = ""  # this process's instance id (several share one PostgreSQL)

    async def collect(self) -> None:
        for collector in self.collectors:
            await collector()

    def inc(self, name: str, label: str = "", amount: float = 1.0) -> None:
        self.counters[(name, label)] += amount

    def count(self, name: str, label: str = "") -> float:
        return self.counters.get((name, label), 0.0)

    def observe(self, stage: str, seconds: float) -> None:
        self.stages[stage].observe(seconds)

    def cpu(self, stage: str, seconds: float) -> None:
        """CPU seconds spent in a stage, whichever process or thread spent them."""
        self.counters[("stage_cpu_seconds", stage)] += seconds

    def set_cpu(self, stage: str, seconds: float) -> None:
        """A stage's CPU read as a running total (a thread's or the workers')."""
        self.counters[("stage_cpu_seconds", stage)] = seconds

    def stage_summary(self) -> dict[str, tuple[int, float]]:
        """stage -> (count, total seconds)."""
        return {name: (h.count, h.total) for name, h in sorted(self.stages.items())}

    def render(self) -> str:
        lines: list[str] = []
        if self.instance:
            lines.append("# TYPE ingestor_instance_info gauge")
            lines.append(f'ingestor_instance_info{{instance="{_escape(self.instance)}"}} 1')
        by_name: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for (name, label), value in sorted(self.counters.items()):
            by_name[name].append((label, value))
        for name, values in by_name.items():
            metric = f"ingestor_{name}_total"
            lines.append(f"# TYPE {metric} counter")
            for label, value in values:
                key = _LABEL_KEYS.get(name, "kind")
                labels = f'{{{key}="{_escape(label)}"}}' if label else ""
                lines.append(f"{metric}{labels} {value:g}")
        for name, read in sorted(self.gauges.items()):
            lines.append(f"# TYPE ingestor_{name} gauge")
            lines.append(f"ingestor_{name} {read():g}")
        for name, (key, read_all) in sorted(self.labeled_gauges.items()):
            lines.append(f"# TYPE ingestor_{name} gauge")
            for label, value in sorted(read_all().items()):
                lines.append(f'ingestor_{name}{{{key}="{_escape(label)}"}} {value:g}')
        if self.stages:
            lines.append("# TYPE ingestor_stage_seconds histogram")
        for stage, histogram in sorted(self.stages.items()):
            cumulative = 0
            for bound, count in zip(histogram.buckets, histogram.counts, strict=False):
                cumulative += count
                lines.append(
                    f'ingestor_stage_seconds_bucket{{stage="{stage}",le="{bound:g}"}} {cumulative}'
                )
            lines.append(
                f'ingestor_stage_seconds_bucket{{stage="{stage}",le="+Inf"}} {histogram.count}'
            )
            lines.append(f'ingestor_stage_seconds_sum{{stage="{stage}"}} {histogram.total:.6f}')
            lines.append(f'ingestor_stage_seconds_count{{stage="{stage}"}} {histogram.count}')
        return "\n".join(lines) + "\n"


# A counter's label is a `kind` unless its name says otherwise.
_LABEL_KEYS = {"stage_cpu_seconds": "stage", "sink_delivery_failures": "sink"}


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
