"""The durable article frontier's rules: pure functions over plain data, no I/O.

A feed poll turns new entries into frontier items (`plan_items`); the dispatcher asks which
hosts may be sent work now (`plan_claims`) and when to look again (`next_wakeup`); a failed
article fetch becomes a retry at a later time or the fallback record (`after_failure`);
`run --once` stops when nothing is due soon (`settled`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ingestor.core.entry import FeedEntry
from ingestor.core.payload import encode_payload
from ingestor.core.urls import TrackingParams, canonicalize_url, host_key
from ingestor.errors import (
    FetchError,
    FetchTimeoutError,
    HostBackoffError,
    HTTPStatusError,
    RateLimitedError,
)

# The pseudo-host of items that need no page fetch: no politeness applies to them.
NO_FETCH_HOST = ""
# Each retry waits this many times longer than the one before (60 s, 4 m, 16 m, 64 m: the
# default five attempts span more than an hour, as a site's bad hour is common).
RETRY_FACTOR = 4.0
RETRY_JITTER = 0.2
# A 429 without Retry-After still means "slow down": the host waits this long at least.
DEFAULT_HOST_PAUSE = 30.0
# The output cannot be written (disk full): every article would fail alike, so all article
# work pauses this long, and the item comes back without an attempt counted.
SINK_PAUSE = 10.0


@dataclass(frozen=True)
class NewItem:
    """An entry about to enter the frontier, as a poll commit stores it."""

    feed_id: str
    entry_key: str
    canonical_url: str
    host: str
    payload: str  # the entry and its feed context as JSON (see `encode_payload`)
    is_update: bool
    enqueued_at: float
    entry_updated: float | None
    entry_digest: str | None = None  # FeedEntry.text_digest, kept with the entry's key


@dataclass(frozen=True)
class FrontierItem:
    """A claimed item: what the article pipeline works on."""

    item_id: int
    feed_id: str
    entry: FeedEntry
    canonical_url: str
    host: str
    feed_title: str | None
    feed_language: str | None
    is_update: bool
    attempts: int
    enqueued_at: float
    last_error: str | None = None
    # A finished record under this item's canonical URL, found by the claim itself.
    known_record: str | None = None
    # The feed's settings when the item was queued (see `feed_settings`), for an item whose
    # feed has left the configuration since.
    queued_with: Mapping[str, Any] | None = None


# --- what a poll puts into the frontier ---


def synthetic_canonical(feed_id: str, entry_key: str) -> str:
    """The dedup key of an entry without a link of its own (none, or one it shares)."""
    return f"{feed_id}#entry-{hashlib.sha256(entry_key.encode()).hexdigest()}"


def plan_items(
    feed_id: str,
    entries: Iterable[tuple[FeedEntry, bool]],
    *,
    fetch_articles: bool,
    feed_title: str | None,
    feed_language: str | None,
    tracking: TrackingParams,
    now: float,
    settings: Mapping[str, Any] | None = None,
) -> list[NewItem]:
    """(entry, is_update) pairs to the frontier items a poll commit stores; `settings`
    (`feed_settings`) travel with each item."""
    items = []
    for entry, is_update in entries:
        if entry.shared_link and entry.enclosures:
            # A podcast episode: its media file is what makes it itself.
            canonical = canonicalize_url(entry.enclosures[0].url, tracking)
            host = NO_FETCH_HOST
        elif entry.link and not entry.shared_link:
            canonical = canonicalize_url(entry.link, tracking)
            host = host_key(entry.link) if fetch_articles else NO_FETCH_HOST
        else:
            canonical = synthetic_canonical(feed_id, entry.key)
            host = NO_FETCH_HOST
        items.append(
            NewItem(
                feed_id=feed_id,
                entry_key=entry.key,
                canonical_url=canonical,
                host=host,
                payload=encode_payload(entry, feed_title, feed_language, settings),
                is_update=is_update,
                enqueued_at=now,
                entry_updated=entry.version_stamp,
                entry_digest=entry.text_digest,
            )
        )
    return items


def earliest_by_host(items: Iterable[NewItem]) -> dict[str, float]:
    hosts: dict[str, float] = {}
    for item in items:
        hosts[item.host] = min(hosts.get(item.host, item.enqueued_at), item.enqueued_at)
    return hosts


# --- what a failed fetch means ---


@dataclass(frozen=True)
class Retry:
    """Try the item again at `not_before`; `attempts` is the new count of failed tries."""

    not_before: float
    attempts: int
    error: str
    host_not_before: float | None = None  # the whole host waits too (Retry-After, 429)


@dataclass(frozen=True)
class Fallback:
    """Give up on the page: the record comes from the feed's own text. `host_not_before`:
    the host asked to wait too (a last 429), which the commit keeps for every request."""

    reason: str
    host_not_before: float | None = None


ArticleFailureDecision = Retry | Fallback


def retry_delay(attempts: int, base: float, rng: random.Random) -> float:
    """Exponential backoff with jitter for the `attempts`-th failed try (1-based)."""
    delay = base * RETRY_FACTOR ** max(attempts - 1, 0)
    return delay * rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)


def after_failure(
    error: FetchError,
    attempts: int,
    *,
    max_attempts: int,
    base_delay: float,
    now: float,
    rng: random.Random,
) -> ArticleFailureDecision:
    """What a failed article fetch means for its item.

    A request never sent because its host asked us to wait costs no attempt. A 429 or 503
    asks the whole host to wait (until its Retry-After, or a default pause for a bare 429)
    and the item comes back then. Connection errors, timeouts and 5xx retry with backoff.
    Anything else (404, 410, robots, too large, blocked address, not HTML) is permanent.
    """
    reason = error.reason
    if isinstance(error, HostBackoffError):
        return Retry(error.not_before, attempts, reason)
    retryable = isinstance(error, RateLimitedError) or error.transient
    if isinstance(error, HTTPStatusError) and error.status == 429:
        retryable = True
    if not retryable:
        return Fallback(reason)
    tried = attempts + 1
    if tried >= max_attempts:
        asked = error.not_before if isinstance(error, RateLimitedError) else None
        return Fallback(f"gave up after {tried} attempts, last: {reason}", asked)
    backoff = now + retry_delay(tried, base_delay, rng)
    if error.cut_short_until is not None:
        # Its host's wait stopped the fetch's own retries: the retry is owed when it ends.
        return Retry(max(error.cut_short_until, now), tried, reason)
    if isinstance(error, RateLimitedError):
        # The server said when: come back then, not later.
        return Retry(error.not_before, tried, reason, host_not_before=error.not_before)
    if isinstance(error, HTTPStatusError) and error.status == 429:
        pause = now + max(DEFAULT_HOST_PAUSE, base_delay)
        return Retry(max(backoff, pause), tried, reason, host_not_before=pause)
    return Retry(backoff, tried, reason)


# --- which hosts get work next ---


@dataclass(frozen=True)
class HostView:
    """What the dispatcher knows about one host with queued items."""

    earliest_due: float  # the earliest not_before among its unclaimed items
    in_flight: int = 0
    wait_until: float = 0.0  # Retry-After
    next_dispatch: float = 0.0  # per_host_delay / Crawl-delay spacing


def host_ready_at(view: HostView) -> float:
    return max(view.earliest_due, view.wait_until, view.next_dispatch)


def plan_claims(
    hosts: Mapping[str, HostView],
    now: float,
    capacity: int,
    per_host: int,
    spaced: Mapping[str, bool],
) -> list[tuple[str, int]]:
    """(host, how many) to claim now, at most `capacity` in all.

    Hosts are served earliest-due first, one item per host per round, so one host with
    thousands of items never starves the others; a host never has more than `per_host`
    in flight, and a host with a minimum spacing gets one item at a time.
    """
    if capacity <= 0:
        return []
    ready = sorted(
        (host_ready_at(view), host)
        for host, view in hosts.items()
        if host_ready_at(view) <= now and view.in_flight < _limit(host, per_host, spaced)
    )
    room = {host: _limit(host, per_host, spaced) - hosts[host].in_flight for _due, host in ready}
    plan: dict[str, int] = {}
    while capacity > 0 and room:
        for _due, host in ready:
            if capacity <= 0:
                break
            if room.get(host, 0) > 0:
                plan[host] = plan.get(host, 0) + 1
                room[host] -= 1
                capacity -= 1
                if room[host] == 0:
                    del room[host]
    return [(host, plan[host]) for _due, host in ready if host in plan]


def _limit(host: str, per_host: int, spaced: Mapping[str, bool]) -> int:
    if host == NO_FETCH_HOST:
        return 1_000_000  # no request is sent for these items
    return 1 if spaced.get(host) else per_host


def next_wakeup(hosts: Mapping[str, HostView], per_host: int, spaced: Mapping[str, bool]) -> float:
    """When the earliest host that has room becomes ready (inf when none)."""
    return min(
        (
            host_ready_at(view)
            for host, view in hosts.items()
            if view.in_flight < _limit(host, per_host, spaced)
        ),
        default=float("inf"),
    )


# A host whose pages timed out this many times in a row (no page in between came back)
# is given up for the rest of a `run --once` pass: a tarpit costs two rounds of timeouts
# on its connection slots, not one timeout per page.
SLOW_HOST_STRIKES = 3


def settled(
    hosts: Mapping[str, HostView],
    in_flight: int,
    now: float,
    max_wait: float,
    given_up: Collection[str] = (),
) -> bool:
    """`run --once` is done: nothing in flight and nothing due within `max_wait`; hosts
    `given_up` for the pass (SLOW_HOST_STRIKES timeouts in a row) count for neither."""
    if given_up:
        in_flight = sum(view.in_flight for host, view in hosts.items() if host not in given_up)
    if in_flight:
        return False
    return all(
        host_ready_at(view) > now + max_wait for host, view in hosts.items() if host not in given_up
    )


def without_deferred(
    hosts: Mapping[str, HostView], deferred: Mapping[str, float]
) -> dict[str, HostView]:
    """The hosts as `settled` should see them in a pass: a host whose earliest item is
    one put off past the pass (`after_the_pass`; host -> the earliest such due time)
    has nothing due in it."""
    views = dict(hosts)
    for host, due in deferred.items():
        view = views.get(host)
        if view is not None and view.earliest_due >= due:
            views[host] = replace(view, earliest_due=float("inf"))
    return views


def after_the_pass(decision: Retry, now: float, max_wait: float) -> Retry:
    """A page that timed out or trickled is not tried again in the same `run --once` pass
    (it would hold a connection slot for its whole timeout again): its retry is due after
    the pass's wait, and stays queued for the next run."""
    return replace(decision, not_before=max(decision.not_before, now + max_wait + 1.0))


def is_slow_failure(error: FetchError) -> bool:
    """A page that timed out (or trickled until the total timeout cut it off): its host
    is slow for the rest of a `run --once` pass."""
    return isinstance(error, FetchTimeoutError)


def describe_waiting(
    rows: Sequence[tuple[str, int, float, str | None]],
    now: float,
    slow: Mapping[str, str] | None = None,
) -> list[str]:
    """(host, queued, ready_at, last_error) rows as lines for a summary; a host that was
    slow this pass says so, with the page that made it slow."""
    lines = []
    slow = slow or {}
    for host, queued, ready_at, error in rows:
        if host in slow:
            lines.append(f"{host}: {queued} queued, left for the next run: slow ({slow[host]})")
            continue
        wait = max(ready_at - now, 0.0)
        why = f"; last error: {error}" if error else ""
        lines.append(f"{host or 'no fetch'}: {queued} queued, due in {wait:.0f}s{why}")
    return lines
