"""A feed poll's decisions: pure functions from the feed's configuration, its state and what
the poll found to the feed's next state. No I/O: `pipeline/feed_poller.py` fetches, parses, looks
the entries up and commits; every change to a FeedState a poll makes is one of these.

    gate            before a request: disabled (410) until its configuration changes;
                    waiting, in a forced pass, for what a server asked or the backoff
    fetched         a response came: where the feed lives now, how long it stays fresh
    not_modified    304, or the very body parsed last time
    polled_ok       a new body parsed: validators, metadata, entry dates, entries counted
    sources_polled  a site entry's sources were polled (each with its own decisions)
    failed          no usable answer: a failure streak and its backoff; a stated wait
                    (Retry-After) is a date instead; 410 disables the feed
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ingestor.config.model import FeedConfig, ScheduleConfig
from ingestor.core import schedule
from ingestor.core.entry import FeedMeta
from ingestor.core.polling import feed_fingerprint, with_meta
from ingestor.core.state import FeedState, HostWait, evolve
from ingestor.core.urls import host_key
from ingestor.errors import (
    FetchError,
    GoneError,
    HostBackoffError,
    IngestorError,
    ParseError,
    RateLimitedError,
    RetryLater,
)

# An entry dated further ahead than this is a feed's mistake, not a publishing time.
_FUTURE_SLACK = 86400.0


class Gate(enum.Enum):
    POLL = "poll"
    DISABLED = "disabled"  # 410 Gone, and the configuration has not changed since
    WAITING = "waiting"  # a forced pass, and the feed must not be asked yet


@dataclass(frozen=True)
class GateDecision:
    gate: Gate
    state: FeedState
    retry_at: float | None = None  # WAITING: poll again in this pass at this time
    reenabled_from: str | None = None  # the 410 reason a changed configuration lifted


def gate(
    feed: FeedConfig, state: FeedState, now: float, force: bool, after_wait: bool
) -> GateDecision:
    """Whether to send the request. A forced poll (`run --once`) still honours what a
    server asked for and the error backoff, except right after the very wait it asked for
    (`after_wait`); only a Retry-After invites a poll again in the same pass."""
    reenabled = None
    if state.disabled_reason:
        if state.disabled_config == feed_fingerprint(feed):
            return GateDecision(Gate.DISABLED, state)
        reenabled = state.disabled_reason
        state = evolve(state, disabled_reason=None, disabled_config=None, error_count=0)
    waiting = schedule.blocked_until(state, now, after_wait) if force else 0.0
    if waiting > now:
        retry_at = waiting if waiting <= state.not_before else None
        return GateDecision(Gate.WAITING, state, retry_at, reenabled)
    return GateDecision(Gate.POLL, state, None, reenabled)


def fetched(
    state: FeedState,
    now: float,
    permanent_url: str | None,
    max_age: float | None,
    failed_requests: int = 0,
) -> FeedState:
    """A response came: a permanent redirect moves the feed (its configured URL stays its
    identity), and a Cache-Control lifetime says when it may be asked again.
    `failed_requests`: error answers the fetch retried past, counted all the same."""
    changes: dict[str, object] = {"last_fetch_at": now, "fresh_until": now + (max_age or 0.0)}
    if failed_requests:
        changes["failed_requests"] = state.failed_requests + failed_requests
    if permanent_url and permanent_url != state.url:
        changes["effective_url"] = permanent_url
    return evolve(state, **changes)


def not_modified(
    feed: FeedConfig,
    state: FeedState,
    config: ScheduleConfig,
    now: float,
    rng: random.Random,
    etag: str | None = None,
    last_modified: str | None = None,
    same_body: bool = False,
) -> FeedState:
    """A 304, or (`same_body`) the body parsed last time: its validators are kept."""
    if same_body:
        state = evolve(state, etag=etag, last_modified=last_modified)
    return _succeeded(feed, state, config, now, rng)


def polled_ok(
    feed: FeedConfig,
    state: FeedState,
    config: ScheduleConfig,
    now: float,
    rng: random.Random,
    *,
    meta: FeedMeta,
    etag: str | None,
    last_modified: str | None,
    body_hash: str,
    entry_dates: Iterable[datetime | None],
    new_entries: int,
    sources: tuple[str, ...] = (),
) -> FeedState:
    """A new body parsed. Its validators are stored only with it: a parse cut short (a
    worker's time limit) is redone at the next poll instead of answered by a 304.
    `sources`: the sitemaps a sitemap index lists (polled as feeds of their own). A feed
    that asks for backfill has read its history with this poll: never again."""
    times = [
        moment.timestamp()
        for moment in entry_dates
        if moment is not None and moment.timestamp() <= now + _FUTURE_SLACK
    ]
    state = with_meta(state, meta)
    state = evolve(
        state,
        etag=etag,
        last_modified=last_modified,
        body_hash=body_hash,
        recent_entry_times=schedule.merge_entry_times(state.recent_entry_times, times),
        items=state.items + new_entries,
        sources=sources,
        backfilled=state.backfilled or feed.backfill > 0,
    )
    return _succeeded(feed, state, config, now, rng)


def sources_polled(
    feed: FeedConfig,
    state: FeedState,
    config: ScheduleConfig,
    now: float,
    rng: random.Random,
    error: str | None = None,
    **changes: object,
) -> FeedState:
    """A site entry polled its sources (each committed its own state): what discovery
    found and the coverage kept, and the entry due again at its interval. `error`: no
    source could be polled (or none was found); the entry still keeps its schedule."""
    state = _succeeded(feed, evolve(state, last_fetch_at=now, **changes), config, now, rng)
    return evolve(state, last_error=error, last_error_at=now) if error else state


def _succeeded(
    feed: FeedConfig, state: FeedState, config: ScheduleConfig, now: float, rng: random.Random
) -> FeedState:
    state = evolve(state, error_count=0, last_error=None, last_success_at=now)
    return evolve(state, next_due=schedule.next_due(feed, state, config, now, rng))


@dataclass(frozen=True)
class Failure:
    """What a failed poll means: the new state, the wait a server stated (None: a failure
    streak), whether the feed is now disabled, and a pause its whole host owes."""

    state: FeedState
    server_wait: float | None
    disabled: bool = False
    host_wait: HostWait | None = None


def failed(
    feed: FeedConfig,
    state: FeedState,
    error: IngestorError,
    config: ScheduleConfig,
    now: float,
    rng: random.Random,
) -> Failure:
    """A server that said when to come back (Retry-After, or its host's) set a date, not
    a failure streak: the next poll is exactly then and the error backoff does not grow.
    410 Gone disables the feed until its configuration changes. Anything else counts a
    failure and backs off. A request never sent (its host was asked to wait, by another
    feed's answer) changes nothing but the date: the feed's last real answer stays its
    last error."""
    stated = error.not_before if isinstance(error, RetryLater) and error.not_before else None
    if isinstance(error, HostBackoffError) and stated is not None:
        state = evolve(state, not_before=stated)
        due = schedule.next_due(feed, state, config, now, rng, failed=True, server_wait=stated)
        return Failure(evolve(state, next_due=due), stated)
    state = evolve(
        state,
        error_count=state.error_count if stated else state.error_count + 1,
        failed_requests=state.failed_requests + _served_failures(error),
        last_error=str(error),
        last_error_at=now,
        last_fetch_at=now,
    )
    gone = isinstance(error, GoneError)
    if gone:
        state = evolve(
            state,
            disabled_reason=f"410 Gone at {error.url}; disabled until the feed's "
            "configuration changes",
            disabled_config=feed_fingerprint(feed),
        )
    host_wait = None
    if stated is not None:
        state = evolve(state, not_before=stated)
        if isinstance(error, RateLimitedError):
            host_wait = HostWait(host_key(error.url), stated, error.reason)
    # A failure whose retries its host's wait cut short is tried again when the wait
    # ends (counted all the same): the retry the fetch could not make.
    owed = error.cut_short_until if isinstance(error, FetchError) else None
    wait = stated if stated is not None else owed
    due = schedule.next_due(feed, state, config, now, rng, failed=True, server_wait=wait)
    return Failure(evolve(state, next_due=due), wait, gone, host_wait)


def _served_failures(error: IngestorError) -> int:
    """The error answers behind a failed poll: a fetch's requests, or one malformed
    document; none for our own trouble (a worker that died)."""
    if isinstance(error, FetchError):
        return error.failed_requests
    return 1 if isinstance(error, ParseError) else 0


def entries_counted(is_update: Sequence[bool]) -> tuple[int, int]:
    """(new, updated) among the items a poll queues."""
    updated = sum(is_update)
    return len(is_update) - updated, updated
