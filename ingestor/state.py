"""The state store interface (backend-neutral, async) and the plain data it keeps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class FeedState:
    """Everything remembered about one feed between polls and across restarts."""

    feed_id: str  # the configured URL: the feed's identity even after a 301
    effective_url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    title: str | None = None
    site_link: str | None = None
    language: str | None = None
    ttl: float | None = None
    skip_hours: tuple[int, ...] = ()
    skip_days: tuple[int, ...] = ()
    update_period: float | None = None
    fresh_until: float = 0.0  # Cache-Control / Expires: not polled again before this
    not_before: float = 0.0  # Retry-After
    error_count: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    last_fetch_at: float | None = None
    disabled_reason: str | None = None
    disabled_config: str | None = None  # the feed config the disabling applied to
    next_due: float = 0.0
    items: int = 0
    recent_entry_times: tuple[float, ...] = ()

    @property
    def url(self) -> str:
        return self.effective_url or self.feed_id


@dataclass(frozen=True)
class RecordRef:
    record_id: str
    canonical_url: str
    location: str
    done: bool
    content_hash: str | None = None
    first_ingested: float = 0.0


@dataclass(frozen=True)
class NearCandidate:
    record_id: str
    signature: bytes
    ingested_at: float


@dataclass(frozen=True)
class CommitItem:
    """What becomes true, in one transaction, once a record file is safely written."""

    record_id: str
    canonical_url: str
    content_hash: str
    feed_id: str
    entry_key: str
    scheme: str
    signature: bytes | None
    band_keys: Sequence[int]
    committed_at: float
    entry_updated: float | None = None


class StateStore(Protocol):
    """Persistent state. Every method is safe to call concurrently from one event loop."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load_feeds(self) -> dict[str, FeedState]: ...

    async def save_feed(self, state: FeedState) -> None: ...

    async def save_feeds(self, states: Iterable[FeedState]) -> None: ...

    async def delete_feeds(self, feed_ids: Iterable[str]) -> None: ...

    async def entry_updated_times(
        self, feed_id: str, keys: Sequence[str]
    ) -> dict[str, float | None]: ...

    async def mark_entries_seen(
        self,
        feed_id: str,
        keys: Sequence[str],
        now: float,
        record_id: str | None = None,
        entry_updated: float | None = None,
    ) -> None: ...

    async def signature_of(self, record_id: str) -> bytes | None: ...

    async def record_by_canonical(self, canonical_url: str) -> RecordRef | None: ...

    async def reserve_record(
        self, record_id: str, canonical_url: str, location: str, now: float
    ) -> str: ...

    async def duplicate_candidates(
        self,
        content_hash: str,
        scheme: str,
        band_keys: Sequence[int],
        since: float,
        exclude_id: str,
    ) -> tuple[str | None, list[NearCandidate]]:
        """The earliest finished record with this exact body hash, else the records that
        share an LSH band with these keys (same scheme, ingested since `since`)."""
        ...

    async def commit_record(self, item: CommitItem) -> None: ...

    async def prune(self, now: float, seen_max_age: float, fingerprint_window: float) -> int: ...
