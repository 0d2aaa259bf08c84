"""Feed bytes to typed entries: the parser is chosen by the media type the server gave,
checked against the bytes (JSON Feed is often served as text/plain or application/json);
a sitemap is recognized by its root element, a gzip file by its first bytes.

Runs in a worker process (feedparser holds the GIL for tens of ms per feed). Never fetches
anything: feedparser only ever gets bytes, because a string makes it open URLs and files.
"""

from __future__ import annotations

from dataclasses import replace

from ingestor.core.entry import ParsedFeed
from ingestor.core.retrieved import RetrievedFeed, split_content_type
from ingestor.errors import ParseError
from ingestor.parse.jsonfeed import (
    is_json_feed,
    looks_like_json,
    not_a_json_feed,
    parse_json_feed,
)
from ingestor.parse.rss_atom import parse_rss_atom
from ingestor.parse.safety import reject_entity_declarations
from ingestor.parse.sitemaps import inflate_if_gzip, parse_sitemap, sitemap_kind


def parse_retrieved(doc: RetrievedFeed) -> ParsedFeed:
    """Parse a fetched feed document; raises ParseError when nothing usable is in it."""
    if not doc.body.strip():
        raise ParseError(doc.url, "empty response body, not a feed")
    body = inflate_if_gzip(doc.body, doc.url)
    if body is not doc.body:
        doc = replace(doc, body=body)
    if is_json_feed(doc.body, doc.media_type):
        return parse_json_feed(doc.body, doc.url)
    if looks_like_json(doc.body):
        # Served as JSON but not a JSON Feed object: say so, not what an XML parser
        # makes of it.
        raise ParseError(doc.url, not_a_json_feed(doc.body))
    reject_entity_declarations(doc.body, doc.url)
    if sitemap_kind(doc.body):
        return parse_sitemap(doc.body, doc.url)
    return parse_rss_atom(doc)


def parse_feed(body: bytes, url: str, content_type: str = "") -> ParsedFeed:
    """parse_retrieved for bytes and a Content-Type header value."""
    media_type, charset = split_content_type(content_type)
    return parse_retrieved(RetrievedFeed(body, url, media_type, charset))
