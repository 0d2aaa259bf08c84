"""The state store contract: what every backend (SQLite, PostgreSQL) implements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from ingestor.core.state import (
    ArticleCommit,
    ArticleLookup,
    ArticlePrep,
    ClaimResult,
    CommitItem,
    DedupQuery,
    FeedState,
    FrontierSummary,
    ItemRetry,
    NearCandidate,
    PollCommit,
    RecordRef,
)


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

    async def mark_entries_seen(self, feed_id: str, keys: Sequence[str], now: float) -> None: ...

    async def signature_of(self, record_id: str) -> bytes | None: ...

    async def record_by_canonical(self, canonical_url: str) -> RecordRef | None: ...

    async def reserve_record(
        self, record_id: str, canonical_url: str, location: str, now: float
    ) -> str: ...

    async def duplicate_candidates(
        self, query: DedupQuery, exclude_id: str
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

    async def prepare_article(self, lookup: ArticleLookup) -> ArticlePrep:
        """Reserve the record's location (an earlier reservation wins) and look up what
        dedup needs, in one transaction."""
        ...

    async def commit_article(self, commit: ArticleCommit) -> None: ...

    async def reschedule_article(self, retry: ItemRetry) -> None: ...

    async def frontier_summary(self, now: float) -> FrontierSummary: ...
