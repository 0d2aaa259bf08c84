"""The state store contract: what every backend (SQLite, PostgreSQL) implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from ingestor.core.journal import JournalEntry
from ingestor.core.settle_steps import SettleSteps
from ingestor.core.state import (
    ArticleCommit,
    ArticleLookup,
    ArticlePrep,
    ClaimResult,
    EntryVersion,
    FeedClaims,
    FeedState,
    FrontierSummary,
    ItemRetry,
    PollCommit,
    RecordFiles,
    RecordRef,
    Settlement,
    SinkPosition,
)


class StateStore(Protocol):
    """Persistent state. Every method is safe to call concurrently from one event loop.

    The frontier methods are coarse on purpose, each one transaction: `claim_feeds` and
    `commit_poll` once per poll, `claim_articles` once per dispatch round, `settle_article`
    (or `commit_article`, `reschedule_article`) once per article.

    `shared`: other instances use the same state (PostgreSQL). Then claims are leases
    that lapse unless renewed, other instances' work appears in the frontier, and hosts
    are leased to one instance at a time.
    """

    shared: bool
    journal_writer: str  # whose journal segments this instance appends to ("" with SQLite)
    state_id: str  # the state's identity, made once (set by open); owns one output journal

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load_feeds(self) -> dict[str, FeedState]: ...

    async def save_feed(self, state: FeedState) -> None: ...

    async def save_feeds(self, states: Iterable[FeedState]) -> None: ...

    async def entry_versions(self, feed_id: str, keys: Sequence[str]) -> dict[str, EntryVersion]:
        """The keys among `keys` this feed produced before, with what is known of them."""
        ...

    async def record_by_canonical(self, canonical_url: str) -> RecordRef | None: ...

    # --- delivery sinks: a cursor in the journal per sink, and (shared) its lease ---

    async def sink_position(self, name: str, latest: bool) -> SinkPosition:
        """The sink's position; a new sink starts before the oldest journal line kept
        (cursor 0), or, `latest`, after the last one written."""
        ...

    async def sink_positions(self) -> dict[str, SinkPosition]: ...

    async def journal_newest(self) -> int:
        """The last journal seq given out (0: none yet)."""
        ...

    async def advance_sink(self, name: str, cursor: int, seq: int, now: float) -> bool:
        """Lines up to `seq` acknowledged, if the cursor is still `cursor` (False: it was
        rewound meanwhile, and stays so)."""
        ...

    async def sink_failed(self, name: str, error: str) -> None: ...

    async def rewind_sink(self, name: str, cursor: int) -> bool:
        """`ingestor sinks replay`: the cursor set to `cursor`; False: no such sink."""
        ...

    async def lease_sink(self, name: str, holder: str, now: float, until: float) -> bool:
        """Whether `holder` may deliver for the sink until `until` (its lease taken or
        renewed). With one instance (SQLite) always true."""
        ...

    async def prune(self, now: float, seen_max_age: float, fingerprint_window: float) -> int: ...

    async def feed_polls(self) -> dict[str, tuple[str | None, float | None, str | None]]:
        """feed id -> (instance that polled it last, when, instance polling it now); empty
        where one process owns the state."""
        ...

    # --- the durable frontier ---

    async def claim_feeds(
        self, requests: Sequence[tuple[str, str]], now: float, force: bool = False
    ) -> FeedClaims:
        """Claim the polls of these (feed id, host) pairs that are due (all of them with
        `force`) and not held by another instance; each comes with its current state."""
        ...

    async def claim_due_feeds(self, now: float, limit: int) -> dict[str, FeedState]:
        """The shared schedule: claim up to `limit` due feeds (earliest first) that no other
        instance holds, on hosts no other instance holds."""
        ...

    async def register_feeds(self, feeds: Sequence[tuple[str, str, float]]) -> None:
        """(feed id, host, first due time) of configured feeds the shared schedule lacks."""
        ...

    async def release_feeds(self, feed_ids: Sequence[str], next_due: float | None = None) -> None:
        """Give back polls that ended without a commit_poll (which gives its feed back),
        due again at `next_due` when given."""
        ...

    def watch_hosts(self, ready_at: Callable[[str], float]) -> None:
        """Where to learn when a host may be sent its next request (for the next holder)."""
        ...

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

    async def fingerprint_schemes(self, since: float) -> set[str]:
        """The MinHash schemes of the fingerprints ingested since `since`."""
        ...

    async def settle_article(self, sequence: SettleSteps, files: RecordFiles) -> Settlement:
        """Perform the settle sequence (core.settle_steps: prepare, decide, stage the file,
        commit, publish) with this backend's primitives, in one transaction where the
        backend allows it (SQLite: one transaction and one call into its thread, shared by
        the articles that arrive together). The staged file is durable before the commit;
        after an exception from `decide` or `files` the item is not done (PostgreSQL keeps
        the location reserved, as prepare_article alone does)."""
        ...

    async def reschedule_article(self, retry: ItemRetry) -> None: ...

    # --- the change journal (see ingestor.core.journal) ---

    async def journal_since(
        self, seq: int, limit: int, writer: str | None = None
    ) -> list[JournalEntry]:
        """Journal entries after `seq` (of one writer when given), in seq order."""
        ...

    async def take_over_lost_writers(
        self, now: float, settle: Callable[[str], Awaitable[None]]
    ) -> list[str]:
        """Instances of a fleet presumed dead (silent for LOST_AFTER_TTLS lease_ttls): for
        each, `settle(its journal writer)` runs while this instance holds the dead one's
        row (its restart waits for it), then the dead one is forgotten. Returns the
        writers settled. A store with one writer (SQLite) has none."""
        ...

    async def journal_latest(self, record_ids: Sequence[str]) -> dict[str, JournalEntry]:
        """The last journal entry of each of these records."""
        ...

    async def expire_records(
        self, before: float, now: float, limit: int, files: RecordFiles
    ) -> int:
        """output.retention, one transaction: up to `limit` records first ingested before
        `before` marked deleted (their dedup state stays) with a `delete` entry each, their
        files removed through `files` after the commit; the state's copy of journal entries
        older than `before` goes. Returns how many records were deleted."""
        ...

    async def frontier_summary(self, now: float) -> FrontierSummary: ...
