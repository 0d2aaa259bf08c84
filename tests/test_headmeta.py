"""Page metadata from head tags (used when the feed already dates the entry, instead of
trafilatura's costlier metadata pass), and the choice between the two."""

from __future__ import annotations

from datetime import UTC, datetime

from ingestor.analyze.extract import extract_page
from ingestor.analyze.headmeta import scan_head
from tests.conftest import LOREM_EN

HEAD = """<!DOCTYPE html><html lang="de-DE"><head>
<meta charset="utf-8"><title>Streik bei der Bahn | Beispiel Zeitung</title>
<link rel="stylesheet" href="/s.css"><link rel='canonical' href='https://zeitung.example/bahn-streik'>
<meta property="og:title" content="Streik bei der Bahn &amp; Folgen">
<meta property="og:site_name" content="Beispiel Zeitung">
<meta property="og:image" content="https://cdn.zeitung.example/bahn.jpg">
<meta name="author" content="Anna Beispiel"><meta property="article:author"
 content="https://zeitung.example/autoren/anna">
<meta property="article:published_time" content="2024-03-07T06:30:00+01:00">
<meta property="article:tag" content="Verkehr"><meta name="keywords" content="Bahn, Streik">
</head><body><meta property="og:title" content="not in the head"><h1>Streik</h1>"""


def test_head_tags_give_the_metadata():
    meta = scan_head(HEAD)
    assert meta.title == "Streik bei der Bahn & Folgen"
    assert meta.canonical_url == "https://zeitung.example/bahn-streik"
    assert meta.site_name == "Beispiel Zeitung"
    assert meta.image == "https://cdn.zeitung.example/bahn.jpg"
    assert meta.authors == ("Anna Beispiel",)  # a profile URL is no name
    assert meta.date == datetime(2024, 3, 7, 5, 30, tzinfo=UTC)
    assert meta.tags == ("Verkehr", "Bahn", "Streik")
    assert meta.html_lang == "de"


def test_a_page_without_head_tags_gives_nothing_wrong():
    meta = scan_head("<html><body><p>just text</p><meta name=date content=garbage></body>")
    assert (meta.title, meta.date, meta.canonical_url, meta.authors) == (None, None, None, ())


def test_the_body_is_the_same_either_way_and_the_heading_is_not_repeated():
    page = (
        '<html lang="en"><head><title>Tram line vote | City News</title>'
        '<link rel="canonical" href="https://news.example/tram"></head><body><article>'
        "<h1>Council votes to extend the tram line</h1>"
        + "".join(f"<p>{p}</p>" for p in LOREM_EN)
        + "</article></body></html>"
    )
    full, _, full_meta = extract_page(page, "https://news.example/tram?x=1")
    scanned, _, head_meta = extract_page(page, "https://news.example/tram?x=1", with_metadata=False)
    assert scanned == full and scanned.text.startswith("The city council voted")
    assert head_meta.canonical_url == full_meta.canonical_url == "https://news.example/tram"
