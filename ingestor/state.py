"""The state store interface (backend-neutral, async) and the plain data it keeps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ingestor.frontier import FrontierItem, NewItem


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


@dataclass(frozen=True)
class HostWait:
    """A host asked us not to come back before `until` (Retry-After, 429)."""

    host: str
    until: float
    reason: str = ""


@dataclass(frozen=True)
class PollCommit:
    """What one feed poll makes true, in one transaction: the feed's new state (validators,
    body hash, schedule), its new entries queued in the frontier and their keys seen."""

    state: FeedState
    items: Sequence[NewItem] = ()
    host_wait: HostWait | None = None


@dataclass(frozen=True)
class ClaimResult:
    items: list[FrontierItem]
    # Per host asked for: the earliest not_before among its unclaimed items (None: none).
    host_next: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ArticlePrep:
    """The one look-up before a record is written: its reserved location, the record
    already under this id (if any), and the dedup candidates."""

    location: str
    existing: RecordRef | None
    exact: str | None = None
    candidates: list[NearCandidate] = field(default_factory=list)
    old_signature: bytes | None = None


@dataclass(frozen=True)
class ArticleCommit:
    """What becomes true, in one transaction, when a frontier item is finished: the record
    (when one was written), the entry seen, the item gone from the frontier."""

    item_id: int
    feed_id: str
    entry_key: str
    committed_at: float
    record: CommitItem | None = None
    seen_record_id: str | None = None  # duplicate, dropped, unchanged: the record it maps to
    entry_updated: float | None = None
    release_record: str | None = None  # a reservation never written (a dropped duplicate)
    failure: str | None = None  # why the page was not used (the record has the feed's text)
    failed_url: str | None = None


@dataclass(frozen=True)
class FrontierRow:
    """One line of the frontier summary (`status`): per host or per feed."""

    key: str
    queued: int
    ready_at: float
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class FrontierSummary:
    size: int = 0
    oldest_enqueued_at: float | None = None
    hosts: list[FrontierRow] = field(default_factory=list)
    feeds: list[FrontierRow] = field(default_factory=list)
    # feed id -> (article URL, error, when): the last page given up on, per feed
    failures: dict[str, tuple[str | None, str, float]] = field(default_factory=dict)


class StateStore(Protocol):
    """Persistent state. Every method is safe to call concurrently from one event loop.

    The frontier methods are coarse on purpose, each one transaction: `commit_poll` once
    per poll, `claim_articles` once per dispatch round, `prepare_article` and
    `commit_article` (or `reschedule_article`) once per article.
    """

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

    # --- the durable frontier ---

    async def commit_poll(self, commit: PollCommit) -> None: ...

    async def frontier_hosts(self, now: float) -> dict[str, float]:
        """Every host with unclaimed items: the earliest not_before among them."""
        ...

    async def host_waits(self, now: float) -> dict[str, float]:
        """Hosts that asked us to wait, until when (only waits still running)."""
        ...

    async def claim_articles(
        self, requests: Sequence[tuple[str, int]], now: float, lease_until: float
    ) -> ClaimResult:
        """Lease up to n due items of each host, earliest first."""
        ...

    async def prepare_article(
        self,
        record_id: str,
        canonical_url: str,
        location: str,
        now: float,
        dedup: tuple[str, str, Sequence[int], float] | None,
        want_signature: bool = False,
    ) -> ArticlePrep:
        """Reserve the record's location (an earlier reservation wins) and look up what
        dedup needs: `dedup` is (content_hash, scheme, band_keys, since), None to skip."""
        ...

    async def commit_article(self, commit: ArticleCommit) -> None: ...

    async def reschedule_article(
        self,
        item_id: int,
        not_before: float,
        attempts: int,
        error: str | None,
        host_wait: HostWait | None = None,
    ) -> None: ...

    async def frontier_summary(self, now: float) -> FrontierSummary: ...
