"""The whole pipeline, in process, against feed and article servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import sqlite3
import time
from dataclasses import replace

import jsonschema
from aiohttp import web

from ingestor.config.model import DedupConfig, FeedConfig, HTTPConfig
from ingestor.core.record import record_schema
from ingestor.http.fetcher import Fetcher
from ingestor.pipeline.orchestrator import Pipeline
from ingestor.sink.files import FileSink
from ingestor.store.sqlite import SQLiteStateStore
from tests.conftest import (
    LOREM_EN,
    article_html,
    distinct_story,
    make_config,
    read_records,
    rss,
)


class Site:
    """A tiny news site: /feed.xml plus article pages, with hit counters."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        self.pages: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self.handle)
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        self.hits[path] = self.hits.get(path, 0) + 1
        if path in self.status:
            return web.Response(status=self.status[path])
        if path == "/feed.xml":
            etag = f'"{len(self.items)}"'
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304)
            body = rss(
                [{k: v.replace("BASE", self.base) for k, v in i.items()} for i in self.items],
                extra="<language>en</language>",
            )
            return web.Response(
                body=body, content_type="application/rss+xml", headers={"ETag": etag}
            )
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /private/\n")
        if path in self.pages:
            return web.Response(text=self.pages[path], content_type="text/html")
        return web.Response(status=404)


@contextlib.asynccontextmanager
async def in_process_pipeline(config, worker_pool):
    """The real pipeline on a SQLite state, not started: (pipeline, store)."""
    store = SQLiteStateStore(config.state.path)
    await store.open()
    try:
        async with Fetcher(config.http) as fetcher:
            yield (
                Pipeline(
                    config,
                    fetcher=fetcher,
                    pool=worker_pool,
                    store=store,
                    sink=FileSink(config.output.dir),
                ),
                store,
            )
    finally:
        await store.close()


async def run_pass(config, worker_pool):
    async with in_process_pipeline(config, worker_pool) as (pipeline, _store):
        await pipeline.start()
        try:
            summary = await asyncio.wait_for(pipeline.run_once(config.feeds), 60)
        finally:
            await pipeline.stop()
    return summary, pipeline


def story(n: int) -> list[str]:
    return distinct_story(n)


async def test_full_pass_writes_valid_records_and_second_pass_writes_nothing(
    tmp_path, serve, worker_pool
):
    site = Site()
    site.base = await serve(site.app)
    for n in range(3):
        site.pages[f"/a/{n}.html"] = article_html(f"Headline {n}", story(n))
        site.items.append(
            {
                "title": f"Headline {n}",
                "link": f"BASE/a/{n}.html",
                "guid": f"g{n}",
                "pubDate": "Tue, 02 Jan 2024 10:00:00 GMT",
                "description": f"Summary {n}",
            }
        )
    config = make_config(tmp_path, [f"{site.base}/feed.xml"])
    summary, _ = await run_pass(config, worker_pool)
    assert (summary.written, summary.failed, summary.duplicates) == (3, 0, 0)
    records = read_records(config.output.dir)
    assert sorted(r["title"] for r in records) == ["Headline 0", "Headline 1", "Headline 2"]
    for record in records:
        jsonschema.validate(record, record_schema())
        assert record["language"] == "en" and record["extraction_method"] == "trafilatura"
        assert record["published_at"] == "2024-01-02T10:00:00Z"
        assert record["text"].split("\n\n")[0] in {story(n)[0] for n in range(3)}
        assert record["feed_url"] == f"{site.base}/feed.xml"
        assert record["summary"].startswith("Summary")
    # The second pass: 304 (ETag), nothing parsed, nothing written.
    summary, pipeline = await run_pass(config, worker_pool)
    assert summary.written == 0 and summary.not_modified == 1
    assert len(read_records(config.output.dir)) == 3
    assert pipeline.metrics.count("feeds_not_modified") == 1
    assert site.hits["/a/0.html"] == 1


async def test_url_level_duplicates_across_feeds_are_one_record(tmp_path, serve, worker_pool):
    one, two = Site(), Site()
    one.base = await serve(one.app)
    two.base = await serve(two.app, host="127.0.0.1")
    one.pages["/a/x.html"] = article_html("Shared", story(7))
    one.items.append({"title": "Shared", "link": "BASE/a/x.html", "guid": "1"})
    two.items.append(
        {
            "title": "Shared again",
            "link": f"{one.base}/a/x.html?utm_source=two&amp;fbclid=abc#frag",
            "guid": "2",
        }
    )
    two.items.append({"title": "Shared twice", "link": f"{one.base}/a/x.html", "guid": "3"})
    config = make_config(tmp_path, [f"{one.base}/feed.xml", f"{two.base}/feed.xml"])
    summary, _ = await run_pass(config, worker_pool)
    records = read_records(config.output.dir)
    assert len(records) == 1 and summary.duplicates == 2
    assert one.hits["/a/x.html"] == 1
    # Restart: still known.
    two.items.append({"title": "Later", "link": f"{one.base}/a/x.html?utm_medium=x", "guid": "4"})
    summary, _ = await run_pass(config, worker_pool)
    assert len(read_records(config.output.dir)) == 1 and summary.duplicates == 1


async def test_near_duplicates_are_marked_or_dropped(tmp_path, serve, worker_pool):
    site = Site()
    site.base = await serve(site.app)
    original = story(1)
    copy = [
        *original[:2],
        original[2].replace("several shop owners", "many shop owners"),
        *original[3:],
        "The wire service added this closing paragraph to the story.",
    ]
    site.pages["/a/orig.html"] = article_html("Original", original)
    site.pages["/a/copy.html"] = article_html("Copy", copy)
    site.pages["/a/other.html"] = article_html(
        "Other",
        story(2)[:1]
        + [
            "A completely different report about the harbour and its ferries, written for "
            "another audience, with its own facts, figures and quotes from the captain."
        ]
        * 3,
    )
    site.items = [{"title": "Original", "link": "BASE/a/orig.html", "guid": "o"}]
    config = make_config(
        tmp_path,
        [f"{site.base}/feed.xml"],
        pipeline=replace(make_config(tmp_path, []).pipeline, article_concurrency=1),
    )
    await run_pass(config, worker_pool)
    site.items += [
        {"title": "Copy", "link": "BASE/a/copy.html", "guid": "c"},
        {"title": "Other", "link": "BASE/a/other.html", "guid": "x"},
    ]
    summary, _ = await run_pass(config, worker_pool)
    by_title = {r["title"]: r for r in read_records(config.output.dir)}
    assert by_title["Copy"]["duplicate_of"] == by_title["Original"]["id"]
    assert by_title["Copy"]["duplicate_kind"] == "near"
    assert by_title["Original"]["duplicate_of"] is None
    assert by_title["Other"]["duplicate_of"] is None

    # The Original as an older version fingerprinted it (MinHash scheme 1): a copy
    # ingested now is still found to be its near duplicate.
    from ingestor.analyze.fingerprint import fingerprint, legacy_scheme_id
    from ingestor.store.sqlite_schema import register_fingerprint

    old = fingerprint(by_title["Original"]["text"], legacy=True)
    with sqlite3.connect(config.state.path) as conn:
        register_fingerprint(
            conn,
            by_title["Original"]["id"],
            legacy_scheme_id(128, 0.5),
            old.legacy_signature,
            old.legacy_band_keys,
            time.time() - 3600,  # when it was ingested: before the Copy
        )
    site.items.append({"title": "Copy 2", "link": "BASE/a/copy2.html", "guid": "c2"})
    site.pages["/a/copy2.html"] = article_html("Copy 2", copy[1:])
    await run_pass(config, worker_pool)
    by_title = {r["title"]: r for r in read_records(config.output.dir)}
    assert by_title["Copy 2"]["duplicate_of"] == by_title["Original"]["id"]
    assert by_title["Copy 2"]["duplicate_kind"] == "near"

    drop = make_config(
        tmp_path / "drop",
        [f"{site.base}/feed.xml"],
        dedup=DedupConfig(near_duplicates="drop"),
        pipeline=config.pipeline,
    )
    site.items = site.items[:1]
    await run_pass(drop, worker_pool)
    site.items = [site.items[0], {"title": "Copy", "link": "BASE/a/copy.html", "guid": "c"}]
    summary, _ = await run_pass(drop, worker_pool)
    assert [r["title"] for r in read_records(drop.output.dir)] == ["Original"]
    assert summary.duplicates == 1


async def test_exact_duplicate_body_under_another_url(tmp_path, serve, worker_pool):
    site = Site()
    site.base = await serve(site.app)
    site.pages["/a/1.html"] = article_html("Same", story(3))
    site.pages["/b/1.html"] = article_html("Same", story(3))
    site.items = [
        {"title": "Same", "link": "BASE/a/1.html", "guid": "1"},
        {"title": "Same", "link": "BASE/b/1.html", "guid": "2"},
    ]
    config = make_config(tmp_path, [f"{site.base}/feed.xml"])
    await run_pass(config, worker_pool)
    records = read_records(config.output.dir)
    kinds = sorted(str(r["duplicate_kind"]) for r in records)
    assert kinds == ["None", "exact"]


async def test_failures_fall_back_to_feed_text_and_nothing_disappears(tmp_path, serve, worker_pool):
    site = Site()
    site.base = await serve(site.app)
    site.status["/a/broken.html"] = 403  # permanent: no retry (5xx retries: test_frontier)
    site.items = [
        {
            "title": "Broken page",
            "link": "BASE/a/broken.html",
            "guid": "b",
            "description": "Only the summary is known.",
        },
        {
            "title": "Robots says no",
            "link": "BASE/private/p.html",
            "guid": "p",
            "description": "Private summary.",
        },
        {"title": "Gone page", "link": "BASE/a/missing.html", "guid": "m"},
    ]
    config = make_config(tmp_path, [f"{site.base}/feed.xml"])
    _summary, pipeline = await run_pass(config, worker_pool)
    records = {r["title"]: r for r in read_records(config.output.dir)}
    assert set(records) == {"Broken page", "Robots says no", "Gone page"}
    # No page: the record carries the feed's own text (here its description), or nothing.
    assert records["Broken page"]["summary"] == "Only the summary is known."
    assert records["Broken page"]["text"] == "Only the summary is known."
    assert records["Robots says no"]["text"] == "Private summary."
    assert records["Broken page"]["extraction_method"] == "feed_summary"
    assert (records["Gone page"]["text"], records["Gone page"]["extraction_method"]) == (
        "",
        "none",
    )
    assert site.hits.get("/private/p.html") is None
    assert pipeline.metrics.count("article_errors", "robots") == 1


async def test_fetch_articles_false_uses_feed_content(tmp_path, serve, worker_pool):
    site = Site()
    site.base = await serve(site.app)
    body = " ".join(LOREM_EN)
    site.items = [
        {
            "title": "Feed only",
            "link": "BASE/a/never.html",
            "guid": "f",
            "description": f"&lt;p&gt;{body}&lt;/p&gt;",
        }
    ]
    feed = FeedConfig(url=f"{site.base}/feed.xml", fetch_articles=False, tags=("local",))
    config = make_config(tmp_path, [feed])
    await run_pass(config, worker_pool)
    (record,) = read_records(config.output.dir)
    assert site.hits.get("/a/never.html") is None
    assert record["url"] == f"{site.base}/a/never.html"
    assert record["feed_tags"] == ["local"]
    assert record["summary"] == body


async def test_feed_errors_are_per_feed_and_410_disables(tmp_path, serve, worker_pool):
    good, bad = Site(), Site()
    good.base = await serve(good.app)
    bad.base = await serve(bad.app, host="127.0.0.1")
    good.pages["/a/1.html"] = article_html("Good", story(4))
    good.items = [{"title": "Good", "link": "BASE/a/1.html", "guid": "1"}]
    bad.status["/feed.xml"] = 410
    config = make_config(
        tmp_path, [f"{good.base}/feed.xml", f"{bad.base}/feed.xml", f"{good.base}/missing.xml"]
    )
    summary, pipeline = await run_pass(config, worker_pool)
    assert summary.written == 1 and summary.failed == 2
    assert any("HTTP 410" in e for e in summary.errors)
    assert any(f"{good.base}/missing.xml" in e and "HTTP 404" in e for e in summary.errors)
    gone = pipeline.states[f"{bad.base}/feed.xml"]
    assert gone.disabled_reason and "410" in gone.disabled_reason
    summary, _ = await run_pass(config, worker_pool)
    assert bad.hits["/feed.xml"] == 1  # disabled: not polled again


async def test_permanent_redirect_is_persisted(tmp_path, serve, worker_pool):
    site = Site()
    site.base = await serve(site.app)

    async def moved(_r: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(f"{site.base}/feed.xml")

    site.app.router._resources.insert(0, site.app.router._resources.pop())  # keep catch-all
    old_app = web.Application()
    old_app.router.add_get("/old.xml", moved)
    old = await serve(old_app)
    config = make_config(tmp_path, [f"{old}/old.xml"])
    _, pipeline = await run_pass(config, worker_pool)
    assert pipeline.states[f"{old}/old.xml"].effective_url == f"{site.base}/feed.xml"
    await run_pass(config, worker_pool)
    store = SQLiteStateStore(config.state.path)
    await store.open()
    states = await store.load_feeds()
    await store.close()
    assert states[f"{old}/old.xml"].effective_url == f"{site.base}/feed.xml"


async def test_article_on_blocked_address_is_never_contacted(tmp_path, serve, worker_pool):
    site = Site()
    site.base = await serve(site.app)
    internal = Site()
    internal.base = await serve(internal.app, host="127.0.0.2")
    internal.pages["/admin"] = "<html><body>secret</body></html>"
    site.items = [
        {"title": "Evil", "link": f"{internal.base}/admin", "guid": "e", "description": "bait"}
    ]
    config = make_config(
        tmp_path,
        [f"{site.base}/feed.xml"],
        http=HTTPConfig(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),), retries=0),
    )
    _, pipeline = await run_pass(config, worker_pool)
    assert internal.hits == {}
    (record,) = read_records(config.output.dir)
    assert record["text"] == "bait" and "secret" not in json.dumps(record)
    assert record["extraction_method"] == "feed_summary"
    assert pipeline.metrics.count("article_errors", "blocked_address") == 1


def atom(entries: list[tuple[str, str, str]]) -> bytes:
    """(id, link, updated) triples as an Atom feed."""
    body = "".join(
        f"<entry><id>{i}</id><title>Live</title><link href='{link}'/>"
        f"<updated>{updated}</updated></entry>"
        for i, link, updated in entries
    )
    return (
        "<?xml version='1.0'?><feed xmlns='http://www.w3.org/2005/Atom'><title>Live</title>"
        f"<id>urn:live</id><updated>2024-01-01T00:00:00Z</updated>{body}</feed>"
    ).encode()


async def test_changed_article_is_re_emitted_only_when_updates_are_on(tmp_path, serve, worker_pool):
    state = {"updated": "2024-01-01T10:00:00Z", "story": 11}
    hits = {"page": 0}

    async def feed(_r: web.Request) -> web.Response:
        link = f"{base}/a/live.html"
        return web.Response(
            body=atom([("urn:1", link, state["updated"])]), content_type="application/atom+xml"
        )

    async def page(_r: web.Request) -> web.Response:
        hits["page"] += 1
        return web.Response(
            text=article_html("Live", distinct_story(state["story"])), content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/feed.atom", feed)
    app.router.add_get("/a/live.html", page)
    base = await serve(app)
    off = make_config(tmp_path / "off", [f"{base}/feed.atom"])
    on = make_config(tmp_path / "on", [f"{base}/feed.atom"], dedup=DedupConfig(updates=True))
    for config in (off, on):
        await run_pass(config, worker_pool)
    (first,) = read_records(on.output.dir)
    assert first["updated_at"] is None

    state.update(updated="2024-01-01T12:00:00Z", story=12)  # a rewritten story
    for config in (off, on):
        await run_pass(config, worker_pool)
    (kept,) = read_records(off.output.dir)
    (updated,) = read_records(on.output.dir)
    assert kept["text"] == first["text"]  # updates off: never re-fetched
    assert updated["id"] == first["id"] and updated["updated_at"] is not None
    assert updated["text"] != first["text"]
    assert hits["page"] == 3

    state.update(updated="2024-01-01T13:00:00Z")  # a new timestamp, same body
    summary, pipeline = await run_pass(on, worker_pool)
    (same,) = read_records(on.output.dir)
    assert same == updated and summary.written == 0
    assert pipeline.metrics.count("articles_updated") == 0


async def test_rel_canonical_on_the_same_site_makes_two_urls_one_article(
    tmp_path, serve, worker_pool
):
    site = Site()
    site.base = await serve(site.app)
    head = f'<link rel="canonical" href="{site.base}/story/42">'
    for path in ("/amp/42.html", "/print/42.html"):
        site.pages[path] = article_html("Canonical", story(42), extra_head=head)
    site.pages["/other/1.html"] = article_html(
        "Foreign canonical",
        story(43),
        extra_head='<link rel="canonical" href="https://elsewhere.example/x">',
    )
    site.items = [
        {"title": "Canonical", "link": "BASE/amp/42.html", "guid": "a"},
        {"title": "Canonical", "link": "BASE/print/42.html", "guid": "b"},
        {"title": "Foreign canonical", "link": "BASE/other/1.html", "guid": "c"},
    ]
    config = make_config(tmp_path, [f"{site.base}/feed.xml"])
    await run_pass(config, worker_pool)
    records = {r["title"]: r for r in read_records(config.output.dir)}
    assert len(records) == 2
    assert records["Canonical"]["canonical_url"] == f"{site.base}/story/42"
    # A canonical link to another site is not trusted.
    assert records["Foreign canonical"]["canonical_url"] == f"{site.base}/other/1.html"


async def test_a_burst_of_entries_keeps_page_fetches_bounded(tmp_path, serve, worker_pool):
    """Backpressure: a feed with hundreds of new entries never has more article pages in
    flight than article_concurrency, whatever the per-host connection limit allows."""
    site = Site()
    in_flight = peak = 0

    async def page(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            n = int(request.match_info["n"])
            return web.Response(text=article_html(f"Burst {n}", story(n)), content_type="text/html")
        finally:
            in_flight -= 1

    app = web.Application()
    app.router.add_get("/burst/{n}.html", page)
    app.router.add_get("/{path:.*}", site.handle)
    site.base = await serve(app)
    entries = 300
    site.items = [
        {"title": f"Burst {n}", "link": f"BASE/burst/{n}.html", "guid": f"b{n}"}
        for n in range(entries)
    ]
    defaults = make_config(tmp_path, [])
    config = make_config(
        tmp_path,
        [f"{site.base}/feed.xml"],
        http=replace(defaults.http, per_host_connections=64, max_connections=64),
        pipeline=replace(defaults.pipeline, article_concurrency=3, queue_size=4),
    )
    summary, _ = await run_pass(config, worker_pool)
    assert summary.written == entries and summary.failed == 0
    assert 1 <= peak <= 3


async def test_a_parse_cut_short_by_the_worker_time_limit_is_redone_on_the_next_poll(
    tmp_path, serve, worker_pool
):
    """The feed's validators are stored only with a body that was parsed: after a parse
    that hit the worker time limit, the next poll must not send them and get a 304."""
    site = Site()
    site.base = await serve(site.app)
    site.items = [
        {"title": f"Item {n}", "guid": f"g{n}", "description": f"Body {n}"} for n in range(800)
    ]
    feed = FeedConfig(url=f"{site.base}/feed.xml", fetch_articles=False)
    config = make_config(tmp_path, [feed])
    from ingestor.analyze.pool import WorkerPool

    with WorkerPool(workers=1, task_timeout=0.01) as hasty:
        summary, pipeline = await run_pass(config, hasty)
    assert summary.failed == 1 and "time limit" in summary.errors[0]
    assert pipeline.states[feed.url].etag is None
    # The daemon's next poll, once the error backoff is over.
    store = SQLiteStateStore(config.state.path)
    await store.open()
    try:
        async with Fetcher(config.http) as fetcher:
            pipeline = Pipeline(
                config,
                fetcher=fetcher,
                pool=worker_pool,
                store=store,
                sink=FileSink(config.output.dir),
            )
            await pipeline.start()
            try:
                outcome = await pipeline.poll_feed(feed)
            finally:
                await pipeline.stop()
    finally:
        await store.close()
    assert (outcome.status.value, outcome.new_entries) == ("ok", 800)
    assert pipeline.states[feed.url].etag == '"800"'


async def test_quiet_small_feeds_are_parsed_without_starting_the_workers(tmp_path, serve):
    """A pass over feeds of a few KB (here: no items) never needs a worker process, so a
    pass of quiet feeds never starts them; a feed of 800 items (about 100 KB) does go to
    a worker, whose time limit guards the event loop."""
    from ingestor.analyze.pool import WorkerPool

    class CountingPool(WorkerPool):
        parses = 0

        async def run(self, function, *args, timeout=None):
            CountingPool.parses += function.__name__ == "parse_feed_job"
            return await super().run(function, *args, timeout=timeout)

    site = Site()
    site.base = await serve(site.app)
    site.items = []
    feed = FeedConfig(url=f"{site.base}/feed.xml", fetch_articles=False)
    config = make_config(tmp_path, [feed])
    with CountingPool(workers=1) as pool:
        summary, pipeline = await run_pass(config, pool)
        assert (summary.failed, summary.errors, CountingPool.parses) == (0, [], 0)
        assert pipeline.states[feed.url].title
        site.items = [{"title": f"Item {n}", "guid": f"g{n}"} for n in range(800)]
        summary, _pipeline = await run_pass(config, pool)
    assert (summary.failed, summary.queued, CountingPool.parses) == (0, 800, 1)
