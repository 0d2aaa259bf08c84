"""Benchmark: full ingestion against trafilatura's own limit and a naive baseline, polling
10,000 feeds, the idle daemon, and the cost per stage. Every figure is the median of
--runs runs, and every ratio is against a baseline measured in the same run.

    python bench/bench.py                 # the full benchmark (about 10 minutes)
    python bench/bench.py --quick         # smaller, for a smoke test (about 2 minutes)
    python bench/bench.py --only full     # the shared farm's sitting alone

Section 1 runs on the shared farm (../shared/farm, with its naive peer and the farm's
grader); the other sections on bench/farm.py's world, which can inject faults at a chosen
rate and scale to 100,000 feeds.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.farm import FarmServer, FarmSpec, is_faulty
from bench.shared_farm import (
    REFERENCE_CALL,
    SharedFarm,
    World,
    articles_written,
    cores,
    fetch_pages,
    naive_pass,
    reference_cpu_per_page,
)

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- measuring a process tree -------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    children = _children_map()
    found, stack = [pid], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cpu_and_rss(pid: int) -> tuple[float, int]:
    """(utime + stime seconds, RSS bytes) of one process, or (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / TICKS, int(fields[21]) * PAGE


def pss(pid: int) -> int:
    """Proportional set size in bytes: pages shared with other processes (the workers
    share the fork server's preloaded libraries) counted once across them, unlike RSS."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class TreeSample:
    cpu: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0
    peak_main_rss: int = 0
    peak_pss: int = 0


class TreeMonitor:
    """Samples a process tree at 20 Hz: CPU per process (the last value seen counts) and
    the peak of the summed RSS."""

    def __init__(self, pid: int, with_pss: bool = False) -> None:
        self.pid = pid
        self.with_pss = with_pss
        self.sample = TreeSample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = proportional = 0
            for pid in tree(self.pid):
                cpu, rss = cpu_and_rss(pid)
                if cpu:
                    self.sample.cpu[pid] = max(cpu, self.sample.cpu.get(pid, 0.0))
                total += rss
                if self.with_pss:
                    proportional += pss(pid)
                if pid == self.pid:
                    self.sample.peak_main_rss = max(self.sample.peak_main_rss, rss)
            self.sample.peak_rss = max(self.sample.peak_rss, total)
            self.sample.peak_pss = max(self.sample.peak_pss, proportional)
            self._stop.wait(0.05)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.sample.cpu.values())


@dataclass
class RunResult:
    wall: float
    cpu: float
    cpu_main: float
    peak_rss: int
    peak_main_rss: int
    peak_pss: int
    stdout: str
    metrics: dict[str, tuple[float, float]]
    stage_cpu: dict[str, float]


def run_ingestor(config: Path, workdir: Path, *extra: str, with_pss: bool = False) -> RunResult:
    metrics_file = workdir / "metrics.prom"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingestor",
            "run",
            "--config",
            str(config),
            "--once",
            "--metrics-file",
            str(metrics_file),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with TreeMonitor(process.pid, with_pss) as monitor:
        stdout, stderr = process.communicate(timeout=3600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise RuntimeError(f"ingestor failed ({process.returncode}): {stderr[-2000:]}")
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return RunResult(
        wall,
        max(reaped, monitor.cpu_seconds),
        monitor.sample.cpu.get(process.pid, 0.0),
        monitor.sample.peak_rss,
        monitor.sample.peak_main_rss,
        monitor.sample.peak_pss,
        stdout,
        parse_stage_metrics(metrics_file),
        parse_stage_cpu(metrics_file),
    )


def parse_stage_metrics(path: Path) -> dict[str, tuple[float, float]]:
    stages: dict[str, list[float]] = {}
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        match = re.match(r'ingestor_stage_seconds_(sum|count)\{stage="([^"]+)"\} (\S+)', line)
        if match:
            stages.setdefault(match.group(2), [0.0, 0.0])[0 if match.group(1) == "count" else 1] = (
                float(match.group(3))
            )
    return {k: (v[0], v[1]) for k, v in stages.items()}


def parse_stage_cpu(path: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            match = re.match(r'ingestor_stage_cpu_seconds_total\{stage="([^"]+)"\} (\S+)', line)
            if match:
                found[match.group(1)] = float(match.group(2))
    return found


def write_config(path: Path, feeds: list[str], **sections: str) -> None:
    text = (
        f"output:\n  dir: {path.parent / 'out'}\n"
        f"state:\n  path: {path.parent / 'state' / 'ingestor.db'}\n"
        "http:\n  allowed_networks: ['127.0.0.0/8']\n  retries: 0\n"
        "  per_host_connections: 4\n  max_connections: 200\n"
        "schedule:\n  interval: 15m\n"
        + "".join(sections.values())
        + "feeds:\n"
        + "".join(f"  - url: {u}\n" for u in feeds)
    )
    path.write_text(text)


def fresh_dir(root: Path, name: str) -> Path:
    directory = root / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


# --- 1. full ingestion and its two baselines ----------------------------------------------


# Worker-side stages (CPU per job, from the jobs' own timers) and main-process ones.
WORKER_STAGES = ("parse", "extract", "language", "fingerprint")
MAIN_STAGES = ("main_startup", "main_loop", "main_state_thread", "main_write_thread")
STAGE_NOTES = {
    "parse": "feed parsing (workers)",
    "extract": "decoding, extraction, page metadata (workers)",
    "language": "language detection (workers)",
    "fingerprint": "hash and MinHash (workers)",
    "workers_other": "workers' and fork server's start-up, task loop, pickling",
    "main_startup": "main process: imports, configuration",
    "main_loop": "main process, event loop: HTTP fetch, scheduling, hand-offs",
    "main_state_thread": "main process, state thread: SQLite, dedup decisions, records to JSON",
    "main_write_thread": "main process: record files, fsync (in the state thread with SQLite)",
    "main_other": "main process, other threads (helpers, shutdown)",
}


def stage_table(result: RunResult, articles: int, cores: int) -> dict[str, float]:
    """CPU ms per article by stage, from the pipeline's counters (ingestor_stage_cpu_seconds)
    and the measured process totals; `idle` is the cores' unused time over the pass."""
    cpu = result.stage_cpu
    stages = {name: cpu.get(name, 0.0) for name in (*WORKER_STAGES, *MAIN_STAGES)}
    workers_total = max(cpu.get("workers_total", 0.0), result.cpu - result.cpu_main)
    stages["workers_other"] = workers_total - sum(stages[n] for n in WORKER_STAGES)
    stages["main_other"] = result.cpu_main - sum(stages[n] for n in MAIN_STAGES)
    stages["idle"] = cores * result.wall - result.cpu
    return {name: seconds / articles * 1000 for name, seconds in stages.items()}


def _spread(values: list[float], fmt: str) -> str:
    """The median, then (min-max) of the runs."""
    middle = statistics.median(values)
    if len(values) == 1:
        return format(middle, fmt)
    return f"{middle:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def full_ingestion(args: argparse.Namespace, root: Path) -> list[str]:
    """The shared farm (profile none): the ingestor, the naive peer and trafilatura's plain
    call in one sitting, --runs times (see bench/shared_farm.py)."""
    world = World(feeds=args.feeds, items=args.items, hosts=args.hosts, port=args.farm_port)
    n_cores = cores()
    runs: list[dict[str, float]] = []
    tables: list[dict[str, float]] = []
    verdicts: list[str] = []
    print(f"  trafilatura reference: {REFERENCE_CALL}", flush=True)
    for run in range(args.runs):
        work = fresh_dir(root, f"full-{run}")
        with SharedFarm(world, work / "farm") as farm:
            config = work / "ingestor.yaml"
            write_config(
                config,
                farm.feed_urls(),
                pipeline="pipeline:\n  article_concurrency: 32\n  queue_size: 64\n",
            )
            result = run_ingestor(config, work)
            verdicts.append(farm.verdict(work / "out"))
            pages = fetch_pages(farm.page_urls()[: args.reference_pages])
        traf_cpu = reference_cpu_per_page(pages)
        with SharedFarm(world, work / "farm-naive") as farm:
            naive_wall, naive_articles, naive_cpu = naive_pass(farm, work / "naive")
        articles = articles_written(result.stdout)
        rate = articles / result.wall
        naive_rate = naive_articles / naive_wall
        limit = n_cores / traf_cpu
        runs.append(
            {
                "articles": articles,
                "wall": result.wall,
                "rate": rate,
                "cpu_per_article": result.cpu / articles * 1000,
                "peak_rss_mb": result.peak_rss / 1e6,
                "main_rss_mb": result.peak_main_rss / 1e6,
                "traf_cpu": traf_cpu * 1000,
                "limit": limit,
                "naive": naive_rate,
                "naive_cpu": naive_cpu / max(naive_articles, 1) * 1000,
                "of_limit": rate / limit * 100,
                "vs_naive": rate / naive_rate,
                "cpu_ratio": (result.cpu / articles) / traf_cpu,
                "cpu_main": result.cpu_main / articles * 1000,
                "cpu_other": (result.cpu - result.cpu_main) / articles * 1000,
            }
        )
        tables.append(stage_table(result, articles, n_cores))
        print(
            f"  run {run + 1}: {articles} articles in {result.wall:.1f}s = {rate:.1f}/s; "
            f"limit {limit:.1f}/s; naive {naive_rate:.2f}/s; CPU/article "
            f"{result.cpu / articles * 1000:.1f} ms (main {runs[-1]['cpu_main']:.1f}) vs "
            f"trafilatura {traf_cpu * 1000:.1f} ms/page; {verdicts[-1][:40]}",
            flush=True,
        )
    col = {k: [r[k] for r in runs] for k in runs[0]}
    lines = [
        f"### 1. Full ingestion: the shared farm, {args.feeds} feeds x {args.items} items on "
        f"{args.hosts} hosts, profile none",
        "",
        "`../shared/farm` (a world the team did not write): pages of 30-200 KB in four "
        "templates and 12 languages, 5-40 ms per response. In each run, one sitting: the "
        "ingestor's pass on a fresh farm, the farm's grader, trafilatura's plain call on "
        f"{len(pages)} of the world's pages in this process, and `naive.py --passes 1` "
        f"(the farm's peer) on a fresh farm of the same seed. Median of {args.runs} runs "
        "(min-max). CPU counts every process (the workers and the fork server are reaped, "
        "so none is missed).",
        "",
        f"Trafilatura reference: `{REFERENCE_CALL}`. Verdicts: "
        + "; ".join(sorted(set(v.split(" expected")[0] for v in verdicts))),
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| ingestor articles/s vs the naive sequential script | "
        f"{_spread(col['vs_naive'], '.2f')}x | >= 6x |",
        f"| CPU per record (all processes) vs trafilatura per page | "
        f"{_spread(col['cpu_ratio'], '.2f')}x ({_spread(col['cpu_per_article'], '.1f')} ms) "
        "| <= 1.3x |",
        f"| share of the machine's trafilatura limit ({n_cores} cores / reference CPU per "
        f"page) | {_spread(col['of_limit'], '.0f')} % | >= 70 % |",
        f"| articles written per pass | {_spread(col['articles'], '.0f')} | |",
        f"| pass time | {_spread(col['wall'], '.1f')} s | |",
        f"| ingestion rate | {_spread(col['rate'], '.1f')} articles/s | |",
        f"| trafilatura reference CPU per page | {_spread(col['traf_cpu'], '.1f')} ms | |",
        f"| machine limit | {_spread(col['limit'], '.1f')} articles/s | |",
        f"| naive peer | {_spread(col['naive'], '.2f')} articles/s, "
        f"{_spread(col['naive_cpu'], '.1f')} ms CPU each | |",
        f"| ... main process | {_spread(col['cpu_main'], '.1f')} ms per record | |",
        f"| ... workers and fork server | {_spread(col['cpu_other'], '.1f')} ms per record | |",
        f"| peak RSS, all processes (main) | {_spread(col['peak_rss_mb'], '.0f')} MB "
        f"({_spread(col['main_rss_mb'], '.0f')} MB) | |",
        "",
        "### 4. CPU per record by stage (the pipeline's own counters; median of runs, min-max)",
        "",
        "| stage | ms per record | what |",
        "|---|---|---|",
    ]
    for stage in (*WORKER_STAGES, "workers_other", *MAIN_STAGES, "main_other", "idle"):
        values = [t[stage] for t in tables]
        note = STAGE_NOTES.get(stage, f"unused core time ({n_cores} cores x pass time - CPU)")
        lines.append(f"| {stage} | {_spread(values, '.2f')} | {note} |")
    return lines


# --- 5. the fault mix: pages and feeds that answer 429/503 once ---------------------------


def read_counter(path: Path, name: str) -> float:
    total = 0.0
    if path.exists():
        for line in path.read_text().splitlines():
            if re.match(rf"ingestor_{name}_total(\{{.*\}})? ", line):
                total += float(line.rsplit(" ", 1)[1])
    return total


def fault_mix(args: argparse.Namespace, root: Path) -> list[str]:
    clean = FarmSpec(hosts=args.hosts, feeds=args.feeds, items=args.items)
    faulty = replace(clean, fault_rate=args.fault_rate)
    pipeline = "pipeline:\n  article_concurrency: 32\n  queue_size: 64\n"
    runs: list[dict[str, float]] = []
    for run in range(args.runs):
        with FarmServer(clean) as content:
            work = fresh_dir(root, f"clean-{run}")
            write_config(work / "ingestor.yaml", content.feed_urls(), pipeline=pipeline)
            clean_result = run_ingestor(work / "ingestor.yaml", work)
        with FarmServer(faulty) as content:
            expected = len(content.pages)
            faulty_pages = sum(is_faulty(p, args.fault_rate) for p in content.pages)
            faulty_feeds = sum(is_faulty(p, args.fault_rate) for p in content.feeds)
            work = fresh_dir(root, f"faulty-{run}")
            config = work / "ingestor.yaml"
            write_config(config, content.feed_urls(), pipeline=pipeline)
            first = run_ingestor(config, work)
            written = int(re.search(r"articles written: (\d+)", first.stdout).group(1))
            queued = re.search(r"still queued for the next run: (\d+)", first.stdout)
            run_ingestor(config, work)  # the second pass: its metrics are read below
            not_modified = read_counter(work / "metrics.prom", "feeds_not_modified")
            polled = read_counter(work / "metrics.prom", "feeds_polled")
        runs.append(
            {
                "expected": expected,
                "written": written,
                "left": int(queued.group(1)) if queued else 0,
                "share": written / expected,
                "faulty_pages": faulty_pages,
                "faulty_feeds": faulty_feeds,
                "clean_wall": clean_result.wall,
                "faulty_wall": first.wall,
                "slowdown": first.wall / clean_result.wall,
                "share_304": not_modified / max(polled, 1),
                "polled_second": polled,
            }
        )
        print(
            f"  run {run + 1}: {written}/{expected} written in one pass "
            f"({faulty_pages} pages and {faulty_feeds} feeds answered 429/503 once); "
            f"{first.wall:.1f}s vs {clean_result.wall:.1f}s fault-free; second pass "
            f"{not_modified:.0f}/{polled:.0f} feeds answered 304",
            flush=True,
        )
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    low = {k: min(r[k] for r in runs) for k in runs[0]}
    return [
        f"### 5. Fault mix: {args.fault_rate:.0%} of pages and feeds answer 429/503 once "
        f"(Retry-After 1-5 s, seconds or HTTP date); median of {args.runs} runs",
        "",
        "| figure | value (worst run) | target |",
        "|---|---|---|",
        f"| pages / feeds that answered 429 or 503 | {med['faulty_pages']:.0f} / "
        f"{med['faulty_feeds']:.0f} | |",
        f"| written / expected in one `run --once` | {med['written']:.0f} / "
        f"{med['expected']:.0f} = {med['share']:.1%} ({low['share']:.1%}) | 100% |",
        f"| left queued at the end of the pass | {med['left']:.0f} | 0 |",
        f"| second pass over unchanged feeds: answered 304 | {med['share_304']:.1%} "
        f"({low['share_304']:.1%}) | >= 95% |",
        f"| pass time with faults / fault-free farm | {med['faulty_wall']:.1f}s / "
        f"{med['clean_wall']:.1f}s = {med['slowdown']:.2f}x | |",
    ]


# --- 6. memory with a large frontier ------------------------------------------------------


async def _fill_frontier(state_path: Path, items: int, hosts: int) -> None:
    from ingestor.core import frontier
    from ingestor.core.entry import FeedEntry
    from ingestor.core.state import FeedState, PollCommit
    from ingestor.core.urls import TrackingParams
    from ingestor.store.sqlite import SQLiteStateStore

    store = SQLiteStateStore(state_path)
    await store.open()
    try:
        per_feed = 5000
        for feed in range(0, items, per_feed):
            entries = [
                (
                    FeedEntry(
                        key=f"k{n}",
                        # Port 9 on 127.0.99.x: connections are refused at once, so every
                        # item is claimed, fails and is rescheduled: the frontier churns.
                        link=f"http://127.0.99.{1 + n % hosts}:9/a/{n}.html",
                        title=f"Queued article {n}",
                        summary="A summary of the kind feeds carry, a sentence or two long. " * 3,
                        content=None,
                    ),
                    False,
                )
                for n in range(feed, min(feed + per_feed, items))
            ]
            planned = frontier.plan_items(
                f"http://127.0.99.1:9/feed/{feed}.xml",
                entries,
                fetch_articles=True,
                feed_title="Bench",
                feed_language="en",
                tracking=TrackingParams(),
                now=time.time(),
            )
            state = FeedState(feed_id=f"http://127.0.99.1:9/feed/{feed}.xml")
            await store.commit_poll(PollCommit(state, planned))
    finally:
        await store.close()


def start_daemon(config: Path, log: Path, settle: float) -> subprocess.Popen[bytes]:
    """The real daemon, once it says it runs and `settle` seconds later (the worker pool
    comes up after the log line)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ingestor", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while "ingestor running" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(settle)
    return process


def daemon_main_rss(config: Path, seconds: float) -> float:
    """Peak RSS of the daemon's main process over `seconds` after start-up settles."""
    process = start_daemon(config, config.parent / "daemon.log", 3)
    try:
        peak = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            peak = max(peak, cpu_and_rss(process.pid)[1])
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return peak / 1e6


def frontier_memory(args: argparse.Namespace, root: Path) -> list[str]:
    import asyncio

    figures: dict[int, float] = {}
    for items in (0, args.frontier_items):
        work = fresh_dir(root, f"frontier-{items}")
        config = work / "ingestor.yaml"
        write_config(config, [])
        extra_http = "max_connections: 200\n  respect_robots_txt: false\n  connect_timeout: 1s\n"
        config.write_text(config.read_text().replace("max_connections: 200\n", extra_http))
        if items:
            asyncio.run(_fill_frontier(work / "state" / "ingestor.db", items, 500))
        figures[items] = daemon_main_rss(config, args.idle_seconds)
        print(f"  {items} queued: main-process RSS {figures[items]:.0f} MB", flush=True)
    growth = figures[args.frontier_items] - figures[0]
    return [
        f"### 6. Memory with a large frontier: {args.frontier_items} queued articles on 500 "
        f"hosts, the daemon working them (every fetch refused, so each item churns)",
        "",
        f"Main-process peak RSS over {args.idle_seconds:.0f} s: {figures[0]:.0f} MB with an "
        f"empty frontier, {figures[args.frontier_items]:.0f} MB with "
        f"{args.frontier_items} queued: +{growth:.0f} MB (target: +50 MB at most).",
    ]


# --- 2. polling and 3. idle ---------------------------------------------------------------


def scale(args: argparse.Namespace, root: Path) -> list[str]:
    """Many scheduled feeds: a first pass (every feed new: fetched and parsed), a second
    pass (every feed answers 304), then the daemon with every feed scheduled and none due.
    Peak RSS of all processes in each, and CPU per poll of the second pass."""
    count = args.scale_feeds
    hosts = 250
    spec = FarmSpec(hosts=hosts, feeds=0, items=0, poll_feeds=count, latency=(0, 0))
    with FarmServer(spec) as content:
        work = fresh_dir(root, "scale")
        config = work / "ingestor.yaml"
        write_config(
            config, content.poll_urls(False), pipeline="pipeline:\n  max_concurrent_feeds: 200\n"
        )
        first = run_ingestor(config, work, with_pss=True)
        second = run_ingestor(config, work, with_pss=True)
        process = start_daemon(config, work / "daemon.log", 3)
        try:
            idle_peak = idle_pss = 0
            end = time.monotonic() + args.idle_seconds
            while time.monotonic() < end:
                pids = tree(process.pid)
                idle_peak = max(idle_peak, sum(cpu_and_rss(p)[1] for p in pids))
                idle_pss = max(idle_pss, sum(pss(p) for p in pids))
                time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    print(
        f"  {count} feeds: first pass {first.peak_rss / 1e6:.0f} MB, second "
        f"{second.peak_rss / 1e6:.0f} MB, idle daemon {idle_peak / 1e6:.0f} MB",
        flush=True,
    )
    return [
        f"### 7. Scale: {count} feeds on {hosts} hosts (one run)",
        "",
        "| phase | wall | CPU per feed | peak RSS, all processes (main) | peak PSS, all |",
        "|---|---|---|---|---|",
        f"| first pass: every feed fetched and parsed | {first.wall:.0f} s | "
        f"{first.cpu / count * 1000:.2f} ms | {first.peak_rss / 1e6:.0f} MB "
        f"({first.peak_main_rss / 1e6:.0f} MB) | {first.peak_pss / 1e6:.0f} MB |",
        f"| second pass: every feed answers 304 | {second.wall:.0f} s | "
        f"{second.cpu / count * 1000:.2f} ms | {second.peak_rss / 1e6:.0f} MB "
        f"({second.peak_main_rss / 1e6:.0f} MB) | {second.peak_pss / 1e6:.0f} MB |",
        f"| the daemon, every feed scheduled, none due ({args.idle_seconds:.0f} s) | | | "
        f"{idle_peak / 1e6:.0f} MB | {idle_pss / 1e6:.0f} MB |",
        "",
        "Target: 100,000 scheduled feeds under 400 MB.",
    ]


def polling_and_idle(args: argparse.Namespace, root: Path) -> list[str]:
    spec = FarmSpec(hosts=50, feeds=0, items=0, poll_feeds=args.poll_feeds, latency=(0, 0))
    lines = [
        f"### 2. Polling only: {args.poll_feeds} feeds on 50 hosts (median of {args.runs} runs)",
        "",
        "| mode | feeds/s | CPU per poll | ... start-up excluded | peak RSS main (all) |",
        "|---|---|---|---|---|",
    ]
    idle_line: list[str] = []
    with FarmServer(spec) as content:
        for mode, unchanged in (("304 Not Modified", False), ("unchanged body (hash)", True)):
            work = fresh_dir(root, f"poll-{int(unchanged)}")
            config = work / "ingestor.yaml"
            write_config(
                config,
                content.poll_urls(unchanged),
                pipeline="pipeline:\n  max_concurrent_feeds: 200\n",
            )
            run_ingestor(config, work)  # first pass: 200s, parsed once
            results = [run_ingestor(config, work) for _ in range(args.runs)]
            for result in results:
                polled = int(re.search(r"(\d+) unchanged", result.stdout).group(1))
                assert polled == args.poll_feeds, result.stdout
            rate = statistics.median(args.poll_feeds / r.wall for r in results)
            cpu = statistics.median(r.cpu / args.poll_feeds for r in results)
            steady = cpu - start_up_cpu(config, work, args.runs) / args.poll_feeds
            main = statistics.median(r.peak_main_rss for r in results) / 1e6
            total = statistics.median(r.peak_rss for r in results) / 1e6
            lines.append(
                f"| {mode} | {rate:.0f} | {cpu * 1000:.2f} ms | {steady * 1000:.2f} ms | "
                f"{main:.0f} MB ({total:.0f} MB) |"
            )
            if not unchanged:
                idle_line = idle_daemon(config, args.idle_seconds)
    lines.append("")
    lines.append(
        "Targets: >= 1,000 unchanged feeds/s on one core (CPU per poll <= 1 ms); "
        '10,000 scheduled feeds under 200 MB RSS. "Start-up excluded": less the CPU of '
        "the same `run --once` with every feed disabled (interpreter, imports, config, "
        "state load, shutdown), which a running daemon pays once, not per poll cycle."
    )
    return [*lines, "", *idle_line]


def start_up_cpu(config: Path, work: Path, runs: int) -> float:
    """CPU of a `run --once` over the same feeds, every one disabled: all a pass costs
    that is not polling."""
    disabled = work / "disabled.yaml"
    disabled.write_text(
        re.sub(
            r"^  - url: (.*)$", r"  - url: \1\n    enabled: false", config.read_text(), flags=re.M
        )
    )
    return statistics.median(run_ingestor(disabled, work).cpu for _ in range(runs))


def idle_daemon(config: Path, seconds: float) -> list[str]:
    process = start_daemon(config, config.parent / "idle.log", 5)
    try:
        pids = tree(process.pid)
        start = {p: cpu_and_rss(p)[0] for p in pids}
        time.sleep(seconds)
        pids = tree(process.pid)
        used = sum(cpu_and_rss(p)[0] - start.get(p, 0.0) for p in pids)
        main_rss = cpu_and_rss(process.pid)[1] / 1e6
        total_rss = sum(cpu_and_rss(p)[1] for p in pids) / 1e6
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return [
        f"### 3. Idle daemon: the same {config.read_text().count('- url:')} feeds, none due, "
        f"{seconds:.0f} s",
        "",
        f"CPU {used / seconds:.2%} of one core (target < 2%); RSS main process "
        f"{main_rss:.0f} MB, with worker processes {total_rss:.0f} MB.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--feeds", type=int, default=60)
    parser.add_argument("--items", type=int, default=15)
    parser.add_argument(
        "--reference-pages", type=int, default=300, help="pages trafilatura's plain call times"
    )
    parser.add_argument("--farm-port", type=int, default=8870, help="the shared farm's port")
    parser.add_argument("--poll-feeds", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--frontier-items", type=int, default=50_000)
    parser.add_argument("--scale-feeds", type=int, default=100_000)
    parser.add_argument(
        "--only", choices=("full", "poll", "faults", "frontier", "scale"), default=None
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.feeds, args.items = 1, 8, 10
        args.reference_pages, args.poll_feeds, args.idle_seconds = 60, 1000, 5.0
        args.scale_feeds = 5000
    cpu_info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpu_info if line.startswith("model name")),
        platform.processor(),
    )
    header = [
        "## Benchmark results",
        "",
        f"Machine: {len(os.sched_getaffinity(0))} cores ({cpu}), "
        f"{os.sysconf('SC_PHYS_PAGES') * PAGE / 2**30:.0f} GiB RAM, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}; "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
    ]
    print("\n".join(header), flush=True)
    with tempfile.TemporaryDirectory(prefix="ingestor-bench-") as tmp:
        root = Path(tmp)
        sections: list[str] = []
        if args.only in (None, "full"):
            sections += [*full_ingestion(args, root), ""]
            print("\n".join(sections), flush=True)
        if args.only in (None, "faults"):
            faults = fault_mix(args, root)
            sections += [*faults, ""]
            print("\n".join(faults), flush=True)
        if args.only in (None, "frontier"):
            memory = frontier_memory(args, root)
            sections += [*memory, ""]
            print("\n".join(memory), flush=True)
        if args.only in (None, "scale"):
            lines = scale(args, root)
            sections += [*lines, ""]
            print("\n".join(lines), flush=True)
        if args.only in (None, "poll"):
            poll = polling_and_idle(args, root)
            sections += poll
            print("\n".join(poll), flush=True)


if __name__ == "__main__":
    main()
