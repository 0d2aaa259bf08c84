"""In-process metrics with Prometheus text exposition, and the optional HTTP endpoint."""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

from aiohttp import web

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
        # Refreshed before each exposition: gauges that need a state-store query.
        self.collectors: list[Callable[[], Awaitable[None]]] = []
        self.started = time.time()

    async def collect(self) -> None:
        for collector in self.collectors:
            await collector()

    def inc(self, name: str, label: str = "", amount: float = 1.0) -> None:
        self.counters[(name, label)] += amount

    def count(self, name: str, label: str = "") -> float:
        return self.counters.get((name, label), 0.0)

    def observe(self, stage: str, seconds: float) -> None:
        self.stages[stage].observe(seconds)

    def stage_summary(self) -> dict[str, tuple[int, float]]:
        """stage -> (count, total seconds)."""
        return {name: (h.count, h.total) for name, h in sorted(self.stages.items())}

    def render(self) -> str:
        lines: list[str] = []
        by_name: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for (name, label), value in sorted(self.counters.items()):
            by_name[name].append((label, value))
        for name, values in by_name.items():
            metric = f"ingestor_{name}_total"
            lines.append(f"# TYPE {metric} counter")
            for label, value in values:
                labels = f'{{kind="{_escape(label)}"}}' if label else ""
                lines.append(f"{metric}{labels} {value:g}")
        for name, read in sorted(self.gauges.items()):
            lines.append(f"# TYPE ingestor_{name} gauge")
            lines.append(f"ingestor_{name} {read():g}")
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


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """`/healthz` and `/metrics` on host:port (127.0.0.1 by default)."""

    def __init__(self, metrics: Metrics, host: str, port: int, healthy: Callable[[], bool]) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.healthy = healthy
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        ok = self.healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "unhealthy\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        await self.metrics.collect()
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")
