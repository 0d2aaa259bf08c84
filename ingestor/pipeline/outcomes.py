"""What became of a feed poll, of an article, and of a whole pass (typed, no strings)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field, replace


class Article(enum.Enum):
    """What became of one frontier item."""

    WRITTEN = "written"
    WRITTEN_DUPLICATE = "written_duplicate"  # written, marked as a near/exact duplicate
    DUPLICATE = "duplicate"  # its URL was written already
    DROPPED = "dropped"  # a near duplicate, dedup.near_duplicates: drop
    SKIPPED = "skipped"  # under min_text_length
    UNCHANGED = "unchanged"  # an update whose body changed too little to re-emit
    RETRY = "retry"  # back in the frontier for later


class PollStatus(enum.Enum):
    OK = "ok"
    NOT_MODIFIED = "not_modified"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    SKIPPED = "skipped"
    DISABLED = "disabled"


@dataclass
class PollOutcome:
    feed_id: str
    status: PollStatus
    new_entries: int = 0
    updated_entries: int = 0  # known entries queued again as updates (dedup.updates)
    error: str | None = None
    retry_at: float | None = None  # the server (or its host) asked us to come back then
    # The article links the document lists now (history left out), and whether it was a
    # sitemap: a site entry that polled it counts them (its coverage). Canonicalized
    # there, so that polls of feeds that belong to no site do not pay for it.
    listed: tuple[str, ...] = ()
    sitemap: bool = False
    # run --once: why the pass left this feed for the next run (a wait it could not honour
    # within once_max_wait, or its polls used up).
    unfinished: str | None = None

    def describe_entries(self) -> str:
        parts = []
        if self.new_entries:
            parts.append(f"{self.new_entries} new entries queued")
        if self.updated_entries:
            parts.append(f"{self.updated_entries} updated entries queued again")
        return ", ".join(parts) or "no new entries"


@dataclass
class PassSummary:
    feeds: int = 0
    total_feeds: int = 0
    polled: int = 0
    not_modified: int = 0
    failed: int = 0
    skipped: int = 0
    queued: int = 0  # new entries put into the frontier
    written: int = 0
    duplicates: int = 0
    retries: int = 0
    fallbacks: int = 0  # records from the feed's text because the page could not be had
    errors: list[str] = field(default_factory=list)
    left: int = 0  # items still in the frontier at the end of a pass
    left_why: list[str] = field(default_factory=list)
    stopped_by: str | None = None  # the signal that ended the pass early
    unfinished: list[str] = field(default_factory=list)  # feeds left for the next run, why

    def add(self, outcome: PollOutcome) -> None:
        self.feeds += 1
        if outcome.status in (PollStatus.SKIPPED, PollStatus.DISABLED):
            self.skipped += 1
        else:
            self.polled += 1
        if outcome.status in (PollStatus.NOT_MODIFIED, PollStatus.UNCHANGED):
            self.not_modified += 1
        if outcome.status is PollStatus.FAILED:
            self.failed += 1
            if outcome.error:
                self.errors.append(outcome.error)
        self.queued += outcome.new_entries + outcome.updated_entries
        if outcome.unfinished:
            self.unfinished.append(outcome.unfinished)

    def count(self, result: Article) -> None:
        self.written += result in (Article.WRITTEN, Article.WRITTEN_DUPLICATE)
        self.duplicates += result in (
            Article.WRITTEN_DUPLICATE,
            Article.DUPLICATE,
            Article.DROPPED,
        )
        self.retries += result is Article.RETRY


def final_outcome(feed_url: str, last: PollOutcome, answered: PollOutcome | None) -> PollOutcome:
    """A feed's outcome in a `run --once` pass, from its last poll and the last one that
    got an answer: a feed still asked to wait is unfinished, and says so with the answer
    that asked (a 429 is a failed poll even when the last try only found its host
    waiting)."""
    if last.retry_at is None:
        return last
    base = answered or last
    why = base.error or "its host asked to wait (Retry-After); no request was sent"
    if base.error and base.error.startswith(feed_url):
        why = base.error[len(feed_url) :].lstrip(": ")
    when = time.strftime("%H:%M:%S", time.localtime(last.retry_at))
    return replace(
        base,
        retry_at=last.retry_at,
        unfinished=f"{feed_url}: {why}; polled again at the next run (not before {when})",
    )
