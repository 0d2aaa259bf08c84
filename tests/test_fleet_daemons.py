"""Several real daemons on one PostgreSQL over a loopback farm of several hosts: they divide
the work, a kill -9 loses nothing once its leases lapse, nothing is written twice, and the
hosts never see more concurrent requests than per_host_connections."""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request
from pathlib import Path

from aiohttp import web

from tests.conftest import article_html, distinct_story, ingestor_cli, read_records, rss
from tests.journal_checks import check_journal
from tests.test_daemon import Farm, start_daemon, wait_for

PER_HOST = 2


class CountingFarm(Farm):
    """A Farm on its own loopback address that counts the requests it is serving at once."""

    def __init__(self, feeds: int, items: int, latency: tuple[float, float]) -> None:
        super().__init__(feeds, items, latency)
        self.now = 0
        self.most = 0
        self.requests = 0
        self.app.middlewares.append(self.count)

    @web.middleware
    async def count(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        self.now += 1
        self.requests += 1
        self.most = max(self.most, self.now)
        try:
            return await handler(request)
        finally:
            self.now -= 1


def fleet_config(path: Path, pg_url: str, feed_urls: list[str], extra: str = "") -> None:
    feeds = "".join(f"  - url: {u}\n" for u in feed_urls)
    path.write_text(
        f"output:\n  dir: out\nstate:\n  url: {pg_url}\n  lease_ttl: 3s\n"
        "http:\n  allowed_networks: ['127.0.0.0/8']\n  retries: 0\n"
        f"  per_host_connections: {PER_HOST}\n"
        "schedule:\n  interval: 20s\n  min_interval: 10s\n  tick: 200ms\n  adaptive: false\n"
        "extraction:\n  workers: 1\nmetrics:\n  enabled: true\n  port: 0\n"
        "pipeline:\n  article_concurrency: 8\n  queue_size: 16\n  shutdown_grace: 5s\n"
        f"{extra}feeds:\n{feeds}"
    )


async def test_three_daemons_share_the_work_and_survive_a_kill_9(tmp_path, serve, pg_url):
    farms = [CountingFarm(feeds=2, items=12, latency=(0.05, 0.15)) for _ in range(3)]
    for n, farm in enumerate(farms):
        farm.base = await serve(farm.app, host=f"127.0.0.{n + 2}")
    urls = [u for farm in farms for u in farm.feed_urls()]
    total = sum(f.feeds * f.items for f in farms)
    config = tmp_path / "ingestor.yaml"
    fleet_config(config, pg_url, urls)
    out = tmp_path / "out"

    def written() -> int:
        return len(list(out.rglob("*.json"))) if out.exists() else 0

    logs = [tmp_path / f"daemon{n}.log" for n in range(3)]
    daemons = [await start_daemon(config, log) for log in logs]
    try:
        assert await wait_for(lambda: written() >= total // 4, 60, 0.02), logs[0].read_text()
        daemons[0].kill()  # mid-run: it holds leases on feeds, articles and hosts
        await daemons[0].wait()
        assert await wait_for(lambda: written() >= total, 90), logs[1].read_text()[-3000:]
        await asyncio.sleep(4.0)  # past lease_ttl: a late takeover would write twice now
        # Each instance serves its own /metrics, named by its instance id.
        port = int(re.search(r"metrics on http://127.0.0.1:(\d+)/", logs[1].read_text())[1])
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        )
        assert f':{daemons[1].pid}"}} 1' in metrics  # ingestor_instance_info{instance=host:pid}
        assert 'ingestor_state_round_trips_total{kind="claim_due_feeds"}' in metrics
        for daemon in daemons[1:]:
            daemon.send_signal(signal.SIGTERM)
        for daemon in daemons[1:]:
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
    finally:
        for daemon in daemons:
            if daemon.returncode is None:
                daemon.kill()
    records = read_records(out)
    expected = {f"Story {f}-{i}" for f in range(2) for i in range(12)}
    by_host: dict[str, list[str]] = {}
    for record in records:
        by_host.setdefault(record["url"].split("/")[2], []).append(record["title"])
    assert len(records) == total and len({r["id"] for r in records}) == total
    assert all(sorted(titles) == sorted(expected) for titles in by_host.values()), by_host
    # Each instance did part of the work, and no host was sent more than it allows.
    texts = [log.read_text() for log in logs]
    assert all("instance" in t for t in texts)
    assert [farm.most for farm in farms] <= [PER_HOST] * 3 and all(f.most for f in farms)
    assert max(f.most for f in farms) <= PER_HOST, [f.most for f in farms]
    status = await ingestor_cli("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    assert "polled by:" in status.stdout and "article frontier: empty" in status.stdout


async def test_two_run_once_race_on_a_shared_url_and_a_near_duplicate_pair(tmp_path, serve, pg_url):
    story = distinct_story(4242, paragraphs=6)
    near = [*story[:-1], story[-1] + " One sentence was added to this copy."]
    pages = {"/shared.html": story, "/copy.html": near}

    async def page(request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        title = "Shared story" if request.path == "/shared.html" else "Copied story"
        return web.Response(text=article_html(title, pages[request.path]), content_type="text/html")

    app = web.Application()
    for path in pages:
        app.router.add_get(path, page)
    article_base = await serve(app, host="127.0.0.9")
    # The copy lives on another host: hosts are leased one instance at a time, so this is
    # what lets two instances finish the pair at the same moment.
    copy_base = await serve(app, host="127.0.0.12")

    def feed_app(links: list[str]) -> web.Application:
        async def feed(_request: web.Request) -> web.Response:
            items = [
                {"title": f"Item {n}", "link": link, "guid": link} for n, link in enumerate(links)
            ]
            return web.Response(body=rss(items), content_type="application/rss+xml")

        feeds = web.Application()
        feeds.router.add_get("/feed.xml", feed)
        return feeds

    first = await serve(feed_app([f"{article_base}/shared.html"]), host="127.0.0.10")
    second = await serve(
        feed_app([f"{article_base}/shared.html", f"{copy_base}/copy.html"]), host="127.0.0.11"
    )
    config = tmp_path / "ingestor.yaml"
    fleet_config(config, pg_url, [f"{first}/feed.xml", f"{second}/feed.xml"])
    runs = await asyncio.gather(
        *(ingestor_cli("run", "--once", "--config", str(config)) for _ in range(2))
    )
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    records = read_records(tmp_path / "out")
    assert sorted(r["url"].rsplit("/", 1)[1] for r in records) == ["copy.html", "shared.html"]
    # Whichever finished first is the original; the other is marked, never both or neither.
    first_done, second_done = sorted(records, key=lambda r: r["duplicate_of"] is not None)
    assert first_done["duplicate_of"] is None
    assert second_done["duplicate_of"] == first_done["id"]


async def test_migrate_state_keeps_the_history_and_the_next_run_writes_nothing_twice(
    tmp_path, serve, pg_url
):
    farm = Farm(feeds=2, items=4)
    farm.base = await serve(farm.app)
    sqlite_config = tmp_path / "one-machine.yaml"
    fleet_config(sqlite_config, pg_url, farm.feed_urls())
    text = sqlite_config.read_text().replace(f"url: {pg_url}", "path: state/ingestor.db")
    sqlite_config.write_text(text)
    first = await ingestor_cli("run", "--once", "--config", str(sqlite_config))
    assert first.returncode == 0, first.stderr
    out = tmp_path / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    assert len(before) == 8

    state = tmp_path / "state" / "ingestor.db"
    moved = await ingestor_cli("migrate-state", "--from", str(state), "--to", pg_url)
    assert moved.returncode == 0, moved.stderr
    assert "2 feeds" in moved.stdout and "8 records" in moved.stdout
    again = await ingestor_cli("migrate-state", "--from", str(state), "--to", pg_url)
    assert again.returncode != 0 and "moved by migrate-state" in again.stderr
    # The old state is retired: a run on it would write seqs 9 on a second time.
    old = await ingestor_cli("run", "--once", "--config", str(sqlite_config))
    assert old.returncode == 1 and "moved by migrate-state (to postgresql://" in old.stderr
    assert len(old.stderr.strip().splitlines()) == 1, old.stderr

    farm.items = 6  # two new entries per feed since the move
    fleet = tmp_path / "fleet.yaml"
    fleet_config(fleet, pg_url, farm.feed_urls())
    second = await ingestor_cli("run", "--once", "--config", str(fleet))
    assert second.returncode == 0, second.stderr
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    assert len(after) == 12
    # The records written before the move were neither written again nor duplicated.
    assert {p: after[p] for p in before} == before
    titles = sorted(r["title"] for r in read_records(out))
    assert titles == sorted(f"Story {f}-{i}" for f in range(2) for i in range(6))
    # The validators came along: the second run's feed fetches were conditional.
    assert farm.hits == {"feed0": 2, "feed1": 2}
    # The journal goes on where the one machine's left it: seq 9 onwards, one order.
    lines = check_journal(out)
    assert [line["seq"] for line in lines] == list(range(1, 13))
    assert [line["op"] for line in lines] == ["create"] * 12
