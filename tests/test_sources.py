"""Sources beyond a feed: `site:` entries (discovery), sitemaps (news, plain, indexes,
gzip), a feed's history (RFC 5005 archives, paged feeds) and a site's coverage, through
the real pipeline's `run --once` pass against loopback servers, each run twice: the second
pass must fetch no archive and write no record."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import jsonschema
from aiohttp import web

from ingestor.config.model import FeedConfig
from ingestor.core import sources
from ingestor.core.record import record_schema
from ingestor.core.state import FeedState
from ingestor.service.status import feed_rows, render_json, render_table
from tests.conftest import article_html, distinct_story, make_config, read_records
from tests.test_pipeline import run_pass

SITEMAP_NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
NEWS_NS = 'xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"'


class World:
    """One host: documents by path (ETags from their bytes), hits counted."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[bytes, str]] = {}
        self.hits: dict[str, int] = {}
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self.handle)
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path_qs
        self.hits[path] = self.hits.get(path, 0) + 1
        if path not in self.docs:
            return web.Response(status=404)
        body, media = self.docs[path]
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304)
        return web.Response(body=body, headers={"Content-Type": media, "ETag": etag})

    def page(self, n: int) -> str:
        path = f"/news/{n}.html"
        self.docs[path] = (article_html(f"Story {n}", distinct_story(n)).encode(), "text/html")
        return f"{self.base}{path}"

    def fetched(self, prefix: str) -> int:
        return sum(count for path, count in self.hits.items() if path.startswith(prefix))


def stamp(hours_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def news_sitemap(urls: list[str]) -> bytes:
    rows = "".join(
        f"<url><loc>{u}</loc><news:news><news:publication><news:name>W</news:name>"
        f"<news:language>en</news:language></news:publication>"
        f"<news:publication_date>{stamp(n + 1)}</news:publication_date>"
        f"<news:title>Story at {u}</news:title><news:keywords>world, politics</news:keywords>"
        f"</news:news></url>"
        for n, u in enumerate(urls)
    )
    return f'<?xml version="1.0"?><urlset {SITEMAP_NS} {NEWS_NS}>{rows}</urlset>'.encode()


def plain_sitemap(urls: list[tuple[str, str]]) -> bytes:
    rows = "".join(f"<url><loc>{u}</loc><lastmod>{m}</lastmod></url>" for u, m in urls)
    return f'<?xml version="1.0"?><urlset {SITEMAP_NS}>{rows}</urlset>'.encode()


def rss_of(urls: list[str], extra: str = "") -> bytes:
    items = "".join(
        f"<item><title>Story at {u}</title><link>{u}</link><guid>{u}</guid></item>" for u in urls
    )
    return (
        '<?xml version="1.0"?><rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">'
        f"<channel><title>W</title><link>http://w/</link>{extra}{items}</channel></rss>"
    ).encode()


def atom_of(urls: list[str], prev: str | None) -> bytes:
    link = f'<link rel="prev-archive" href="{prev}"/>' if prev else ""
    entries = "".join(
        f"<entry><id>{u}</id><title>Story at {u}</title><link href='{u}'/>"
        f"<updated>2026-01-01T00:00:00Z</updated></entry>"
        for u in urls
    )
    return (
        f'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>W</title>'
        f"<id>urn:w</id><updated>2026-01-01T00:00:00Z</updated>{link}{entries}</feed>"
    ).encode()


async def twice(config, worker_pool):
    first, pipeline = await run_pass(config, worker_pool)
    written = len(read_records(config.output.dir))
    second, again = await run_pass(config, worker_pool)
    assert second.written == 0 and len(read_records(config.output.dir)) == written
    return first, pipeline, again


async def test_a_site_is_read_through_its_feed_and_news_sitemap_with_coverage(
    tmp_path, serve, worker_pool
):
    w = World()
    w.base = await serve(w.app)
    urls = [w.page(n) for n in range(30)]
    w.docs["/"] = (
        b'<html><head><link rel="alternate" type="application/rss+xml" href="/rss.xml">'
        b'<link rel="alternate" type="application/rss+xml" title="Comments" '
        b'href="/comments/feed"></head><body>Home</body></html>',
        "text/html",
    )
    w.docs["/rss.xml"] = (rss_of(urls[:20]), "application/rss+xml")
    w.docs["/robots.txt"] = (f"Sitemap: {w.base}/news-sitemap.xml\n".encode(), "text/plain")
    w.docs["/news-sitemap.xml"] = (news_sitemap(urls), "application/xml")
    site = FeedConfig(url=f"{w.base}/", site=True, tags=("world",))
    config = make_config(tmp_path, [site])
    first, _pipeline, again = await twice(config, worker_pool)
    records = read_records(config.output.dir)
    assert first.written == 30 and len({r["canonical_url"] for r in records}) == 30
    assert all(r["feed_tags"] == ["world"] for r in records)  # the entry's options apply
    for record in records:
        jsonschema.validate(record, record_schema())
    assert w.hits.get("/comments/feed") is None
    state = again.states[site.feed_id]
    found = {url.removeprefix(w.base): why for url, _kind, why in state.discovery}
    assert found["/rss.xml"].startswith("used") and found["/news-sitemap.xml"].startswith("used")
    assert found["/comments/feed"] == "not used: a comment feed"
    counts = sources.coverage_counts(state.coverage, time.time())
    assert counts == {"feed_articles": 20, "sitemap_articles": 30, "missed_by_feeds": 10}
    assert sources.coverage_sentence(counts) == (
        "its feeds carried 20 of the 30 articles the site listed"
    )
    # Discovery runs at the first poll, then daily: not again in the second pass.
    assert w.hits["/"] == 1
    [row] = json.loads(render_json(feed_rows(config, again.states)))
    assert row["coverage"] == counts and row["site"] is True
    assert {s["url"].removeprefix(w.base): s["used"] for s in row["sources"]} == {
        "/rss.xml": True,
        "/comments/feed": False,
        "/news-sitemap.xml": True,
    }
    assert "its feeds carried 20 of the 30 articles" in render_table(
        feed_rows(config, again.states)
    )
    assert f'ingestor_site_missed_by_feeds{{site="{w.base}/"}} 10' in again.metrics.render()
    by_url = {r["url"]: r for r in records}
    from_sitemap_only = by_url[urls[25]]
    assert from_sitemap_only["tags"][:2] == ["world", "politics"]
    assert from_sitemap_only["backfill"] is False


async def test_a_sitemap_index_with_a_news_and_a_plain_sitemap(tmp_path, serve, worker_pool):
    w = World()
    w.base = await serve(w.app)
    news = [w.page(n) for n in range(15)]
    recent = [(w.page(100 + n), stamp(3 + n)) for n in range(10)]
    old = [(w.page(200 + n), "2024-11-01") for n in range(5)]
    w.docs["/sitemap-news.xml"] = (news_sitemap(news), "application/xml")
    w.docs["/sitemap-pages.xml.gz"] = (
        gzip.compress(plain_sitemap(recent + old)),
        "application/octet-stream",
    )
    w.docs["/sitemap.xml"] = (
        (
            f'<?xml version="1.0"?><sitemapindex {SITEMAP_NS}>'
            f"<sitemap><loc>{w.base}/sitemap-news.xml</loc></sitemap>"
            f"<sitemap><loc>{w.base}/sitemap-pages.xml.gz</loc><lastmod>{stamp(2)}</lastmod>"
            f"</sitemap></sitemapindex>"
        ).encode(),
        "application/xml",
    )
    config = make_config(tmp_path, [f"{w.base}/sitemap.xml"])
    first, _pipeline, _again = await twice(config, worker_pool)
    assert (first.written, first.failed) == (25, 0)
    fetched = {r["url"] for r in read_records(config.output.dir)}
    assert not fetched & {u for u, _ in old}
    assert w.fetched("/news/20") == 0  # the two-year-old pages were never fetched


async def test_an_atom_feed_with_three_archive_documents_is_backfilled_once(
    tmp_path, serve, worker_pool
):
    w = World()
    w.base = await serve(w.app)
    urls = [w.page(n) for n in range(40)]
    for n in range(3):  # archive n holds stories 10(n+1) .. 10(n+1)+9
        prev = f"{w.base}/archive/{n + 1}.xml" if n < 2 else None
        w.docs[f"/archive/{n}.xml"] = (
            atom_of(urls[10 * (n + 1) : 10 * (n + 2)], prev),
            "application/atom+xml",
        )
    w.docs["/feed.atom"] = (atom_of(urls[:10], f"{w.base}/archive/0.xml"), "application/atom+xml")
    feed = FeedConfig(url=f"{w.base}/feed.atom", backfill=100)
    config = make_config(tmp_path, [feed])
    first, _pipeline, again = await twice(config, worker_pool)
    records = read_records(config.output.dir)
    assert first.written == 40
    assert sum(r["backfill"] for r in records) == 30
    assert all(w.hits[f"/archive/{n}.xml"] == 1 for n in range(3))  # never fetched again
    assert again.states[feed.url].backfilled


async def test_an_rss_feed_paged_with_next_links(tmp_path, serve, worker_pool):
    w = World()
    w.base = await serve(w.app)
    urls = [w.page(n) for n in range(30)]
    for page in range(3):
        nxt = f'<atom:link rel="next" href="{w.base}/rss?page={page + 2}"/>' if page < 2 else ""
        path = "/rss" if page == 0 else f"/rss?page={page + 1}"
        w.docs[path] = (rss_of(urls[10 * page : 10 * page + 10], nxt), "application/rss+xml")
    config = make_config(tmp_path, [FeedConfig(url=f"{w.base}/rss", backfill=100)])
    first, _pipeline, _again = await twice(config, worker_pool)
    assert first.written == 30
    assert w.hits["/rss?page=2"] == 1 and w.hits["/rss?page=3"] == 1


async def test_a_site_without_feed_links_is_found_at_the_usual_path(tmp_path, serve, worker_pool):
    w = World()
    w.base = await serve(w.app)
    urls = [w.page(n) for n in range(3)]
    w.docs["/"] = (b"<html><head><title>Home</title></head><body>Hi</body></html>", "text/html")
    w.docs["/feed"] = (rss_of(urls), "application/rss+xml")
    site = FeedConfig(url=f"{w.base}/", site=True)
    config = make_config(tmp_path, [site])
    first, _pipeline, again = await twice(config, worker_pool)
    assert first.written == 3
    assert again.states[site.feed_id].sources == (f"{w.base}/feed",)
    assert (f"{w.base}/feed", "rss20", "used: found at /feed") in again.states[
        site.feed_id
    ].discovery


async def test_bad_sitemaps_fail_alone_and_other_hosts_are_refused(
    tmp_path, serve, worker_pool, caplog
):
    caplog.set_level(logging.INFO)
    w = World()
    w.base = await serve(w.app)
    other = World()
    other.base = await serve(other.app, host="127.0.0.2")
    mine = [w.page(n) for n in range(2)]
    foreign = [other.page(n) for n in range(2)]
    w.docs["/broken.xml"] = (b'<?xml version="1.0"?><urlset><url><loc>x</url>', "text/xml")
    too_many = "".join(f"<url><loc>{w.base}/p/{n}</loc></url>" for n in range(50_001))
    w.docs["/huge.xml"] = (f"<urlset {SITEMAP_NS}>{too_many}</urlset>".encode(), "text/xml")
    w.docs["/mixed.xml"] = (news_sitemap(mine + foreign), "application/xml")
    feeds = [f"{w.base}/broken.xml", f"{w.base}/huge.xml", f"{w.base}/mixed.xml"]
    config = make_config(tmp_path, feeds)
    summary, _pipeline = await run_pass(config, worker_pool)
    assert (summary.failed, summary.written) == (2, 2)
    errors = " | ".join(summary.errors)
    assert "malformed sitemap" in errors
    assert "50,000" in errors
    assert other.fetched("/news") == 0
    assert "2 URL(s) on other hosts refused" in caplog.text


def test_a_feed_silent_for_much_longer_than_its_rhythm_is_stale():
    now = 1_800_000_000.0
    hourly = tuple(now - 86400 * 3 - 3600 * n for n in range(10))
    assert sources.stale_since(FeedState("f", recent_entry_times=hourly), now) == max(hourly)
    # The same rhythm, last item 2 hours ago: keeping its pace.
    recent = tuple(t + 86400 * 3 - 3600 for t in hourly)
    assert sources.stale_since(FeedState("f", recent_entry_times=recent), now) is None
    # A weekly feed three weeks quiet is not stale yet (8 of its gaps: 8 weeks).
    weekly = tuple(now - 86400 * 21 - 86400 * 7 * n for n in range(5))
    assert sources.stale_since(FeedState("f", recent_entry_times=weekly), now) is None
    assert sources.stale_since(FeedState("f", recent_entry_times=weekly), now + 86400 * 40)
    # Too few items to know its rhythm: never judged.
    assert sources.stale_since(FeedState("f", recent_entry_times=(now - 1e7,)), now) is None


def test_site_entries_in_the_config(tmp_path):
    import pytest

    from ingestor.config.load import load_config
    from ingestor.errors import ConfigError

    path = tmp_path / "ingestor.yaml"
    head = f"output:\n  dir: {tmp_path}/out\nstate:\n  path: {tmp_path}/s.db\nfeeds:\n"
    path.write_text(
        head + "  - site: https://news.example/\n    backfill: 50\n    interval: 1h\n"
        "  - url: https://news.example/sitemap.xml\n    sitemap_max_age: 6h\n"
    )
    site, sitemap = load_config(path).feeds
    assert (site.site, site.url, site.backfill, site.interval) == (
        True,
        "https://news.example/",
        50,
        3600.0,
    )
    assert (sitemap.site, sitemap.sitemap_max_age) == (False, 21600.0)
    path.write_text(head + "  - site: ftp://x/\n  - site: https://a/\n    url: https://a/f\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "feeds[0].site: 'ftp://x/' is not an http(s) URL" in str(caught.value)
    assert "feeds[1]: give url (a feed or sitemap) or site, not both" in str(caught.value)


async def test_a_site_where_nothing_was_found_is_looked_at_again_next_time(
    tmp_path, serve, worker_pool
):
    w = World()
    w.base = await serve(w.app)
    site = FeedConfig(url=f"{w.base}/", site=True)
    config = make_config(tmp_path, [site])
    summary, pipeline = await run_pass(config, worker_pool)
    assert summary.failed == 1
    assert "no feed or sitemap found on the site" in " ".join(summary.errors)
    assert pipeline.states[site.feed_id].discovered_at is None
    urls = [w.page(n) for n in range(2)]
    w.docs["/"] = (b'<link rel="alternate" type="application/atom+xml" href="/a.xml">', "text/html")
    w.docs["/a.xml"] = (atom_of(urls, None), "application/atom+xml")
    summary, pipeline = await run_pass(config, worker_pool)
    assert (summary.failed, summary.written) == (0, 2)
    assert pipeline.states[site.feed_id].sources == (f"{w.base}/a.xml",)
