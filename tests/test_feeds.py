from __future__ import annotations

import json
import resource
import time
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.errors import ParseError
from ingestor.parse.feeds import parse_feed
from tests.conftest import SEEDS

BASE = "http://127.0.0.1:8000"


def seed(name: str) -> bytes:
    return (SEEDS / "feeds" / name).read_bytes().replace(b"{{BASE}}", BASE.encode())


def test_rss_seed_feed():
    parsed = parse_feed(
        seed("frenchpress.rss"), f"{BASE}/feeds/frenchpress.rss", "application/rss+xml"
    )
    assert parsed.format == "rss20"
    assert parsed.meta.title == "French Press TV – Moyen-Orient"
    assert parsed.meta.language == "fr-FR"
    assert parsed.meta.ttl == 15 * 60
    assert parsed.meta.update_period == 900  # hourly / 4
    (entry,) = parsed.entries
    assert entry.key == "guid:frenchpress-2023-12-03-irak-syrie"
    assert entry.link == f"{BASE}/articles/fr-irak-syrie-bases-us.html"
    assert entry.title.startswith("Irak/Syrie : des bases US")
    assert entry.summary.startswith("La Résistance islamique en Irak")
    assert "<p>" not in entry.summary
    assert entry.published == datetime(2023, 12, 3, 17, 42, tzinfo=UTC)
    assert entry.tags == ("Moyen-Orient",)
    assert entry.authors == ("Rédaction",)


def test_atom_relative_links_resolve_against_the_feed_url():
    parsed = parse_feed(seed("world.atom"), f"{BASE}/feeds/world.atom", "application/atom+xml")
    assert parsed.format == "atom10"
    first = parsed.entries[0]
    wind = "en-harbour-wind-farm.html?utm_source=atom&utm_medium=feed"
    assert first.link == f"{BASE}/articles/{wind}"
    assert first.authors == ("Mara Lindqvist",)
    assert first.tags == ("Energy",)
    german = parsed.entries[1]
    assert german.published == datetime(2023, 12, 4, 6, 30, tzinfo=UTC)
    assert german.summary == "Reisende müssen sich auf massive Einschränkungen einstellen."


def test_json_feed():
    parsed = parse_feed(
        seed("partners.json"), f"{BASE}/feeds/partners.json", "application/feed+json"
    )
    assert parsed.format == "json11"
    assert parsed.meta.title == "Partner Wire"
    assert [e.key for e in parsed.entries] == [
        "guid:wire-2023-12-04-wind",
        "guid:wire-2023-12-04-sequia",
        "guid:wire-2023-12-04-ooyuki",
    ]
    assert parsed.entries[0].authors == ("Regional Wire staff",)
    assert parsed.entries[0].tags == ("energy", "wire")
    assert parsed.entries[2].content.startswith("気象庁は四日")
    assert parsed.entries[1].published == datetime(2023, 12, 4, 7, 0, tzinfo=UTC)


def test_json_feed_with_wrong_types_everywhere_keeps_what_is_usable():
    data = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": 42,
        "items": [
            {
                "id": 7,
                "url": ["not", "a", "string"],
                "title": {"x": 1},
                "date_published": 5,
                "tags": "notalist",
                "authors": "nobody",
                "attachments": [1, None, {"url": 3}],
            },
            {
                "id": True,
                "url": "/relative",
                "title": "Good",
                "content_html": "<p>Body</p>",
                "date_published": "not a date",
            },
            "not an object",
            None,
        ],
    }
    parsed = parse_feed(json.dumps(data).encode(), f"{BASE}/f.json", "application/feed+json")
    assert [e.title for e in parsed.entries] == ["Good"]
    good = parsed.entries[0]
    assert good.link == f"{BASE}/relative" and good.content == "Body"
    assert good.published is None
    assert parsed.warning and "skipped" in parsed.warning
    with pytest.raises(ParseError, match="'items' is missing"):
        parse_feed(
            b'{"version": "https://jsonfeed.org/version/1", "items": 3}',
            BASE,
            "application/feed+json",
        )


def test_entry_key_falls_back_to_link_then_content_hash():
    body = b"""<rss version="2.0"><channel><title>t</title>
      <item><title>A</title><link>http://e.com/a</link></item>
      <item><title>No link</title><description>Same text</description></item>
    </channel></rss>"""
    first = parse_feed(body, BASE).entries
    again = parse_feed(body, BASE).entries
    assert first[0].key == "link:http://e.com/a"
    assert first[1].key.startswith("hash:") and first[1].key == again[1].key


def test_dates_in_several_formats_and_missing_is_none():
    body = b"""<rss version="2.0"><channel><title>t</title>
      <item><guid>1</guid><title>a</title><pubDate>Tue, 10 Jun 2003 04:00:00 GMT</pubDate></item>
      <item><guid>2</guid><title>b</title><pubDate>2003-06-10T09:00:00+05:00</pubDate></item>
      <item><guid>3</guid><title>c</title></item>
    </channel></rss>"""
    entries = parse_feed(body, BASE).entries
    assert entries[0].published == datetime(2003, 6, 10, 4, 0, tzinfo=UTC)
    assert entries[1].published == datetime(2003, 6, 10, 4, 0, tzinfo=UTC)
    assert entries[2].published is None


def test_malformed_feed_still_yields_recoverable_entries():
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>Broken & co</title>'
        b"<item><title>One \x01 two</title><link>http://e.com/1</link></item>"
        b"<item><title>Second</title><link>http://e.com/2</link></item>"
        b"<item><title>Trunc"
    )
    parsed = parse_feed(body, BASE)
    assert [e.link for e in parsed.entries][:2] == ["http://e.com/1", "http://e.com/2"]
    assert "\x01" not in parsed.entries[0].title
    assert parsed.warning


def test_nothing_usable_is_an_error_for_that_feed():
    with pytest.raises(ParseError, match="not a feed"):
        parse_feed(b"<html><body>Hello, this is a web page</body></html>", BASE, "text/html")
    with pytest.raises(ParseError, match="empty"):
        parse_feed(b"   ", BASE)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><title>&lol9;</title><item><title>&lol9;</title></item></channel></rss>
"""


def quadratic_blowup() -> bytes:
    entity = "A" * 100_000
    refs = "&a;" * 10_000
    return (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "{entity}">]>'
        f'<rss version="2.0"><channel><title>q</title><item><title>{refs}</title></item>'
        f"</channel></rss>"
    ).encode()


def xxe(target: str) -> bytes:
    return (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "{target}">]>'
        f'<rss version="2.0"><channel><title>x</title><item><title>&xxe;</title>'
        f"<description>&xxe;</description></item></channel></rss>"
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        quadratic_blowup(),
        xxe("file:///etc/passwd"),
        xxe("http://127.0.0.1:9/secret"),
        BILLION_LAUGHS.decode().replace('<?xml version="1.0"?>', "").encode("utf-16"),
    ],
)
def test_entity_declarations_are_refused_fast_and_small(body):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ParseError, match="declares XML entities"):
        parse_feed(body, BASE)
    assert time.perf_counter() - started < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_external_dtd_is_never_loaded():
    body = (
        b'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "file:///etc/passwd">'
        b'<rss version="2.0"><channel><title>t</title><item><title>ok</title>'
        b"<link>http://e.com/1</link></item></channel></rss>"
    )
    parsed = parse_feed(body, BASE)
    assert parsed.entries[0].title == "ok"
    assert "root:" not in repr(parsed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
def test_parse_feed_fuzz_never_crashes_unexpectedly(body):
    try:
        parsed = parse_feed(b"<rss version='2.0'><channel>" + body, BASE)
    except ParseError:
        return
    for entry in parsed.entries:
        assert "\x00" not in entry.title


_field_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=80,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "title": _field_text,
                "link": st.one_of(
                    _field_text, st.just("/relative/path"), st.just("https://example.org/a?b=1")
                ),
                "guid": _field_text,
                "description": _field_text,
                "pubDate": st.one_of(_field_text, st.just("Tue, 10 Jun 2003 04:00:00 GMT")),
            },
        ),
        max_size=8,
    )
)
def test_entry_normalization_properties(items):
    from xml.sax.saxutils import escape

    body = "".join(
        "<item>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in item.items()) + "</item>"
        for item in items
    )
    document = (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>t</title>{body}</channel></rss>"
    ).encode()
    try:
        parsed = parse_feed(document, BASE)
    except ParseError:
        return
    for entry in parsed.entries:
        assert entry.key.startswith(("guid:", "link:", "hash:"))
        assert "\n" not in entry.title and "\r" not in entry.title
        assert not any(ord(c) < 32 for c in entry.title)
        assert entry.link is None or entry.link.startswith(("http://", "https://"))
        for moment in (entry.published, entry.updated):
            assert moment is None or moment.utcoffset().total_seconds() == 0
