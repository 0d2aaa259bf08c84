"""The output record: one normalized article, as written to the sink."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = 1

# C0/C1 controls and Unicode bidi overrides/isolates are removed from every text field:
# they corrupt terminals and logs and can disguise text (CVE-2021-42574 style).
_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)
_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_SINGLE_LINE_SPACE = re.compile(r"[\s\u00a0]+")
MAX_TITLE_CHARS = 1000


def clean_line(text: str | None, limit: int | None = None) -> str:
    """One line of text: controls removed, whitespace (CR/LF too) folded to single spaces."""
    if not text:
        return ""
    text = _SINGLE_LINE_SPACE.sub(" ", _CONTROL.sub("", unicodedata.normalize("NFC", text)))
    text = text.strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def clean_text(text: str | None) -> str:
    """Body text: controls removed, paragraphs separated by exactly one blank line."""
    if not text:
        return ""
    text = _LINE_BREAKS.sub("\n", unicodedata.normalize("NFC", text))
    paragraphs = []
    for block in _CONTROL.sub("", text).split("\n"):
        line = re.sub(r"[ \t\u00a0]+", " ", block).strip()
        if line:
            paragraphs.append(line)
    return "\n\n".join(paragraphs)


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
        return data

    def to_json(self, pretty: bool = False) -> bytes:
        return json.dumps(
            self.to_dict(), ensure_ascii=False, indent=2 if pretty else None, sort_keys=False
        ).encode("utf-8")


_FIELD_NAMES = tuple(f.name for f in fields(Record))


@cache
def record_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every record validates against."""
    text = resources.files("ingestor").joinpath("schema/record.schema.json").read_text("utf-8")
    return json.loads(text)
