"""Stories: every record carries `story_id`, the id of its story's first record. All
near-duplicate and syndicated copies of one story share it, across hosts, and different
stories never do."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from ingestor.core.dedup import NOT_DUPLICATE, DuplicateKind, DuplicateVerdict
from ingestor.core.settle import story_of
from tests.conftest import (
    article_html,
    distinct_story,
    loopback_http,
    make_config,
    read_records,
)
from tests.test_pipeline import Site, run_pass


def test_a_records_story():
    copy = DuplicateVerdict("b", DuplicateKind.NEAR, 0.9)
    assert story_of("c", NOT_DUPLICATE, {}, updating=False) == "c"
    assert story_of("c", copy, {"b": "a"}, updating=False) == "a"  # a copy of a copy
    assert story_of("c", copy, {}, updating=False) == "b"
    # A rewritten record keeps its story, whatever it resembles now.
    assert story_of("c", NOT_DUPLICATE, {"c": "a"}, updating=True) == "a"


async def test_syndicated_copies_across_hosts_share_one_story(tmp_path, serve, worker_pool):
    sites = []
    for n in range(3):
        site = Site()
        site.base = await serve(site.app, host=f"127.0.0.{n + 1}")
        sites.append(site)
    wire, paper, blog = sites
    story = distinct_story(7)
    syndicated = [*story, "Additional reporting by the regional desk."]
    # The blog copies the paper's version, with one paragraph of its own changed.
    reblogged = [*syndicated[:2], syndicated[2].replace("the", "this", 2), *syndicated[3:]]
    pages = [(wire, "Wire story", story), (paper, "Paper story", syndicated)]
    pages += [(blog, "Blog story", reblogged)]
    for n, (site, title, paragraphs) in enumerate(pages):
        site.pages["/s.html"] = article_html(title, paragraphs)
        site.pages["/own.html"] = article_html(f"Own {n}", distinct_story(100 + n))
    feeds = [f"{s.base}/feed.xml" for s in sites]
    config = make_config(
        tmp_path,
        feeds,
        http=loopback_http(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),)),
        pipeline=replace(make_config(tmp_path, []).pipeline, article_concurrency=1),
    )
    for n, (site, title, _paragraphs) in enumerate(pages):  # one host after the other
        site.items = [
            {"title": title, "link": "BASE/s.html", "guid": "s"},
            {"title": f"Own {n}", "link": "BASE/own.html", "guid": "own"},
        ]
        await run_pass(config, worker_pool)
    by_title = {r["title"]: r for r in read_records(config.output.dir)}
    first = by_title["Wire story"]["id"]
    assert by_title["Wire story"]["story_id"] == first
    assert by_title["Paper story"]["duplicate_of"] == first
    assert by_title["Blog story"]["story_id"] == by_title["Paper story"]["story_id"] == first
    own = [by_title[f"Own {n}"] for n in range(3)]
    assert [r["story_id"] for r in own] == [r["id"] for r in own]  # each its own story
    assert len({r["story_id"] for r in by_title.values()}) == 4
