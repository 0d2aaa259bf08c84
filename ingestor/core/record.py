"""The output record: one normalized article, as written to the sink."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = 1


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Record:
    id: str
    url: str
    canonical_url: str
    feed_url: str
    feed_name: str
    title: str
    authors: list[str]
    published_at: datetime | None
    fetched_at: datetime
    language: str
    language_confidence: float
    text: str
    summary: str | None
    content_hash: str
    duplicate_of: str | None
    updated_at: datetime | None = None
    site_name: str | None = None
    image: str | None = None
    tags: list[str] = field(default_factory=list)
    feed_tags: list[str] = field(default_factory=list)
    extraction_method: str = "none"
    entry_id: str | None = None
    duplicate_kind: str | None = None
    similarity: float | None = None
    word_count: int = 0
    enclosures: list[dict[str, Any]] = field(default_factory=list)
    backfill: bool = False
    page_error: str | None = None  # why the page could not be used (the text is the feed's)
    story_id: str = ""  # the first record of this story (its own id when it is the first)

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every value, a millisecond per record.
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = rfc3339(value)
            elif isinstance(value, list):
                value = [dict(item) if isinstance(item, dict) else item for item in value]
            data[name] = value
        data["story_id"] = self.story_id or self.id
        return data

    def to_json(self, pretty: bool = False) -> bytes:
        return json.dumps(
            self.to_dict(), ensure_ascii=False, indent=2 if pretty else None, sort_keys=False
        ).encode("utf-8")

    def file_bytes(self, pretty: bool = False) -> bytes:
        """The record's file in the output (output.pretty: indented)."""
        return self.to_json(pretty) + b"\n"


_FIELD_NAMES = tuple(f.name for f in fields(Record))


@cache
def record_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every record validates against."""
    text = resources.files("ingestor").joinpath("schema/record.schema.json").read_text("utf-8")
    return json.loads(text)
