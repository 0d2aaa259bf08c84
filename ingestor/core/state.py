"""The plain data the state store keeps and exchanges: a feed's state, what a poll or an
article commits, claims and summaries. The store interface itself is
ingestor/store/protocol.py."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import NamedTuple, Protocol

from ingestor.core.frontier import FrontierItem, NewItem
from ingestor.core.journal import JournalChange, JournalEntry, JournalOp


class DuplicateKind(enum.StrEnum):
    """How a duplicate was found (the record's `duplicate_kind`)."""

    EXACT = "exact"  # the same normalized body
    NEAR = "near"  # MinHash similarity at or above dedup.threshold


class SettleOutcome(enum.Enum):
    """How an article's settlement ended."""

    WRITTEN = "written"
    WRITTEN_DUPLICATE = "written_duplicate"  # written, marked as a duplicate
    URL_DUPLICATE = "url_duplicate"  # its canonical URL was written already
    UNCHANGED = "unchanged"  # an update whose body changed too little
    DROPPED = "dropped"  # a near duplicate, dedup.near_duplicates: drop


class EntryVersion(NamedTuple):
    """What the state keeps of an entry a feed produced: its date (FeedEntry.version_stamp)
    and text digest (FeedEntry.text_digest); None where they were never recorded."""

    updated: float | None
    digest: str | None


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
    # Every request of this feed the server answered with an error, reset or let time out
    # (retries within one poll included), ever: a streak's polls are error_count.
    failed_requests: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    last_fetch_at: float | None = None
    disabled_reason: str | None = None
    disabled_config: str | None = None  # the feed config the disabling applied to
    next_due: float = 0.0
    items: int = 0
    recent_entry_times: tuple[float, ...] = ()
    # A site entry (or a sitemap index): the sources it polls, what discovery found
    # (url, kind, why it was or was not used) and when; the canonical URLs its sources
    # listed lately, with where (COVERAGE_FEED | COVERAGE_SITEMAP) and when last seen.
    sources: tuple[str, ...] = ()
    discovery: tuple[tuple[str, str, str], ...] = ()
    discovered_at: float | None = None
    coverage: tuple[tuple[str, int, float], ...] = ()
    backfilled: bool = False  # its history was read (backfill:); never again

    @property
    def url(self) -> str:
        return self.effective_url or self.feed_id


_FEED_STATE_FIELDS = frozenset(f.name for f in fields(FeedState))


def evolve(state: FeedState, **changes: object) -> FeedState:
    """dataclasses.replace for FeedState, in a tenth of its time: a poll makes several,
    and replace's call of the 25-field __init__ was 8% of an unchanged poll's CPU.
    FeedState validates nothing at construction, so copying its fields is the same."""
    unknown = changes.keys() - _FEED_STATE_FIELDS
    if unknown:
        raise TypeError(f"FeedState has no field {', '.join(sorted(unknown))}")
    new = object.__new__(FeedState)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


@dataclass(frozen=True)
class SinkPosition:
    """A delivery sink's place in the journal: every line up to `cursor` acknowledged."""

    name: str
    cursor: int
    updated_at: float | None = None  # the last acknowledgement
    last_error: str | None = None
    failures: int = 0  # deliveries that failed, ever
    holder: str | None = None  # the instance delivering now (PostgreSQL)
    lease_until: float = 0.0


@dataclass(frozen=True)
class RecordRef:
    record_id: str
    canonical_url: str
    location: str
    done: bool
    content_hash: str | None = None
    first_ingested: float = 0.0
    deleted: bool = False  # its file was removed by output.retention


@dataclass(frozen=True)
class NearCandidate:
    record_id: str
    signature: bytes
    ingested_at: float
    legacy: bool = False  # its signature is in the previous MinHash scheme


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
    op: JournalOp = "create"  # for the journal: a new record, or a changed one
    story_id: str | None = None  # the story's first record, when not this one

    def journal_change(self, location: str) -> JournalChange:
        return JournalChange(
            self.op, self.record_id, location, self.content_hash, self.committed_at
        )


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
class DedupQuery:
    """What a body's duplicates are looked up by: its hash, else its LSH bands (same
    MinHash scheme, ingested since `since`)."""

    content_hash: str
    scheme: str
    band_keys: Sequence[int]
    since: float
    # The body's MinHash signature: claimed at once, so a racing instance sees it.
    signature: bytes | None = None
    # The same body in the previous MinHash scheme, while records that carry it are in the
    # window: their candidates come back marked `legacy`.
    legacy: DedupQuery | None = None


@dataclass(frozen=True)
class ArticleLookup:
    """The one look-up before a record is written (see ArticlePrep)."""

    record_id: str
    canonical_url: str
    location: str  # proposed; an earlier reservation of this id wins
    now: float
    dedup: DedupQuery | None = None  # None: an empty body, nothing to compare
    want_signature: bool = False  # an update: the old body's signature too


@dataclass(frozen=True)
class ItemRetry:
    """A frontier item goes back: due again at `not_before`, with its attempts so far."""

    item_id: int
    not_before: float
    attempts: int
    error: str | None
    host_wait: HostWait | None = None


@dataclass(frozen=True)
class ArticlePrep:
    """The one look-up before a record is written: its reserved location, the record
    already under this id (if any), and the dedup candidates."""

    location: str
    existing: RecordRef | None
    exact: str | None = None
    candidates: list[NearCandidate] = field(default_factory=list)
    old_signature: bytes | None = None
    # The story each of these records belongs to (exact, candidates, the record itself).
    stories: dict[str, str] = field(default_factory=dict)


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
    host_wait: HostWait | None = None  # the page's host asked to wait (its last answer)


@dataclass(frozen=True)
class Settlement:
    """How an article ends, decided from its ArticlePrep inside the store's transaction:
    what the state records and, when a record is written, its file (JSON bytes and the
    location). `outcome` and `duplicate_kind` are for the caller's counters."""

    commit: ArticleCommit
    outcome: SettleOutcome
    output: tuple[bytes, str] | None = None
    duplicate_kind: DuplicateKind | None = None
    updated: bool = False


@dataclass(frozen=True)
class StagedFile:
    """A record file written durably under a staging name, not yet under its own."""

    staging_name: str
    location: str


class RecordFiles(Protocol):
    """Where the store's transactions put record files and journal lines.

    Inside a transaction: `put` stages a file (durable under a staging name), `discard`
    drops one whose change rolled back, `sync` makes the staged names durable (once per
    transaction), `queue` says what to do once the transaction commits (install a staged
    file, delete a file, append the change's journal line). After COMMIT the store calls
    `publish` (files renamed into place, then journal lines appended); after a failed
    COMMIT, `abandon` (staged files stay for the reconciliation at the next start, as
    the commit's fate may be unknown)."""

    def put(self, data: bytes, location: str) -> StagedFile: ...

    def discard(self, staged: StagedFile) -> None: ...

    def sync(self) -> None: ...

    def queue(self, staged: StagedFile | None, entry: JournalEntry | None) -> None: ...

    def publish(self) -> None: ...

    def abandon(self) -> None: ...


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


@dataclass(frozen=True)
class FeedClaims:
    """The answer to a claim on feed polls: the feeds this instance may poll now (with
    their current state: another instance may have polled them since), and for the rest
    when to ask again and why."""

    claimed: dict[str, FeedState] = field(default_factory=dict)
    busy: dict[str, tuple[float, str]] = field(default_factory=dict)  # id -> (when, why)
