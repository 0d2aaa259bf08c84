"""The durable article frontier: its rules as tables, its store contract, and what a user
sees on loopback hosts that answer 429/503 the way real sites under load do."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import random
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from aiohttp import web

from ingestor.config.model import FeedConfig, PipelineConfig
from ingestor.core import frontier, payload
from ingestor.core.entry import Enclosure, FeedEntry
from ingestor.core.frontier import Fallback, HostView, Retry
from ingestor.core.state import ArticleLookup, DedupQuery, FeedState, PollCommit
from ingestor.core.urls import TrackingParams
from ingestor.errors import (
    BlockedAddressError,
    ConnectError,
    FetchTimeoutError,
    HostBackoffError,
    HTTPStatusError,
    RateLimitedError,
    RobotsDisallowedError,
    TooLargeError,
    UnsupportedContentError,
)
from ingestor.service.status import collect_status
from ingestor.store.sqlite import SQLiteStateStore
from tests.conftest import article_html, distinct_story, loopback_http, make_config, read_records
from tests.conftest import rss as rss_bytes
from tests.test_pipeline import run_pass
from tests.test_store_contract import _items

NOW = 1_700_000_000.0

# --- the rules, as tables ---


@pytest.mark.parametrize(
    ("error", "attempts", "expected"),
    [
        # Not sent at all: the host was already waiting; no attempt is used up.
        (HostBackoffError("u", NOW + 7), 2, Retry(NOW + 7, 2, "", None)),
        # Retry-After: back exactly then, and the whole host waits too.
        (RateLimitedError("u", 429, NOW + 3), 0, Retry(NOW + 3, 1, "", NOW + 3)),
        (RateLimitedError("u", 503, NOW + 5), 1, Retry(NOW + 5, 2, "", NOW + 5)),
        # Transient: backoff for the item only.
        (HTTPStatusError("u", 503), 0, "backoff"),
        (HTTPStatusError("u", 500), 3, "backoff"),
        (ConnectError("u", "reset"), 0, "backoff"),
        (FetchTimeoutError("u", "timed out"), 0, "backoff"),
        # A bare 429 still pauses the host.
        (HTTPStatusError("u", 429), 0, "host-pause"),
        # Permanent: the feed's text at once.
        (HTTPStatusError("u", 404), 0, Fallback),
        (HTTPStatusError("u", 410), 0, Fallback),
        (HTTPStatusError("u", 403), 0, Fallback),
        (RobotsDisallowedError("u", "robots"), 0, Fallback),
        (TooLargeError("u", "big"), 0, Fallback),
        (BlockedAddressError("u", "private"), 0, Fallback),
        (UnsupportedContentError("u", "pdf"), 0, Fallback),
        # The last allowed attempt failed: the feed's text, naming the last error.
        (HTTPStatusError("u", 503), 4, Fallback),
        (RateLimitedError("u", 429, NOW + 3), 4, Fallback),
    ],
)
def test_what_a_failed_fetch_means(error, attempts, expected):
    decision = frontier.after_failure(
        error, attempts, max_attempts=5, base_delay=60.0, now=NOW, rng=random.Random(1)
    )
    if expected is Fallback:
        assert isinstance(decision, Fallback)
        assert error.reason in decision.reason
        if attempts == 4:
            assert "gave up after 5 attempts" in decision.reason
    elif expected == "backoff":
        assert isinstance(decision, Retry) and decision.host_not_before is None
        assert decision.attempts == attempts + 1
        assert NOW + 0.79 * 60 * 4**attempts <= decision.not_before <= NOW + 1.21 * 60 * 4**attempts
    elif expected == "host-pause":
        assert isinstance(decision, Retry) and decision.attempts == 1
        assert decision.host_not_before is not None and decision.host_not_before >= NOW + 30
    else:
        assert isinstance(decision, Retry)
        assert (decision.not_before, decision.attempts, decision.host_not_before) == (
            expected.not_before,
            expected.attempts,
            expected.host_not_before,
        )


def test_the_default_attempts_span_more_than_an_hour_even_with_unlucky_jitter():
    class Low(random.Random):
        def uniform(self, a, b):
            return a

    config = PipelineConfig()
    waits = [
        frontier.retry_delay(n, config.article_retry_delay, Low())
        for n in range(1, config.max_article_attempts)
    ]
    assert sum(waits) > 3600
    assert waits[0] < config.once_max_wait  # a first retry is waited out by run --once


def test_hosts_are_served_earliest_due_first_without_starving_anyone():
    hosts = {
        "big:80": HostView(earliest_due=NOW - 100),  # 5,000 items waiting for an hour
        "small:80": HostView(earliest_due=NOW - 1),
        "busy:80": HostView(earliest_due=NOW - 50, in_flight=2),  # at its limit
        "waiting:80": HostView(earliest_due=NOW - 90, wait_until=NOW + 2),  # Retry-After
        "spaced:80": HostView(earliest_due=NOW - 80, next_dispatch=NOW + 0.5),
        "later:80": HostView(earliest_due=NOW + 10),
        frontier.NO_FETCH_HOST: HostView(earliest_due=NOW - 5),
    }
    plan = frontier.plan_claims(hosts, NOW, capacity=5, per_host=2, spaced={})
    assert plan == [("big:80", 2), (frontier.NO_FETCH_HOST, 2), ("small:80", 1)]
    # A host with a minimum spacing gets one item at a time.
    plan = frontier.plan_claims(hosts, NOW, capacity=5, per_host=2, spaced={"big:80": True})
    assert plan[0] == ("big:80", 1)
    assert frontier.plan_claims(hosts, NOW, capacity=0, per_host=2, spaced={}) == []
    assert frontier.next_wakeup(hosts, 2, {}) == NOW - 100
    assert frontier.next_wakeup({"w": HostView(NOW - 9, wait_until=NOW + 3)}, 2, {}) == NOW + 3


def test_a_pass_is_settled_only_when_nothing_is_due_soon():
    soon = {"h": HostView(earliest_due=NOW - 1, wait_until=NOW + 30)}
    later = {"h": HostView(earliest_due=NOW - 1, wait_until=NOW + 600)}
    assert not frontier.settled(soon, in_flight=0, now=NOW, max_wait=120)
    assert frontier.settled(later, in_flight=0, now=NOW, max_wait=120)
    assert not frontier.settled(later, in_flight=1, now=NOW, max_wait=120)
    assert frontier.settled({}, in_flight=0, now=NOW, max_wait=120)


def test_an_entry_survives_the_trip_through_the_store_as_json():
    entry = FeedEntry(
        key="guid:1",
        link="https://news.example/a?utm_source=x",
        title="Ünïcode title",
        summary="s",
        content="c\n\nd",
        authors=("A", "B"),
        tags=("t",),
        published=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        updated=None,
        enclosures=(Enclosure("https://news.example/a.mp3", "audio/mpeg", 12),),
    )
    (item,) = frontier.plan_items(
        "feed",
        [(entry, False)],
        fetch_articles=True,
        feed_title="Feed",
        feed_language="de",
        tracking=TrackingParams(),
        now=NOW,
    )
    assert item.canonical_url == "https://news.example/a" and item.host == "news.example:443"
    assert payload.decode_payload(item.payload) == (entry, "Feed", "de", None)
    (no_fetch,) = frontier.plan_items(
        "feed",
        [(replace(entry, link=None), False)],
        fetch_articles=True,
        feed_title=None,
        feed_language=None,
        tracking=TrackingParams(),
        now=NOW,
    )
    assert no_fetch.host == frontier.NO_FETCH_HOST
    assert no_fetch.canonical_url.startswith("feed#entry-")


# --- the SQLite store's own frontier behaviour ---


async def test_a_dead_process_leases_come_back_when_the_state_is_reopened(tmp_path):
    store = SQLiteStateStore(tmp_path / "s.db")
    await store.open()
    await store.commit_poll(PollCommit(FeedState(feed_id="f"), _items("f", 2)))
    claimed = await store.claim_articles([("h:80", 2)], NOW, NOW + 3600)
    assert len(claimed.items) == 2
    await store.close()  # as after kill -9: the items were never committed
    store = SQLiteStateStore(tmp_path / "s.db")
    await store.open()
    try:
        assert len((await store.claim_articles([("h:80", 9)], NOW, NOW + 60)).items) == 2
    finally:
        await store.close()


async def test_a_state_written_by_the_previous_release_migrates_and_keeps_its_history(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE feeds (feed_id TEXT PRIMARY KEY, data TEXT NOT NULL,
                            next_due REAL NOT NULL DEFAULT 0);
        CREATE TABLE entries (feed_id TEXT NOT NULL, entry_key TEXT NOT NULL,
            seen_at REAL NOT NULL, record_id TEXT, entry_updated REAL,
            PRIMARY KEY (feed_id, entry_key)) WITHOUT ROWID;
        CREATE TABLE records (record_id TEXT PRIMARY KEY, canonical_url TEXT NOT NULL UNIQUE,
            location TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, content_hash TEXT,
            feed_id TEXT, first_ingested REAL NOT NULL, committed_at REAL);
        CREATE TABLE fingerprints (record_id TEXT PRIMARY KEY, scheme TEXT NOT NULL,
            signature BLOB NOT NULL, ingested_at REAL NOT NULL);
        CREATE TABLE lsh_bands (band_key INTEGER NOT NULL, record_id TEXT NOT NULL,
            PRIMARY KEY (band_key, record_id)) WITHOUT ROWID;
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO feeds VALUES ('f', '{"feed_id": "f", "etag": "\\"e\\"", "items": 7}', 5);
        INSERT INTO entries VALUES ('f', 'old-key', 1.0, 'r1', NULL);
        INSERT INTO records VALUES ('r1', 'http://h/a', '2024/01/01/r1.json', 1, 'sha256:x',
                                    'f', 1.0, 1.0);
        """
    )
    conn.commit()
    conn.close()
    reader = SQLiteStateStore(path, read_only=True)  # `status` before the first run
    await reader.open()
    assert (await reader.frontier_summary(NOW)).size == 0
    await reader.close()
    store = SQLiteStateStore(path)
    await store.open()
    try:
        assert (await store.load_feeds())["f"].etag == '"e"'
        assert (await store.load_feeds())["f"].items == 7
        assert await store.entry_versions("f", ["old-key"]) == {"old-key": (None, None)}
        assert (await store.record_by_canonical("http://h/a")).done
        await store.commit_poll(PollCommit(FeedState(feed_id="f"), _items("f", 1)))
        assert (await store.frontier_summary(NOW)).size == 1
        version = store.conn.execute("SELECT value FROM meta WHERE key='schema_version'")
        assert version.fetchone()[0] == "6"
        # Version 4: records may be deleted by retention; the old one is not.
        assert not (await store.record_by_canonical("http://h/a")).deleted
        assert await store.journal_since(0, 10) == []
        # Version 3's content claims come from the records already written.
        same_body = DedupQuery("sha256:x", "s", [], 0.0)
        lookup = ArticleLookup("r2", "http://h/b", "loc/r2.json", NOW, same_body)
        assert (await store.prepare_article(lookup)).exact == "r1"
    finally:
        await store.close()


# --- what a user sees ---


class NewsHost:
    """One news site on its own loopback address: a feed with an ETag, robots.txt and
    article pages; `page_status(n, hit)` may answer an error instead of the page."""

    def __init__(self, name: str, items: int, crawl_delay: int = 0) -> None:
        self.name = name
        self.items = items
        self.crawl_delay = crawl_delay
        self.page_status = lambda n, hit: None
        self.feed_status = lambda: None
        self.robots_status = lambda: None
        self.page_hits: list[tuple[float, int]] = []  # (arrival time, item)
        self.feed_hits: list[int] = []  # status answered
        self.base = ""
        self.link_base = ""  # where the feed's links point: this host unless set
        self.app = web.Application()
        self.app.router.add_get("/feed.xml", self.feed)
        self.app.router.add_get("/robots.txt", self.robots)
        self.app.router.add_get("/a/{n}.html", self.page)

    async def start(self, serve, address: str) -> NewsHost:
        self.base = await serve(self.app, host=address)
        return self

    async def feed(self, request: web.Request) -> web.Response:
        answer = self.feed_status()
        if answer is not None:
            return web.Response(status=answer[0], headers=answer[1])
        etag = f'"{self.items}"'
        if request.headers.get("If-None-Match") == etag:
            self.feed_hits.append(304)
            return web.Response(status=304)
        self.feed_hits.append(200)
        items = [
            {
                "title": f"{self.name} story {n}",
                "link": f"{self.link_base or self.base}/a/{n}.html",
                "guid": f"{self.name}-{n}",
                "description": f"Summary of {self.name} story {n}.",
            }
            for n in range(self.items)
        ]
        return web.Response(
            body=rss_bytes(items, title=self.name),
            content_type="application/rss+xml",
            headers={"ETag": etag},
        )

    async def robots(self, _request: web.Request) -> web.Response:
        answer = self.robots_status()
        if answer is not None:
            return web.Response(status=answer[0], headers=answer[1])
        delay = f"Crawl-delay: {self.crawl_delay}\n" if self.crawl_delay else ""
        return web.Response(text=f"User-agent: *\n{delay}Allow: /\n")

    async def page(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        self.page_hits.append((time.time(), n))
        answer = self.page_status(n, sum(1 for _t, i in self.page_hits if i == n))
        if answer is not None:
            status, headers = answer
            return web.Response(status=status, headers=headers)
        html = article_html(f"{self.name} story {n}", distinct_story(hash(self.name) % 997 + n))
        return web.Response(text=html, content_type="text/html")

    @property
    def feed_url(self) -> str:
        return f"{self.base}/feed.xml"


def farm_config(tmp_path, hosts, **pipeline):
    defaults = make_config(tmp_path, [])
    return make_config(
        tmp_path,
        [FeedConfig(url=h.feed_url) for h in hosts],
        http=loopback_http(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),)),
        pipeline=replace(defaults.pipeline, **pipeline),
    )


async def test_a_page_retry_after_delays_only_that_host_and_one_pass_writes_everything(
    tmp_path, serve, worker_pool
):
    busy = await NewsHost("busy", 30).start(serve, "127.0.0.2")
    calm = await NewsHost("calm", 10).start(serve, "127.0.0.3")
    told: list[float] = []

    def first_page_is_rate_limited(n, hit):
        if not told:
            told.append(time.time())
            return 429, {"Retry-After": "2"}
        return None

    busy.page_status = first_page_is_rate_limited
    config = farm_config(tmp_path, [busy, calm])
    summary, pipeline = await run_pass(config, worker_pool)
    assert summary.written == 40 and summary.left == 0
    assert len(read_records(config.output.dir)) == 40
    # Nothing reached the busy host while it had asked us to wait (a request already on
    # its way when the 429 was sent may arrive just after it).
    early = [t for t, _n in busy.page_hits if told[0] + 0.05 < t < told[0] + 2.0]
    assert early == []
    # Its feed's validators were stored in the same pass: the next poll is a 304.
    assert pipeline.states[busy.feed_url].etag == '"30"'
    summary, _ = await run_pass(config, worker_pool)
    assert busy.feed_hits[-1] == 304 and calm.feed_hits[-1] == 304
    assert summary.written == 0 and summary.not_modified == 2


async def test_queued_articles_stay_queued_across_a_restart_and_the_feed_answers_304(
    tmp_path, serve, worker_pool
):
    """A host that asks for ten minutes: the pass ends (exit 0) with its items queued and
    says why; the next run polls its unchanged feed as a 304, and a restart during the
    Retry-After sends nothing to that host."""
    slow = await NewsHost("slow", 5).start(serve, "127.0.0.4")
    slow.page_status = lambda n, hit: (503, {"Retry-After": "600"})
    # The feed comes from another host (a CDN), which has not asked us to wait.
    cdn = await NewsHost("slow", 5).start(serve, "127.0.0.14")
    cdn.link_base = slow.base
    config = farm_config(tmp_path, [cdn])
    summary, _ = await run_pass(config, worker_pool)
    assert summary.written == 0 and summary.left == 5
    assert any("5 queued" in line and "HTTP 503" in line for line in summary.left_why)
    hits = len(slow.page_hits)
    assert hits <= 2  # the first answer, and at most one request already on its way
    summary, _ = await run_pass(config, worker_pool)  # a new process: fresh limiter
    assert cdn.feed_hits == [200, 304]
    assert len(slow.page_hits) == hits and summary.left == 5
    feeds, hosts = await collect_status(config)
    assert feeds[0]["queued"] == 5 and "503" in feeds[0]["queue_last_error"]
    assert hosts[0]["queued"] == 5 and hosts[0]["due"] > time.time() + 500


async def test_a_page_failing_forever_gets_its_fallback_record_after_the_attempts(
    tmp_path, serve, worker_pool, caplog
):
    down = await NewsHost("down", 2).start(serve, "127.0.0.5")
    down.page_status = lambda n, hit: (503, {}) if n == 0 else None
    config = farm_config(tmp_path, [down], max_article_attempts=3, article_retry_delay=0.05)
    with caplog.at_level(logging.INFO, logger="ingestor"):
        summary, _ = await run_pass(config, worker_pool)
    assert summary.written == 2 and summary.left == 0 and summary.fallbacks == 1
    assert sum(1 for _t, n in down.page_hits if n == 0) == 3
    records = {r["title"]: r for r in read_records(config.output.dir)}
    failed = records["down story 0"]
    assert failed["extraction_method"] == "feed_summary"
    assert failed["text"] == failed["summary"] == "Summary of down story 0."
    assert records["down story 1"]["extraction_method"] == "trafilatura"
    assert any(
        "gave up after 3 attempts" in r.getMessage() and "HTTP 503" in r.getMessage()
        for r in caplog.records
    )
    feeds, _hosts = await collect_status(config)
    failure = feeds[0]["last_article_failure"]
    assert failure["url"].endswith("/a/0.html") and "HTTP 503" in failure["error"]


async def test_a_slow_host_with_a_thousand_items_does_not_hold_up_the_others(
    tmp_path, serve, worker_pool
):
    slow = await NewsHost("slow", 1000, crawl_delay=1).start(serve, "127.0.0.6")
    quick = [await NewsHost(f"q{i}", 15).start(serve, f"127.0.0.{7 + i}") for i in range(2)]
    config = farm_config(tmp_path, [slow, *quick], article_concurrency=4)
    from ingestor.http.fetcher import Fetcher
    from ingestor.pipeline.orchestrator import Pipeline
    from ingestor.sink.files import FileSink

    store = SQLiteStateStore(config.state.path)
    await store.open()
    async with Fetcher(config.http) as fetcher:
        pipeline = Pipeline(
            config, fetcher=fetcher, pool=worker_pool, store=store, sink=FileSink(config.output.dir)
        )
        await pipeline.start()
        try:
            started = time.monotonic()
            for feed in config.feeds:
                await pipeline.poll_feed(feed, force=True)

            def quick_written() -> int:
                return sum(1 for r in read_records(config.output.dir) if r["title"].startswith("q"))

            deadline = time.monotonic() + 30
            while quick_written() < 30 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            took = time.monotonic() - started
            slow_pages = len(slow.page_hits)
        finally:
            await pipeline.stop()
            await store.close()
    assert quick_written() == 30, took
    # The slow host was served at its own pace meanwhile, never more than one per second.
    assert 1 <= slow_pages <= took + 2
    starts = sorted(t for t, _n in slow.page_hits)
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(starts))


async def test_a_feed_that_asks_to_wait_is_polled_again_in_the_same_pass(
    tmp_path, serve, worker_pool
):
    """A feed answering 429 with Retry-After: 1 four times in a row (its host busy with
    other work) is still ingested by one `run --once` pass; a Cache-Control lifetime, on
    the other hand, is not waited for."""
    pages = await NewsHost("pages", 3).start(serve, "127.0.0.15")
    feed = await NewsHost("pages", 3).start(serve, "127.0.0.16")
    feed.link_base = pages.base
    refusals = {"left": 4}

    def busy_feed():
        if refusals["left"] > 0:
            refusals["left"] -= 1
            return 429, {"Retry-After": "1"}
        return None

    feed.feed_status = busy_feed
    config = farm_config(tmp_path, [feed])
    started = time.monotonic()
    summary, _ = await run_pass(config, worker_pool)
    assert summary.written == 3 and summary.failed == 0, summary
    assert time.monotonic() - started >= 4.0  # it did wait each time it was asked to


async def test_a_robots_txt_that_asks_to_wait_pauses_its_host_instead_of_forbidding_it(
    tmp_path, serve, worker_pool
):
    """A site under load answers robots.txt like its pages: 503 with Retry-After. The
    host waits (nothing reaches it meanwhile), then its pages are fetched as usual; a
    robots.txt that keeps failing counts as a disallow for now and is retried, and only
    after the attempts do the articles get the feed's text."""
    busy = await NewsHost("robots", 4).start(serve, "127.0.0.17")
    told: list[float] = []

    def robots_busy_once():
        if not told:
            told.append(time.time())
            return 503, {"Retry-After": "2"}
        return None

    busy.robots_status = robots_busy_once
    config = farm_config(tmp_path, [busy])
    summary, _ = await run_pass(config, worker_pool)
    assert summary.written == 4 and summary.fallbacks == 0, summary
    records = read_records(config.output.dir)
    assert {r["extraction_method"] for r in records} == {"trafilatura"}
    assert [t for t, _n in busy.page_hits if t < told[0] + 2.0] == []

    # A robots.txt that keeps failing: retried, and only then the feed's text.
    down = await NewsHost("robots-down", 2).start(serve, "127.0.0.18")
    down.robots_status = lambda: (500, {})
    config = farm_config(
        tmp_path / "down", [down], max_article_attempts=2, article_retry_delay=0.05
    )
    summary, _ = await run_pass(config, worker_pool)
    assert summary.written == 2 and summary.fallbacks == 2 and down.page_hits == []
    assert {r["extraction_method"] for r in read_records(config.output.dir)} == {"feed_summary"}
