"""What the analysis of one article produces (plain data; computed in analyze/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class PageMetadata:
    title: str | None = None
    authors: tuple[str, ...] = ()
    date: datetime | None = None
    site_name: str | None = None
    image: str | None = None
    tags: tuple[str, ...] = ()
    canonical_url: str | None = None
    html_lang: str | None = None


@dataclass(frozen=True)
class Body:
    text: str
    # trafilatura | trafilatura+resiliparse | resiliparse | json_ld | feed_content
    # | feed_summary | none
    method: str


@dataclass(frozen=True)
class LanguageResult:
    language: str
    confidence: float


@dataclass(frozen=True)
class Fingerprint:
    content_hash: str
    signature: bytes | None  # uint32 hash values, little-endian; None when too short
    band_keys: tuple[int, ...]
    shingles: int
    # The same in the previous MinHash scheme, while records that carry it are compared.
    legacy_signature: bytes | None = None
    legacy_band_keys: tuple[int, ...] = ()


@dataclass(frozen=True)
class ArticleAnalysis:
    body: Body
    meta: PageMetadata
    language: LanguageResult
    fingerprint: Fingerprint
    # CPU seconds in the worker by stage: extract, language, fingerprint.
    timings: dict[str, float] = field(default_factory=dict)
    # Why the page, fetched, is not the article (a soft 404): the body is the feed's.
    page_error: str | None = None
