"""Benchmark: several instances on one PostgreSQL against one instance on SQLite, in the
same run. Unchanged-feed polls/s and articles/s with 1, 2 and 3 daemons, main-process CPU
per poll and per article, and database round trips per article (counted by the store).

    python bench/fleet.py                 # about 5 minutes
    python bench/fleet.py --quick

On this 2-core machine 3 daemons (plus their extraction workers and PostgreSQL) share two
cores: the figures show contention and the cost of sharing, not scaling.
"""

from __future__ import annotations

import argparse
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench.bench import cpu_and_rss, fresh_dir, run_ingestor, write_config
from bench.farm import FarmServer, FarmSpec
from tests.pgcluster import Cluster, find_bin_dir, running_cluster

Daemon = tuple[Path, "subprocess.Popen[bytes]"]

POLL_CALLS = ("claim_feeds", "claim_due_feeds", "commit_poll", "release_feeds")
ARTICLE_CALLS = (
    "claim_articles",
    "prepare_article",
    "commit_article",
    "settle_article",  # SQLite: one call (PostgreSQL counts its prepare and commit)
    "reschedule_article",
)


@dataclass
class Backend:
    name: str
    instances: int
    url: str | None  # None: SQLite


class Progress:
    """Reads what the state says has happened: feeds polled since a moment, records done."""

    def __init__(self, backend: Backend, work: Path) -> None:
        self.backend = backend
        self.path = work / "state" / "ingestor.db"

    def _query(self, sqlite_sql: str, pg_sql: str, params: tuple[object, ...]) -> Any:
        if self.backend.url is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            try:
                return conn.execute(sqlite_sql, params).fetchone()
            finally:
                conn.close()
        with psycopg.connect(self.backend.url) as conn:
            return conn.execute(pg_sql.replace("?", "%s"), params).fetchone()

    def polled_since(self, moment: float) -> tuple[int, float | None, float | None]:
        return self._query(
            "SELECT count(*), min(t), max(t) FROM (SELECT json_extract(data, '$.last_fetch_at') "
            "AS t FROM feeds) WHERE t > ?",
            "SELECT count(*), min(t), max(t) FROM (SELECT (data::jsonb->>'last_fetch_at')::float8 "
            "AS t FROM feeds) s WHERE t > ?",
            (moment,),
        )

    def settled(self, feeds: int) -> bool:
        """Every feed polled and nothing left queued (some entries end as duplicates)."""
        if self.backend.url is None and not self.path.exists():
            return False
        try:
            polled, queued = self._query(
                "SELECT (SELECT count(*) FROM feeds WHERE json_extract(data, "
                "'$.last_fetch_at') IS NOT NULL), (SELECT count(*) FROM frontier)",
                "SELECT (SELECT count(*) FROM feeds WHERE data::jsonb->>'last_fetch_at' "
                "IS NOT NULL), (SELECT count(*) FROM frontier)",
                (),
            )
        except (sqlite3.Error, psycopg.Error):
            return False  # not created yet
        return polled >= feeds and queued == 0

    def written(self) -> tuple[int, float | None, float | None]:
        return self._query(
            "SELECT count(*), min(committed_at), max(committed_at) FROM records WHERE done",
            "SELECT count(*), min(committed_at), max(committed_at) FROM records WHERE done",
            (),
        )

    def mark_all_due(self) -> None:
        if self.backend.url is None:
            conn = sqlite3.connect(self.path)
            conn.execute("UPDATE feeds SET next_due = 1, data = json_set(data, '$.next_due', 1.0)")
            conn.commit()
            conn.close()
            return
        with psycopg.connect(self.backend.url) as conn:
            conn.execute(
                "UPDATE feeds SET next_due = 1, data = jsonb_set(data::jsonb, '{next_due}', "
                "'1.0')::text"
            )


def configure(work: Path, feeds: list[str], backend: Backend, schedule: str) -> Path:
    config = work / "ingestor.yaml"
    write_config(config, feeds, pipeline="pipeline:\n  max_concurrent_feeds: 100\n")
    text = config.read_text().replace("schedule:\n  interval: 15m\n", schedule)
    if backend.url is not None:
        text = re.sub(r"state:\n  path: .*\n", f"state:\n  url: {backend.url}\n", text)
    config.write_text(text)
    return config


def start_daemons(config: Path, count: int, metrics_port: int) -> list[Daemon]:
    """Several daemons at once, each with its own /metrics port: (log, process)."""
    started: list[Daemon] = []
    for n in range(count):
        own = config.with_name(f"ingestor-{n}.yaml")
        own.write_text(
            config.read_text().replace(
                "feeds:\n",
                f"metrics:\n  enabled: true\n  port: {metrics_port + n}\n"
                "extraction:\n  workers: 1\nfeeds:\n",
                1,
            )
        )
        log = config.with_name(f"daemon-{n}.log")
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "ingestor", "run", "--config", str(own)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append((log, process))
    return started


def main_cpu_when_running(daemons: list[Daemon]) -> dict[int, float]:
    """Each daemon's main-process CPU once it logs that it runs (start-up excluded)."""
    cpu: dict[int, float] = {}
    deadline = time.monotonic() + 120
    while len(cpu) < len(daemons) and time.monotonic() < deadline:
        for log, process in daemons:
            if process.pid not in cpu and "ingestor running" in log.read_text():
                cpu[process.pid] = cpu_and_rss(process.pid)[0]
        time.sleep(0.01)
    return cpu


def scrape_round_trips(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        match = re.match(r'ingestor_state_round_trips_total\{kind="([^"]+)"\} (\S+)', line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def stop(daemons: list[Daemon]) -> None:
    for _log, process in daemons:
        process.send_signal(signal.SIGTERM)
    for _log, process in daemons:
        process.wait(60)


def measure(
    backend: Backend, config: Path, done: Callable[[], bool], port: int
) -> dict[str, float]:
    daemons = start_daemons(config, backend.instances, port)
    try:
        start_cpu = main_cpu_when_running(daemons)
        deadline = time.monotonic() + 600
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
        finished = time.time()
        cpu = sum(cpu_and_rss(p.pid)[0] - start_cpu.get(p.pid, 0.0) for _l, p in daemons)
        trips: dict[str, float] = {}
        for n in range(len(daemons)):
            for call, count in scrape_round_trips(port + n).items():
                trips[call] = trips.get(call, 0.0) + count
    finally:
        stop(daemons)
    return {"cpu": cpu, "finished": finished, **{f"rt:{k}": v for k, v in trips.items()}}


def round_trips(figures: dict[str, float], calls: tuple[str, ...] | None = None) -> float:
    """Round trips summed over these store calls (all of them without `calls`)."""
    return sum(
        count
        for key, count in figures.items()
        if key.startswith("rt:") and (calls is None or key[3:] in calls)
    )


def backends(cluster: Cluster, counts: list[int]) -> list[Backend]:
    made = [Backend("SQLite", 1, None)]
    for n, instances in enumerate(counts):
        name = f"bench{n}_{int(time.time())}"
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        made.append(Backend(f"PostgreSQL x{instances}", instances, cluster.url(name)))
    return made


def polls(args: argparse.Namespace, root: Path, cluster: Cluster) -> list[str]:
    spec = FarmSpec(
        hosts=50,
        feeds=0,
        items=0,
        poll_feeds=args.poll_feeds,
        latency=(0, 0),
        fault_rate=args.poll_fault_rate,
    )
    lines = [
        f"### Unchanged-feed polls (304): {args.poll_feeds} feeds on 50 hosts, all due at once "
        f"({args.poll_fault_rate:.1%} answer 429/503 once, which pauses their host)",
        "",
        "| state | instances | polls/s (all) | polls/s per instance | main CPU per poll | "
        "round trips per poll |",
        "|---|---|---|---|---|---|",
    ]
    base_rate = None
    for backend in backends(cluster, [1, 2, 3]):
        work = fresh_dir(root, f"poll-{backend.name.replace(' ', '')}")
        # A short tick: the daemon hands out due feeds at each tick (and the bench wants
        # the polling cost, not the tick).
        schedule = "schedule:\n  interval: 15m\n  tick: 20ms\n"
        with FarmServer(spec) as content:
            config = configure(work, content.poll_urls(False), backend, schedule)
            run_ingestor(config, work)  # the first pass: validators stored
            port = content.port
        progress = Progress(backend, work)
        progress.mark_all_due()
        since = time.time()
        # A new farm on the same port: its faults (429/503 once) hit the measured polls.
        with FarmServer(replace(spec, port=port)):
            figures = measure(
                backend,
                config,
                lambda p=progress, s=since: p.polled_since(s)[0] >= args.poll_feeds,
                9300,
            )
        count, first, _last = progress.polled_since(since)
        # Until every feed was polled once (a faulted feed's poll after its Retry-After
        # counts as a second poll, not as the end of the pass).
        rate = count / max(figures["finished"] - first, 1e-6)
        trips = round_trips(figures, POLL_CALLS)
        base_rate = base_rate or rate
        lines.append(
            f"| {backend.name.split()[0]} | {backend.instances} | {rate:.0f} | "
            f"{rate / backend.instances:.0f} ({rate / backend.instances / base_rate:.0%} "
            f"of SQLite) | {figures['cpu'] / count * 1000:.2f} ms | {trips / count:.2f} |"
        )
        print(lines[-1], flush=True)
    return lines


def articles(args: argparse.Namespace, root: Path, cluster: Cluster) -> list[str]:
    spec = FarmSpec(hosts=6, feeds=args.feeds, items=args.items, fault_rate=args.fault_rate)
    total = args.feeds * args.items
    lines = [
        f"### Articles: {args.feeds} feeds x {args.items} items on 6 hosts ({total} articles, "
        f"one extraction worker per daemon; {args.fault_rate:.0%} of pages and feeds answer "
        "429/503 once)",
        "",
        "| state | instances | articles/s | main CPU per article | article round trips per "
        "article | all round trips per article |",
        "|---|---|---|---|---|---|",
    ]
    for backend in backends(cluster, [1, 2, 3]):
        # A farm per configuration: each meets the faults afresh.
        with FarmServer(spec) as content:
            work = fresh_dir(root, f"articles-{backend.name.replace(' ', '')}")
            # New feeds start within min(interval, 60 s); re-polls of these unchanged feeds
            # every 5 s cost little beside the articles.
            schedule = "schedule:\n  interval: 5s\n  min_interval: 5s\n  adaptive: false\n"
            config = configure(work, content.feed_urls(), backend, schedule)
            progress = Progress(backend, work)
            figures = measure(
                backend,
                config,
                lambda p=progress: p.settled(args.feeds),
                9400,
            )
            count, first, last = progress.written()
            rate = count / max(last - first, 1e-6)
            article_trips = round_trips(figures, ARTICLE_CALLS)
            all_trips = round_trips(figures)
            lines.append(
                f"| {backend.name.split()[0]} | {backend.instances} | {rate:.1f} | "
                f"{figures['cpu'] / count * 1000:.1f} ms | {article_trips / count:.2f} | "
                f"{all_trips / count:.2f} |"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--poll-feeds", type=int, default=3000)
    parser.add_argument("--feeds", type=int, default=24)
    parser.add_argument("--items", type=int, default=15)
    parser.add_argument("--only", choices=("polls", "articles"), default=None)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--poll-fault-rate", type=float, default=0.005)
    args = parser.parse_args()
    if args.quick:
        args.poll_feeds, args.feeds, args.items = 500, 6, 10
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    with (
        tempfile.TemporaryDirectory(prefix="ingestor-fleet-") as tmp,
        running_cluster(bin_dir) as cluster,
    ):
        root = Path(tmp)
        sections: list[str] = []
        if args.only in (None, "polls"):
            sections += [*polls(args, root, cluster), ""]
        if args.only in (None, "articles"):
            sections += articles(args, root, cluster)
        print("\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
