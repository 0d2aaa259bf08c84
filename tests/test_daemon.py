"""The real daemon process against a feed farm on loopback: signals, reload, kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from tests.conftest import article_html, distinct_story, ingestor_cli, read_records, rss


class Farm:
    """Feeds with `items` entries each; article pages answer after a little latency."""

    def __init__(self, feeds: int, items: int, latency: tuple[float, float] = (0.0, 0.0)):
        self.feeds = feeds
        self.items = items
        self.latency = latency
        self.hits: dict[str, int] = {}
        self.app = web.Application()
        self.app.router.add_get("/feed/{n}.xml", self.feed)
        self.app.router.add_get("/a/{feed}/{item}.html", self.article)
        self.app.router.add_get("/robots.txt", self.robots)
        self.base = ""

    async def robots(self, _request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n")

    async def feed(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        self.hits[f"feed{n}"] = self.hits.get(f"feed{n}", 0) + 1
        items = [
            {"title": f"Story {n}-{i}", "link": f"{self.base}/a/{n}/{i}.html", "guid": f"{n}-{i}"}
            for i in range(self.items)
        ]
        return web.Response(body=rss(items, title=f"Feed {n}"), content_type="application/rss+xml")

    async def article(self, request: web.Request) -> web.Response:
        feed, item = int(request.match_info["feed"]), int(request.match_info["item"])
        if self.latency[1]:
            await asyncio.sleep(random.uniform(*self.latency))
        html = article_html(f"Story {feed}-{item}", distinct_story(feed * 1000 + item))
        return web.Response(text=html, content_type="text/html")

    def feed_urls(self) -> list[str]:
        return [f"{self.base}/feed/{n}.xml" for n in range(self.feeds)]


def write_config(path: Path, feed_urls: list[str], extra: str = "") -> None:
    feeds = "".join(f"  - url: {u}\n" for u in feed_urls)
    path.write_text(
        "output:\n  dir: out\nstate:\n  path: state/ingestor.db\n"
        "http:\n  allowed_networks: ['127.0.0.1/32']\n  retries: 0\n"
        "schedule:\n  interval: 2s\n  min_interval: 1s\n  tick: 200ms\n  adaptive: false\n"
        "extraction:\n  workers: 2\n"
        "pipeline:\n  article_concurrency: 8\n  queue_size: 16\n  shutdown_grace: 5s\n"
        f"{extra}feeds:\n{feeds}"
    )


async def start_daemon(config: Path, log: Path, *extra: str) -> asyncio.subprocess.Process:
    # The child keeps its own copy of the log file descriptor.
    with open(log, "ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ingestor",
            "run",
            "--config",
            str(config),
            *extra,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


async def wait_for(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_sigterm_exits_cleanly_and_sighup_reloads(tmp_path, serve):
    farm = Farm(feeds=2, items=3)
    farm.base = await serve(farm.app)
    config = tmp_path / "ingestor.yaml"
    log = tmp_path / "daemon.log"
    write_config(config, farm.feed_urls()[:1])
    daemon = await start_daemon(config, log)
    try:
        assert await wait_for(lambda: len(read_records(tmp_path / "out")) == 3, 40), log.read_text()
        # A broken config is rejected; the daemon keeps running on the old one.
        config.write_text(config.read_text().replace("interval: 2s", "interval: often"))
        daemon.send_signal(signal.SIGHUP)
        assert await wait_for(lambda: "config reload rejected" in log.read_text(), 10)
        assert daemon.returncode is None
        write_config(config, farm.feed_urls())
        daemon.send_signal(signal.SIGHUP)
        assert await wait_for(lambda: len(read_records(tmp_path / "out")) == 6, 40), log.read_text()
        assert "schedule.interval: 'often' is not a duration" in log.read_text()
    finally:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(daemon.wait(), 30)
    assert code == 0, log.read_text()
    assert "stopped cleanly" in log.read_text()
    assert sorted(r["title"] for r in read_records(tmp_path / "out")) == [
        f"Story {f}-{i}" for f in range(2) for i in range(3)
    ]


async def test_kill_9_at_any_moment_loses_nothing_and_duplicates_nothing(tmp_path, serve):
    feeds, items = 5, 40
    total = feeds * items
    farm = Farm(feeds=feeds, items=items, latency=(0.02, 0.08))
    farm.base = await serve(farm.app)
    config = tmp_path / "ingestor.yaml"
    log = tmp_path / "daemon.log"
    write_config(config, farm.feed_urls())
    out = tmp_path / "out"
    invalid: list[str] = []

    def written() -> int:
        return len(list(out.rglob("*.json"))) if out.exists() else 0

    async def watch_output() -> None:
        # A consumer polling the directory must never see a partial or invalid record.
        while True:
            for path in out.rglob("*.json") if out.exists() else []:
                try:
                    json.loads(path.read_bytes())
                except (ValueError, OSError) as exc:
                    invalid.append(f"{path}: {exc}")
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_output())
    rng = random.Random(7)
    kills_mid_work = 0
    daemon = None
    try:
        for _round in range(10):
            before = written()
            if before >= total:
                break
            daemon = await start_daemon(config, log)
            # Kill while records are being written: right after the next one lands.
            await wait_for(lambda b=before: written() > b, 30, 0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            workers = descendants(daemon.pid)
            daemon.kill()
            await daemon.wait()
            assert len(workers) >= 2, (daemon.returncode, log.read_text()[-3000:])
            assert await wait_for(lambda w=workers: not any(alive(p) for p in w), 10), (
                "worker processes outlived the daemon"
            )
            kills_mid_work += 0 < written() < total
        daemon = await start_daemon(config, log)
        assert await wait_for(lambda: written() >= total, 90), log.read_text()[-3000:]
        await asyncio.sleep(1.0)
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0
    finally:
        watcher.cancel()
        if daemon is not None and daemon.returncode is None:
            daemon.kill()
    records = read_records(out)
    titles = [r["title"] for r in records]
    assert sorted(titles) == sorted({f"Story {f}-{i}" for f in range(feeds) for i in range(items)})
    assert len({r["id"] for r in records}) == total
    assert invalid == []
    assert all(r["duplicate_of"] is None for r in records)
    assert kills_mid_work >= 5, kills_mid_work  # the kills did interrupt the work


async def test_metrics_endpoint_json_logs_and_status_beside_the_daemon(tmp_path, serve):
    import re

    import aiohttp

    farm = Farm(feeds=1, items=2)
    farm.base = await serve(farm.app)
    config = tmp_path / "ingestor.yaml"
    log = tmp_path / "daemon.log"
    write_config(
        config,
        [*farm.feed_urls(), "http://127.0.0.1:9/unreachable.xml"],
        extra="metrics:\n  enabled: true\n  port: 0\n",
    )
    daemon = await start_daemon(config, log, "--log-format", "json")
    try:
        assert await wait_for(lambda: len(read_records(tmp_path / "out")) == 2, 40)
        assert await wait_for(lambda: "unreachable.xml" in log.read_text(), 20)
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        failure = next(line for line in lines if "unreachable.xml" in line["message"])
        assert failure["level"] == "warning" and "exception" not in failure
        port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", log.read_text()).group(1))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
        assert "ingestor_articles_written_total 2" in text
        assert 'ingestor_feed_errors_total{kind="connect"}' in text
        assert "ingestor_frontier_size 0" in text
        assert "ingestor_frontier_oldest_age_seconds" in text
        assert "ingestor_journal_last_seq 2" in text  # a consumer's lag is its cursor vs this
        assert "ingestor_record_publish_errors 0" in text
        assert 'ingestor_stage_seconds_count{stage="extract"} 2' in text
        status = await ingestor_cli("status", "--config", str(config), "--json", timeout=60)
        rows = {row["url"]: row for row in json.loads(status.stdout)}
        assert rows[farm.feed_urls()[0]]["items"] == 2
        assert rows["http://127.0.0.1:9/unreachable.xml"]["consecutive_failures"] >= 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0


async def test_kill_9_with_200_items_queued_writes_each_exactly_once_after_restart(tmp_path, serve):
    """The queued articles live in the state store: a daemon killed right after its first
    record, with ~200 items still queued, finishes them after a restart without
    re-reading the (unchanged) feeds and without writing anything twice."""
    feeds, items = 4, 50
    total = feeds * items
    farm = Farm(feeds=feeds, items=items, latency=(0.2, 0.4))
    farm.base = await serve(farm.app)
    config = tmp_path / "ingestor.yaml"
    log = tmp_path / "daemon.log"
    write_config(config, farm.feed_urls())
    config.write_text(
        config.read_text().replace("article_concurrency: 8", "article_concurrency: 2")
    )
    out = tmp_path / "out"

    def written() -> int:
        return len(list(out.rglob("*.json"))) if out.exists() else 0

    daemon = await start_daemon(config, log)
    try:
        assert await wait_for(
            lambda: log.read_text().count("new entries queued") == feeds and written() >= 1, 60
        ), log.read_text()[-3000:]
        daemon.kill()
        await daemon.wait()
        queued = await ingestor_cli("status", "--config", str(config), "--json", timeout=60)
        rows = json.loads(queued.stdout)
        assert sum(r["queued"] for r in rows) >= total - 20, rows
        daemon = await start_daemon(config, log)
        assert await wait_for(lambda: written() >= total, 120), log.read_text()[-3000:]
        await asyncio.sleep(0.5)
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0
    finally:
        if daemon.returncode is None:
            daemon.kill()
    records = read_records(out)
    assert len(records) == total
    assert sorted(r["title"] for r in records) == sorted(
        f"Story {f}-{i}" for f in range(feeds) for i in range(items)
    )
    # The restarted daemon found the work in the frontier: it parsed no feed again (each
    # unchanged feed was fetched and recognised by its body hash).
    assert "new entries queued" not in log.read_text().split("ingestor running")[-1]
