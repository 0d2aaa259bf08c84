"""When is a feed due next? Pure functions of the feed's state, its config and the clock."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from ingestor.config.model import FeedConfig, ScheduleConfig
from ingestor.core.state import FeedState

RECENT_ENTRY_TIMES = 20
# Without an explicit schedule.max_interval, adaptive polling stretches a feed's interval
# at most this many times: `interval: 1m` means about every minute, not every six hours.
ADAPTIVE_STRETCH = 4.0
# What a feed says of itself (ttl, sy:updatePeriod) is honoured up to this, or up to an
# explicit max_interval.
SELF_DECLARED_CAP = 86400.0


def configured_interval(feed: FeedConfig, schedule: ScheduleConfig) -> float:
    return feed.interval if feed.interval is not None else schedule.interval


def adaptive_bounds(feed: FeedConfig, schedule: ScheduleConfig) -> tuple[float, float]:
    """The range adaptive polling keeps a feed's interval in: never slower than
    max_interval (by default ADAPTIVE_STRETCH times the configured interval), never faster
    than min_interval (or the configured interval, when that is shorter)."""
    configured = configured_interval(feed, schedule)
    upper = schedule.max_interval
    if upper is None:
        upper = configured * ADAPTIVE_STRETCH
    return min(schedule.min_interval, configured), max(upper, configured)


def base_interval(feed: FeedConfig, state: FeedState, schedule: ScheduleConfig) -> float:
    """The poll interval before jitter: configured, adapted to the feed's pace, bounded
    below by what the feed says about itself (ttl, sy:updatePeriod)."""
    return explain_interval(feed, state, schedule)[0]


def explain_interval(
    feed: FeedConfig, state: FeedState, schedule: ScheduleConfig
) -> tuple[float, str]:
    """base_interval and why, in words (for `status`)."""
    interval = configured_interval(feed, schedule)
    why = f"the configured interval {_span(interval)}"
    if schedule.adaptive and feed.interval is None:
        pace = publishing_interval(state.recent_entry_times)
        if pace is not None:
            lower, upper = adaptive_bounds(feed, schedule)
            # Poll about twice per typical gap between entries.
            interval = min(max(pace / 2, lower), upper)
            why = (
                f"adaptive: the feed publishes about every {_span(pace)}, so every "
                f"{_span(interval)} (kept within {_span(lower)}..{_span(upper)})"
            )
    cap = schedule.max_interval if schedule.max_interval is not None else SELF_DECLARED_CAP
    for name, lower_bound in (("ttl", state.ttl), ("sy:updatePeriod", state.update_period)):
        if lower_bound and min(lower_bound, cap) > interval:
            interval = min(lower_bound, cap)
            why = f"the feed's {name} asks for at least {_span(interval)}"
    return interval, why


def due_reason(feed: FeedConfig, state: FeedState, schedule: ScheduleConfig, now: float) -> str:
    """Why the feed is due when it is (`status`)."""
    if state.not_before > now:
        return "the server asked to wait until then (Retry-After)"
    if state.error_count:
        return f"error backoff after {state.error_count} failures in a row"
    if state.fresh_until > now and state.fresh_until >= state.next_due:
        return "the last response stays fresh until then (Cache-Control max-age)"
    return explain_interval(feed, state, schedule)[1]


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
        if seconds >= size * 2:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:g}s"


def publishing_interval(entry_times: Iterable[float]) -> float | None:
    """Median gap between recent distinct entry times, or None with too few to judge."""
    times = sorted(set(entry_times))
    if len(times) < 3:
        return None
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    return statistics.median(gaps) if gaps else None


def merge_entry_times(old: Iterable[float], new: Iterable[float]) -> tuple[float, ...]:
    return tuple(sorted(set(old) | set(new))[-RECENT_ENTRY_TIMES:])


def jittered(interval: float, jitter: float, rng: random.Random) -> float:
    """Symmetric jitter (APScheduler's only delays): feeds on one host drift apart
    without the schedule creeping later on average."""
    return interval * (1 + rng.uniform(-jitter, jitter)) if jitter > 0 else interval


def error_backoff(failures: int, interval: float, schedule: ScheduleConfig) -> float:
    """Exponential backoff after consecutive failures, from the interval up to the cap."""
    exponent = min(max(failures - 1, 0), 30)
    return min(interval * (2**exponent), max(schedule.max_error_backoff, interval))


def skip_forward(moment: float, skip_hours: Iterable[int], skip_days: Iterable[int]) -> float:
    """The first time at or after `moment` outside the feed's skipHours/skipDays (UTC)."""
    hours, days = set(skip_hours), set(skip_days)
    if not hours and not days:
        return moment
    if len(hours) >= 24 or len(days) >= 7:
        return moment  # a feed that skips everything would never be polled: ignore it
    current = datetime.fromtimestamp(moment, UTC)
    for _ in range(24 * 8):
        if current.hour not in hours and current.weekday() not in days:
            return current.timestamp()
        current = (current + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return moment


def next_due(
    feed: FeedConfig,
    state: FeedState,
    schedule: ScheduleConfig,
    now: float,
    rng: random.Random,
    failed: bool = False,
    server_wait: float | None = None,
) -> float:
    """`server_wait`: the server said when to come back (Retry-After): exactly then, no
    backoff and no jitter, as a failure with a stated time is no failure streak."""
    if server_wait is not None:
        return max(server_wait, now)
    interval = base_interval(feed, state, schedule)
    if failed:
        interval = error_backoff(state.error_count, interval, schedule)
    due = now + jittered(interval, schedule.jitter, rng)
    due = max(due, state.fresh_until, state.not_before)
    return skip_forward(due, state.skip_hours, state.skip_days)


def first_due(state: FeedState | None, now: float, spread: float, rng: random.Random) -> float:
    """A feed's first due time: its stored schedule, or a random point in the next
    `spread` seconds for a new feed, so a fresh start with many feeds is no thundering herd."""
    if state is not None and state.next_due > 0:
        return state.next_due
    return now + rng.uniform(0, spread)


def blocked_until(state: FeedState, now: float, after_wait: bool = False) -> float:
    """`--once` still honours what the server asked for and the error backoff (except on a
    poll that follows, in the same pass, the very wait the server asked for)."""
    waits = [state.fresh_until, state.not_before]
    if state.error_count > 0 and not after_wait:
        waits.append(state.next_due)
    return max([w for w in waits if w > now], default=0.0)
