"""Pure rules about feeds and their requests: a feed's configuration fingerprint, its state
after a parse, which request options an article page gets."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from ingestor.config.model import FeedConfig, RequestOptions
from ingestor.core.entry import FeedMeta
from ingestor.core.state import FeedState
from ingestor.core.urls import host_key


def feed_fingerprint(feed: FeedConfig) -> str:
    """Changes whenever the feed's configuration does (a 410 stays until it does). The
    hidden request options (credentials) count too; only a digest is kept."""
    return hashlib.sha256(
        repr((feed, feed.request.headers, feed.request.auth)).encode()
    ).hexdigest()[:16]


def with_meta(state: FeedState, meta: FeedMeta) -> FeedState:
    return replace(
        state,
        title=meta.title or state.title,
        site_link=meta.link or state.site_link,
        language=meta.language or state.language,
        ttl=meta.ttl,
        skip_hours=tuple(sorted(meta.skip_hours)),
        skip_days=tuple(sorted(meta.skip_days)),
        update_period=meta.update_period,
    )


def article_request(feed: FeedConfig, link: str) -> RequestOptions:
    """A feed's request options for one of its article pages: its headers and credentials
    only on the feed's own host, its user agent, proxy and timeout everywhere."""
    options = feed.request
    if host_key(link) == host_key(feed.url):
        return options
    return replace(options, headers=(), auth=None)
