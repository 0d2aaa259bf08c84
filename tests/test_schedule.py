from __future__ import annotations

import random
from datetime import UTC, datetime

from ingestor.config.model import FeedConfig, ScheduleConfig
from ingestor.core.schedule import (
    base_interval,
    blocked_until,
    error_backoff,
    first_due,
    jittered,
    next_due,
    skip_forward,
)
from ingestor.core.state import FeedState

FEED = FeedConfig(url="https://e.com/feed")
SCHEDULE = ScheduleConfig(interval=900, min_interval=300, max_interval=86400, jitter=0.1)


def test_jitter_is_symmetric_and_bounded():
    rng = random.Random(1)
    values = [jittered(1000, 0.1, rng) for _ in range(2000)]
    assert 900 <= min(values) < 920 and 1080 < max(values) <= 1100
    assert abs(sum(values) / len(values) - 1000) < 10  # no drift later on average


def test_adaptive_interval_follows_publishing_pace_within_bounds():
    busy = FeedState(feed_id="f", recent_entry_times=tuple(range(0, 6000, 600)))
    quiet = FeedState(feed_id="f", recent_entry_times=tuple(range(0, 10 * 86400 * 7, 86400 * 7)))
    assert base_interval(FEED, busy, SCHEDULE) == 300  # gap 600 / 2
    assert base_interval(FEED, quiet, SCHEDULE) == 86400  # capped at max_interval
    fixed = FeedConfig(url="https://e.com/feed", interval=60)
    assert base_interval(fixed, busy, SCHEDULE) == 60  # a per-feed interval is respected


def test_ttl_and_update_period_are_lower_bounds():
    state = FeedState(feed_id="f", ttl=3600)
    assert base_interval(FEED, state, SCHEDULE) == 3600
    state = FeedState(feed_id="f", update_period=7200)
    assert base_interval(FEED, state, SCHEDULE) == 7200


def test_error_backoff_grows_and_is_capped():
    assert [error_backoff(n, 900, SCHEDULE) for n in (1, 2, 3)] == [900, 1800, 3600]
    assert error_backoff(50, 900, SCHEDULE) == 86400


def test_retry_after_and_cache_lifetime_push_the_next_poll():
    state = FeedState(feed_id="f", not_before=50_000.0, fresh_until=20_000.0)
    assert next_due(FEED, state, SCHEDULE, 1000.0, random.Random(1)) == 50_000.0


def test_skip_hours_and_days():
    monday_3am = datetime(2024, 1, 1, 3, 30, tzinfo=UTC).timestamp()
    moved = skip_forward(monday_3am, skip_hours=[3, 4], skip_days=[])
    assert datetime.fromtimestamp(moved, UTC) == datetime(2024, 1, 1, 5, 0, tzinfo=UTC)
    moved = skip_forward(monday_3am, skip_hours=[], skip_days=[0])
    assert datetime.fromtimestamp(moved, UTC) == datetime(2024, 1, 2, 0, 0, tzinfo=UTC)
    assert skip_forward(monday_3am, range(24), []) == monday_3am  # never skip forever


def test_restart_keeps_schedule_and_new_feeds_are_spread():
    rng = random.Random(3)
    assert first_due(FeedState(feed_id="f", next_due=5000.0), 100.0, 60, rng) == 5000.0
    spread = [first_due(None, 100.0, 60, rng) for _ in range(100)]
    assert min(spread) >= 100 and max(spread) <= 160 and len(set(spread)) > 90


def test_once_still_honours_server_requests_and_backoff():
    now = 1000.0
    assert blocked_until(FeedState(feed_id="f", next_due=5000.0), now) == 0.0
    assert blocked_until(FeedState(feed_id="f", next_due=5000.0, error_count=2), now) == 5000.0
    assert blocked_until(FeedState(feed_id="f", not_before=2000.0), now) == 2000.0
