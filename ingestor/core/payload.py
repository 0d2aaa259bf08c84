"""A frontier item's payload: the entry, its feed's context and the feed's settings as
JSON, so an item is done as its feed asked even after a restart or the feed's removal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ingestor.config.model import FeedConfig, RequestOptions
from ingestor.core.entry import Enclosure, FeedEntry


def _stamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _moment(stamp: Any) -> datetime | None:
    return datetime.fromtimestamp(stamp, UTC) if isinstance(stamp, int | float) else None


def feed_settings(feed: FeedConfig) -> dict[str, Any]:
    """What an article needs of its feed's configuration, kept with each queued item so a
    feed removed from the configuration still has its items done as it asked. Secrets
    (headers, credentials, a proxy) are never written to the state."""
    return {
        "name": feed.name,
        "fetch_articles": feed.fetch_articles,
        "respect_robots_txt": feed.respect_robots_txt,
        "min_text_length": feed.min_text_length,
        "tags": list(feed.tags),
        "user_agent": feed.request.user_agent,
        "timeout": feed.request.timeout,
    }


def feed_from_settings(feed_id: str, settings: Mapping[str, Any] | None) -> FeedConfig:
    """The configuration an item was queued with (`feed_settings`), for a removed feed."""
    data = settings or {}

    def typed(key: str, kind: type | tuple[type, ...]) -> Any:
        value = data.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    flag = {
        k: data[k]
        for k in ("fetch_articles", "respect_robots_txt")
        if isinstance(data.get(k), bool)
    }
    return FeedConfig(
        url=feed_id,
        name=typed("name", str),
        tags=tuple(t for t in data.get("tags") or () if isinstance(t, str)),
        min_text_length=typed("min_text_length", int),
        request=RequestOptions(
            user_agent=typed("user_agent", str), timeout=typed("timeout", (int, float))
        ),
        **flag,
    )


def encode_payload(
    entry: FeedEntry,
    feed_title: str | None,
    feed_language: str | None,
    settings: Mapping[str, Any] | None = None,
) -> str:
    data = {
        "key": entry.key,
        "link": entry.link,
        "title": entry.title,
        "summary": entry.summary,
        "content": entry.content,
        "authors": list(entry.authors),
        "tags": list(entry.tags),
        "published": _stamp(entry.published),
        "updated": _stamp(entry.updated),
        "enclosures": [
            [e.url, e.type, e.length, e.duration, e.episode, e.season, e.image]
            for e in entry.enclosures
        ],
        "shared_link": entry.shared_link,
        "feed_title": feed_title,
        "feed_language": entry.language or feed_language,
    }
    if entry.backfill:
        data["backfill"] = True
    if settings is not None:
        data["feed"] = dict(settings)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def decode_payload(
    payload: str,
) -> tuple[FeedEntry, str | None, str | None, Mapping[str, Any] | None]:
    data = json.loads(payload)
    entry = FeedEntry(
        key=data["key"],
        link=data.get("link"),
        title=data.get("title") or "",
        summary=data.get("summary"),
        content=data.get("content"),
        authors=tuple(data.get("authors") or ()),
        tags=tuple(data.get("tags") or ()),
        published=_moment(data.get("published")),
        updated=_moment(data.get("updated")),
        enclosures=tuple(Enclosure(*e) for e in data.get("enclosures") or ()),
        shared_link=bool(data.get("shared_link")),
        backfill=data.get("backfill") is True,
    )
    settings = data.get("feed")
    return (
        entry,
        data.get("feed_title"),
        data.get("feed_language"),
        settings if isinstance(settings, dict) else None,
    )
