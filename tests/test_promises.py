"""Older promises kept on input the team did not write at first (issue 25): a re-published
item is one article, a server's Retry-After is a date and never a failure streak, a pass
over a trickling host ends, and a feed removed from the configuration keeps its settings
for the items it queued. Real servers on loopback, the real pipeline."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import random
import time
from dataclasses import replace

from aiohttp import web

from ingestor.config.model import DedupConfig, FeedConfig, PipelineConfig, ScheduleConfig
from ingestor.core import schedule
from ingestor.core.state import FeedState
from ingestor.http.responses import parse_retry_after
from ingestor.service.status import feed_rows, render_table
from tests.conftest import article_html, distinct_story, loopback_http, make_config, read_records
from tests.test_pipeline import Site, in_process_pipeline, run_pass


async def poll_only(config, worker_pool) -> dict[str, FeedState]:
    """Poll each feed once (its items queued, no article worked); the stored states."""
    async with in_process_pipeline(config, worker_pool) as (pipeline, store):
        for feed in config.feeds:
            await pipeline.poll_feed(feed)
        return await store.load_feeds()


# --- one article per link, unless something tells the entries apart ---


async def test_a_republished_item_is_one_record_and_its_page_is_fetched(
    tmp_path, serve, worker_pool
):
    site = Site()
    site.base = await serve(site.app)
    site.pages["/news/barrier.html"] = article_html("Flood barrier finished", distinct_story(3))
    site.items.append(
        {
            "title": "Flood barrier finished",
            "link": "BASE/news/barrier.html",
            "guid": "cms-88213",
            "pubDate": "Thu, 17 Oct 2024 09:10:00 GMT",
        }
    )
    config = make_config(tmp_path, [f"{site.base}/feed.xml"], dedup=DedupConfig(updates=True))
    summary, _ = await run_pass(config, worker_pool)
    assert summary.written == 1
    # The CMS re-publishes it: same URL, a new guid and a later date, the old item kept.
    site.items.insert(
        0,
        {
            "title": "Flood barrier finished (updated)",
            "link": "BASE/news/barrier.html",
            "guid": "cms-88213-r2",
            "pubDate": "Thu, 17 Oct 2024 15:30:00 GMT",
        },
    )
    await run_pass(config, worker_pool)
    (record,) = read_records(config.output.dir)
    assert record["canonical_url"] == f"{site.base}/news/barrier.html"
    assert record["extraction_method"].startswith("trafilatura")
    assert record["text"].startswith(distinct_story(3)[0])
    # The page is the article's: fetched, never replaced by a feed-only record.
    assert 1 <= site.hits["/news/barrier.html"] <= 2


async def test_both_copies_in_a_first_poll_are_one_record(tmp_path, serve, worker_pool):
    site = Site()
    site.base = await serve(site.app)
    site.pages["/news/x.html"] = article_html("Ferry timetable", distinct_story(4))
    for guid, date in (
        ("r2", "Fri, 18 Oct 2024 08:00:00 GMT"),
        ("r1", "Thu, 17 Oct 2024 08:00:00 GMT"),
    ):
        site.items.append(
            {"title": "Ferry timetable", "link": "BASE/news/x.html", "guid": guid, "pubDate": date}
        )
    config = make_config(tmp_path, [f"{site.base}/feed.xml"])
    summary, _ = await run_pass(config, worker_pool)
    (record,) = read_records(config.output.dir)
    assert summary.written == 1 and site.hits["/news/x.html"] == 1
    assert record["published_at"] == "2024-10-17T08:00:00Z"
    assert record["updated_at"] == "2024-10-18T08:00:00Z"


async def test_a_landing_page_shared_by_three_titles_gives_three_records(
    tmp_path, serve, worker_pool
):
    site = Site()
    site.base = await serve(site.app)
    for n, title in enumerate(("Storm: roads closed", "Storm: schools shut", "Storm: power back")):
        site.items.append(
            {
                "title": title,
                "link": "BASE/live/storm",
                "guid": f"live-{n}",
                "description": " ".join(distinct_story(10 + n)[:2]),
            }
        )
    config = make_config(tmp_path, [f"{site.base}/feed.xml"])
    await run_pass(config, worker_pool)
    records = read_records(config.output.dir)
    assert sorted(r["title"] for r in records) == [
        "Storm: power back",
        "Storm: roads closed",
        "Storm: schools shut",
    ]
    assert site.hits.get("/live/storm") is None


# --- a server's wait is a date ---


class WaitingFeed:
    """A feed that first answers 429/503 with Retry-After, then 200; it records when each
    request came and counts those inside the window it gave."""

    def __init__(self, status: int, clock_skew: float = 0.0, wait: int = 3) -> None:
        self.status = status
        self.skew = clock_skew  # the server's clock minus ours
        self.wait = wait
        self.requests: list[float] = []
        self.window_end = 0.0  # in our clock
        self.inside_window = 0
        self.app = web.Application()
        self.app.router.add_get("/feed.xml", self.feed)
        self.app.router.add_get("/{path:.*}", self.other)
        self.base = ""

    async def feed(self, request: web.Request) -> web.Response:
        now = time.time()
        self.requests.append(now)
        if len(self.requests) > 1 and now < self.window_end:
            self.inside_window += 1
        if len(self.requests) == 1:
            server_now = int(now + self.skew)
            if self.status == 429:
                # An HTTP-date in the server's clock, with the server's own Date header.
                until = server_now + self.wait
                self.window_end = until - self.skew
                value = email.utils.formatdate(until, usegmt=True)
            else:
                self.window_end = now + self.wait
                value = str(self.wait)
            headers = {
                "Retry-After": value,
                "Date": email.utils.formatdate(server_now, usegmt=True),
            }
            return web.Response(status=self.status, headers=headers)
        items = "".join(
            f"<item><title>Story {n}</title><link>{self.base}/a/{n}</link><guid>s{n}</guid>"
            f"<description>{distinct_story(20 + n)[0]}</description></item>"
            for n in range(2)
        )
        body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>W</title>{items}'
        body += "</channel></rss>"
        return web.Response(body=body.encode(), content_type="application/rss+xml")

    async def other(self, request: web.Request) -> web.Response:
        return web.Response(status=404)


async def test_a_503_retry_after_is_polled_again_after_the_wait_in_the_same_pass(
    tmp_path, serve, worker_pool
):
    feed = WaitingFeed(503, wait=3)
    feed.base = await serve(feed.app)
    config = make_config(tmp_path, [FeedConfig(url=f"{feed.base}/feed.xml", fetch_articles=False)])
    summary, pipeline = await run_pass(config, worker_pool)
    assert len(feed.requests) == 2
    assert feed.requests[1] - feed.requests[0] >= 3.0
    assert feed.inside_window == 0
    assert summary.written == 2
    # A stated wait is no failure streak: no error backoff follows it.
    state = pipeline.states[config.feeds[0].feed_id]
    assert state.error_count == 0 and state.next_due > time.time() + 60


async def test_a_feeds_retry_after_sets_its_next_poll_and_is_no_failure(
    tmp_path, serve, worker_pool
):
    feed = WaitingFeed(503, wait=3)
    feed.base = await serve(feed.app)
    config = make_config(tmp_path, [FeedConfig(url=f"{feed.base}/feed.xml", fetch_articles=False)])
    before = time.time()
    states = await poll_only(config, worker_pool)
    state = states[config.feeds[0].feed_id]
    # Due again when the server said (not after 15 minutes of error backoff).
    assert before + 3 <= state.next_due <= time.time() + 3.5
    assert state.error_count == 0 and "503" in (state.last_error or "")
    (row,) = feed_rows(config, states)
    assert "WAITING" in render_table([row]) and "FAILING" not in render_table([row])
    assert "due because:  the server asked to wait until then (Retry-After)" in render_table([row])


async def test_a_429_http_date_from_a_server_with_a_slow_clock_is_honoured(
    tmp_path, serve, worker_pool
):
    # The server's clock is 40 s behind ours: its HTTP-date, read against our clock, would
    # be in the past; against its own Date header it is a wait of 4 s.
    feed = WaitingFeed(429, clock_skew=-40.0, wait=4)
    feed.base = await serve(feed.app)
    config = make_config(tmp_path, [FeedConfig(url=f"{feed.base}/feed.xml", fetch_articles=False)])
    summary, _ = await run_pass(config, worker_pool)
    assert feed.inside_window == 0, feed.requests
    assert len(feed.requests) == 2 and summary.written == 2
    assert feed.requests[1] - feed.requests[0] >= 4.0


def test_retry_after_is_read_against_the_servers_date_and_rounded_up():
    now = 1_000_000.25
    assert parse_retry_after("3", now) == now + 3
    date = email.utils.formatdate(900_000, usegmt=True)
    later = email.utils.formatdate(900_006, usegmt=True)
    assert parse_retry_after(later, now, date) == now + 6
    # Without a Date header our own clock is all there is.
    assert parse_retry_after(email.utils.formatdate(1_000_010, usegmt=True), now) == now + 10
    # An absurd wait is clamped to a day.
    assert parse_retry_after("31536000", now) == now + 86400
    far = email.utils.formatdate(900_000 + 10 * 86400, usegmt=True)
    assert parse_retry_after(far, now, date) == now + 86400


def test_next_due_after_a_stated_wait_is_exactly_that_time():
    feed = FeedConfig(url="https://example.org/feed.xml")
    state = FeedState(feed_id=feed.url, error_count=0)
    config = ScheduleConfig()
    rng = random.Random(1)
    due = schedule.next_due(feed, state, config, 1000.0, rng, failed=True, server_wait=1003.0)
    assert due == 1003.0
    # Without a stated time a failure backs off from the interval.
    assert schedule.next_due(feed, replace(state, error_count=1), config, 1000.0, rng, True) > 1500


# --- every pass ends ---


class TricklingHost:
    """Pages that send their headers, then a byte every 0.5 s (for at most 60 s), and
    pages that answer at once."""

    def __init__(self, slow_paths: set[str], delay: float = 0.0) -> None:
        self.slow_paths = slow_paths
        self.delay = delay  # before each quick page
        self.hits: dict[str, int] = {}
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        if path in self.slow_paths:
            response = web.StreamResponse(headers={"Content-Type": "text/html"})
            await response.prepare(request)
            for _ in range(120):
                await response.write(b" ")
                await asyncio.sleep(0.5)
            return response
        await asyncio.sleep(self.delay)
        n = int(path.rsplit("/", 1)[1].split(".")[0])
        return web.Response(
            text=article_html(f"Story {n}", distinct_story(n)), content_type="text/html"
        )


async def test_a_trickling_host_does_not_hold_the_pass(tmp_path, serve, worker_pool):
    slow = TricklingHost({"/a/1.html", "/a/2.html"})
    slow_base = await serve(slow.app, host="127.0.0.2")
    # The other host keeps the pass busy a while after the trickling pages time out.
    fast = TricklingHost(set(), delay=0.5)
    fast_base = await serve(fast.app, host="127.0.0.3")
    site = Site()
    site.base = await serve(site.app)
    for n in range(1, 5):
        site.items.append(
            {"title": f"Slow host {n}", "link": f"{slow_base}/a/{n}.html", "guid": f"s{n}"}
        )
    for n in range(1, 13):
        site.items.append(
            {"title": f"Fast host {n}", "link": f"{fast_base}/a/{10 + n}.html", "guid": f"f{n}"}
        )
    config = make_config(
        tmp_path,
        [f"{site.base}/feed.xml"],
        http=loopback_http(
            allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),), article_timeout=2.0
        ),
        # Without the slow-host rule the timed-out pages would be retried within the wait.
        pipeline=PipelineConfig(queue_size=8, once_max_wait=60.0, article_retry_delay=5.0),
    )
    started = time.monotonic()
    summary, _ = await run_pass(config, worker_pool)
    took = time.monotonic() - started
    titles = {r["title"] for r in read_records(config.output.dir)}
    # Nothing that answers is lost: the slow host's other pages too.
    assert titles == {f"Fast host {n}" for n in range(1, 13)} | {"Slow host 3", "Slow host 4"}
    # Each trickling page was tried once (its 2 s timeout), never again in this pass.
    assert slow.hits["/a/1.html"] == 1 and slow.hits["/a/2.html"] == 1
    assert took < 15, took
    assert summary.left == 2
    (line,) = [w for w in summary.left_why if w.startswith("127.0.0.2")]
    assert "slow" in line and "timed out" in line


async def test_a_tarpit_host_is_given_up_for_the_pass_after_its_timeouts(
    tmp_path, serve, worker_pool
):
    tarpit = TricklingHost({f"/a/{n}.html" for n in range(1, 11)})
    tarpit_base = await serve(tarpit.app, host="127.0.0.4")
    site = Site()
    site.base = await serve(site.app)
    for n in range(1, 11):
        site.items.append(
            {"title": f"Tarpit {n}", "link": f"{tarpit_base}/a/{n}.html", "guid": f"t{n}"}
        )
    config = make_config(
        tmp_path,
        [f"{site.base}/feed.xml"],
        http=loopback_http(
            allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),), article_timeout=1.5
        ),
        pipeline=PipelineConfig(queue_size=8, once_max_wait=60.0, article_retry_delay=5.0),
    )
    started = time.monotonic()
    summary, _ = await run_pass(config, worker_pool)
    took = time.monotonic() - started
    # Two rounds of timeouts on its two connection slots, then the pass gives it up: ten
    # trickling pages do not cost ten timeouts.
    tried = sum(tarpit.hits.get(f"/a/{n}.html", 0) for n in range(1, 11))
    assert 3 <= tried <= 4, tarpit.hits
    assert took < 12, took
    assert summary.left == 10 and read_records(config.output.dir) == []


# --- a removed feed's items keep their settings ---


async def test_a_removed_feeds_queued_items_keep_its_settings(tmp_path, serve, worker_pool):
    site = Site()  # its robots.txt disallows /private/
    site.base = await serve(site.app)
    site.pages["/private/memo.html"] = article_html("Memo", distinct_story(30))
    site.items.append({"title": "Memo", "link": "BASE/private/memo.html", "guid": "m1"})
    feed = FeedConfig(url=f"{site.base}/feed.xml", name="Internal", respect_robots_txt=False)
    config = make_config(tmp_path, [feed])
    # Poll only: the item is queued, and the feed is then removed from the configuration.
    await poll_only(config, worker_pool)
    assert site.hits.get("/private/memo.html") is None
    removed = replace(config, feeds=())
    await run_pass(removed, worker_pool)
    (record,) = read_records(config.output.dir)
    assert site.hits["/private/memo.html"] == 1  # fetched: robots.txt was not to be asked
    assert record["extraction_method"].startswith("trafilatura")
    assert record["feed_name"] == "Internal"
