"""Feeds as they really are: the feed's own text, every date form, entries that share a
link, original links. Fixtures in tests/fixtures/feeds/ are the team's own, written after
the structure of real feeds (WordPress, a journal's RSS 1.0, release Atom, a podcast,
Feedburner); each goes through a real `run --once` pass on a loopback server."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from aiohttp import web

from ingestor.config.model import FeedConfig
from ingestor.core.record import record_schema
from tests.conftest import make_config, read_records
from tests.test_pipeline import run_pass

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
_TYPES = {
    ".xml": "application/rss+xml; charset=utf-8",
    ".rdf": "application/rdf+xml",
    ".json": "application/feed+json",
}


class FixtureSite:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.base = ""
        self.app = web.Application()
        self.app.router.add_get("/feeds/{name}", self.feed)
        self.app.router.add_get("/{path:.*}", self.other)

    async def feed(self, request: web.Request) -> web.Response:
        path = FIXTURES / request.match_info["name"]
        body = path.read_bytes().replace(b"{{BASE}}", self.base.encode())
        return web.Response(body=body, headers={"Content-Type": _TYPES[path.suffix]})

    async def other(self, request: web.Request) -> web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        return web.Response(status=404)


@pytest.fixture
async def ingested(tmp_path_factory, serve, worker_pool):
    site = FixtureSite()
    site.base = await serve(site.app)
    feeds = [
        FeedConfig(url=f"{site.base}/feeds/{p.name}", fetch_articles=p.stem.startswith("podcast"))
        for p in sorted(FIXTURES.iterdir())
    ]
    config = make_config(tmp_path_factory.mktemp("fidelity"), feeds)
    summary, _ = await run_pass(config, worker_pool)
    records = read_records(config.output.dir)
    for record in records:
        jsonschema.validate(record, record_schema())
    by_feed: dict[str, list[dict]] = {}
    for record in records:
        by_feed.setdefault(record["feed_url"].rsplit("/", 1)[1], []).append(record)
    return summary, by_feed, site


def one(by_feed: dict[str, list[dict]], name: str) -> dict:
    (record,) = by_feed[name]
    return record


async def test_every_entry_has_a_record_and_none_is_lost_to_a_shared_link(ingested):
    summary, by_feed, _site = ingested
    counts = {name: len(records) for name, records in by_feed.items()}
    assert counts == {
        "atom-content-only.xml": 1,
        "atom-summary-only.xml": 1,
        "atom-updated-only.xml": 2,
        "feedburner-origlink.xml": 1,
        "jsonfeed-content-text.json": 1,
        "podcast-shared-link.xml": 4,
        "podcast-show-page.xml": 2,
        "rss2-republished.xml": 1,
        "rss1-dc-date.rdf": 1,
        "rss2-both.xml": 1,
        "rss2-description-only.xml": 1,
        "rss2-encoded-only.xml": 1,
        "rss2-portuguese-dates.xml": 1,
        "title-only.xml": 1,
    }
    assert summary.failed == 0


async def test_the_text_is_the_feeds_best_body_with_its_paragraphs(ingested):
    _summary, by_feed, _site = ingested
    expected = {
        # feed: (extraction_method, paragraphs, first words)
        "rss2-description-only.xml": ("feed_summary", 2, "The morning ferry"),
        "rss2-encoded-only.xml": ("feed_content", 3, "Garlic wants a cold spell"),
        "rss2-both.xml": ("feed_content", 3, "Two kayakers were brought ashore on Sunday"),
        "atom-summary-only.xml": ("feed_summary", 1, "The Perseid meteor shower"),
        "atom-content-only.xml": ("feed_content", 2, "Once a year the main mirror"),
        "jsonfeed-content-text.json": ("feed_content", 2, "The council has approved"),
        "rss1-dc-date.rdf": ("feed_summary", 1, "We surveyed seagrass meadows"),
        "feedburner-origlink.xml": ("feed_summary", 1, "Our winter training rides"),
        "rss2-portuguese-dates.xml": ("feed_summary", 1, "Os pescadores artesanais"),
    }
    for name, (method, paragraphs, start) in expected.items():
        record = one(by_feed, name)
        assert record["extraction_method"] == method, name
        assert record["text"].startswith(start), (name, record["text"])
        assert len(record["text"].split("\n\n")) == paragraphs, (name, record["text"])
        assert record["word_count"] == len(record["text"].split())
    # The description stays the summary; the full content is the text.
    both = one(by_feed, "rss2-both.xml")
    assert both["summary"].startswith("Two kayakers were brought ashore after strong winds")
    assert one(by_feed, "rss2-encoded-only.xml")["authors"] == ["Margaret Hale"]
    release = next(r for r in by_feed["atom-updated-only.xml"] if r["title"] == "v2.4.0")
    assert release["extraction_method"] == "feed_content"
    assert "The export command now writes files atomically" in release["text"]
    empty = one(by_feed, "title-only.xml")
    assert (empty["text"], empty["extraction_method"]) == ("", "none")


async def test_language_comes_from_title_and_text_and_is_und_when_too_short(ingested):
    _summary, by_feed, _site = ingested
    for name in (
        "rss2-description-only.xml",
        "rss2-encoded-only.xml",
        "atom-summary-only.xml",
        "rss1-dc-date.rdf",
        "jsonfeed-content-text.json",
    ):
        record = one(by_feed, name)
        assert record["language"] == "en" and record["language_confidence"] >= 0.9, name
    assert one(by_feed, "rss2-portuguese-dates.xml")["language"] == "pt"
    release = next(r for r in by_feed["atom-updated-only.xml"] if r["title"] == "v2.4.0")
    assert release["language"] == "en"
    # A title and nothing else to judge: no guess dressed up as certainty.
    for record in (
        one(by_feed, "title-only.xml"),
        next(r for r in by_feed["atom-updated-only.xml"] if r["title"] == "v2.3.1"),
    ):
        assert record["language"] == "und" or record["language_confidence"] <= 0.5, record


async def test_dates_in_every_form_keep_their_instant(ingested):
    _summary, by_feed, _site = ingested
    expected = {
        "rss2-description-only.xml": "2024-03-05T09:30:00Z",
        "atom-summary-only.xml": "2024-08-12T18:00:00Z",
        "jsonfeed-content-text.json": "2024-05-10T04:00:00Z",
        "rss1-dc-date.rdf": "2024-06-03T08:15:00Z",  # dc:date
        "rss2-portuguese-dates.xml": "2018-09-24T13:00:00Z",  # "Seg, 24 Set 2018 ... -0300"
    }
    for name, published in expected.items():
        assert one(by_feed, name)["published_at"] == published, name
    releases = {r["title"]: r for r in by_feed["atom-updated-only.xml"]}
    assert releases["v2.4.0"]["published_at"] == "2024-11-20T14:02:11Z"  # <updated> only
    assert releases["v2.3.1"]["published_at"] == "2024-10-02T08:00:00Z"
    assert releases["v2.4.0"]["updated_at"] is None  # the same instant: not an update


async def test_podcast_episodes_that_share_a_link_are_items_of_their_own(ingested):
    _summary, by_feed, site = ingested
    episodes = {r["title"]: r for r in by_feed["podcast-shared-link.xml"]}
    assert len({r["id"] for r in episodes.values()}) == 4
    shared = [r for r in episodes.values() if r["url"] == f"{site.base}/podcast"]
    assert len(shared) == 3
    assert len({r["canonical_url"] for r in shared}) == 3
    # The shared show page is not fetched as any episode's article; the trailer's own
    # page is (it answers 404 here, so the record has the feed's text).
    assert site.hits.get("/podcast") is None
    assert site.hits.get("/podcast/trailer") == 1
    third = episodes["Episode 3: The last lighthouse keeper"]
    assert third["text"].startswith("We meet the man who kept the light")
    assert third["enclosures"] == [
        {
            "url": f"{site.base}/media/ep3.mp3",
            "type": "audio/mpeg",
            "length": 48213771,
            "duration": 3013,
            "episode": 3,
            "season": 1,
            "image": f"{site.base}/media/ep3.jpg",
        }
    ]
    second = episodes["Episode 2: Counting puffins"]["enclosures"][0]
    assert (second["duration"], second["episode"]) == (2511, 2)
    assert episodes["Episode 1: Why the tides are late"]["enclosures"][0]["duration"] == 2465
    trailer = episodes["Trailer: Tideline Talks"]
    assert trailer["duplicate_of"] is None and trailer["enclosures"][0]["length"] == 1200000


async def test_episodes_sharing_a_show_page_are_one_record_each(ingested):
    _summary, by_feed, site = ingested
    episodes = by_feed["podcast-show-page.xml"]
    assert sorted(r["title"] for r in episodes) == [
        "Low Water 11: The ferry timetable",
        "Low Water 12: Dredging the old channel",
    ]
    assert len({r["canonical_url"] for r in episodes}) == 2
    assert all(r["duplicate_of"] is None for r in episodes)
    assert site.hits.get("/shows/low-water") is None  # the show page is no episode's page


async def test_a_republished_item_is_one_record_with_the_latest_text(ingested):
    _summary, by_feed, site = ingested
    record = one(by_feed, "rss2-republished.xml")
    assert record["canonical_url"] == f"{site.base}/courier/2024/10/flood-barrier-finished"
    assert record["title"] == "Flood barrier finished two weeks early (updated)"
    # First published when the first item was; updated when it was re-published.
    assert record["published_at"] == "2024-10-17T09:10:00Z"
    assert record["updated_at"] == "2024-10-17T15:30:00Z"


async def test_feedburner_items_keep_their_original_link(ingested):
    _summary, by_feed, site = ingested
    record = one(by_feed, "feedburner-origlink.xml")
    assert record["url"] == f"{site.base}/club/winter-rides"
    assert record["canonical_url"] == f"{site.base}/club/winter-rides"
