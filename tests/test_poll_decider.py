"""core.poll_decider as a table: what each poll result does to a feed's state, without a
server (the pipeline tests run the same decisions against real ones)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from ingestor.config.model import FeedConfig, ScheduleConfig
from ingestor.core import poll_decider
from ingestor.core.entry import FeedMeta
from ingestor.core.poll_decider import Gate
from ingestor.core.polling import feed_fingerprint
from ingestor.core.state import FeedState, evolve
from ingestor.errors import ConnectError, GoneError, HostBackoffError, RateLimitedError

FEED = FeedConfig(url="https://news.example/feed.xml")
SCHEDULE = ScheduleConfig(interval=900, jitter=0.0, adaptive=False)
NOW = 1_730_800_000.0  # 2024-11-05


def rng() -> random.Random:
    return random.Random(7)


@pytest.mark.parametrize(
    ("state", "force", "after_wait", "gate", "retry_at"),
    [
        (FeedState(feed_id=FEED.url), False, False, Gate.POLL, None),
        # A forced pass still honours a Retry-After, and invites a poll right after it...
        (FeedState(feed_id=FEED.url, not_before=NOW + 5), True, False, Gate.WAITING, NOW + 5),
        # ...but a Cache-Control lifetime or the error backoff mean "not in this pass".
        (FeedState(feed_id=FEED.url, fresh_until=NOW + 50), True, False, Gate.WAITING, None),
        (
            FeedState(feed_id=FEED.url, error_count=2, next_due=NOW + 600),
            True,
            False,
            Gate.WAITING,
            None,
        ),
        # Right after the very wait the server asked for, the backoff does not apply.
        (
            FeedState(feed_id=FEED.url, error_count=2, next_due=NOW + 600),
            True,
            True,
            Gate.POLL,
            None,
        ),
        # The daemon polls when the feed is due: the gate lets it through.
        (FeedState(feed_id=FEED.url, fresh_until=NOW + 50), False, False, Gate.POLL, None),
    ],
)
def test_gate(state, force, after_wait, gate, retry_at):
    decision = poll_decider.gate(FEED, state, NOW, force, after_wait)
    assert (decision.gate, decision.retry_at) == (gate, retry_at)


def test_gone_disables_until_the_configuration_changes():
    failure = poll_decider.failed(
        FEED, FeedState(feed_id=FEED.url), GoneError(FEED.url, 410, "Gone"), SCHEDULE, NOW, rng()
    )
    assert failure.disabled and failure.state.error_count == 1
    assert poll_decider.gate(FEED, failure.state, NOW, False, False).gate is Gate.DISABLED
    changed = FeedConfig(url=FEED.url, interval=60)
    assert feed_fingerprint(changed) != failure.state.disabled_config
    reopened = poll_decider.gate(changed, failure.state, NOW, False, False)
    assert reopened.gate is Gate.POLL and reopened.reenabled_from.startswith("410 Gone")
    assert reopened.state.disabled_reason is None and reopened.state.error_count == 0


@pytest.mark.parametrize(
    ("error", "count", "due", "host_wait", "served"),
    [
        (RateLimitedError(FEED.url, 503, NOW + 3), 0, NOW + 3, True, 1),
        (HostBackoffError(FEED.url, NOW + 7), 0, NOW + 7, False, 0),
        (ConnectError(FEED.url, "connection refused"), 1, NOW + 900, False, 1),
    ],
)
def test_a_stated_wait_is_a_date_and_anything_else_a_failure_streak(
    error, count, due, host_wait, served
):
    before = FeedState(feed_id=FEED.url, last_error="HTTP 500 Internal Server Error")
    failure = poll_decider.failed(FEED, before, error, SCHEDULE, NOW, rng())
    assert failure.state.error_count == count
    assert failure.state.next_due == pytest.approx(due)
    assert (failure.host_wait is not None) == host_wait
    assert failure.state.failed_requests == served
    # A request never sent (its host was told to wait) keeps the feed's real last error.
    expected = before.last_error if isinstance(error, HostBackoffError) else str(error)
    assert failure.state.last_error == expected


def test_the_error_backoff_grows_only_with_failures_without_a_stated_time():
    state = FeedState(feed_id=FEED.url, error_count=3)
    refused = ConnectError(FEED.url, "connection refused")
    streak = poll_decider.failed(FEED, state, refused, SCHEDULE, NOW, rng())
    assert streak.state.error_count == 4 and streak.state.next_due == NOW + 900 * 8
    waited = poll_decider.failed(
        FEED, state, RateLimitedError(FEED.url, 429, NOW + 30), SCHEDULE, NOW, rng()
    )
    assert waited.state.error_count == 3 and waited.state.next_due == NOW + 30


def test_fetched_moves_the_feed_and_notes_its_freshness():
    state = FeedState(feed_id=FEED.url)
    moved = poll_decider.fetched(state, NOW, "https://news.example/v2.xml", 60)
    assert moved.url == "https://news.example/v2.xml" and moved.fresh_until == NOW + 60
    assert moved.feed_id == FEED.url  # the configured URL stays its identity
    assert poll_decider.fetched(state, NOW, None, None).effective_url is None


def test_not_modified_and_polled_ok_clear_the_failure_streak():
    failing = FeedState(feed_id=FEED.url, error_count=2, last_error="HTTP 500")
    kept = poll_decider.not_modified(FEED, failing, SCHEDULE, NOW, rng())
    assert (kept.error_count, kept.last_error, kept.last_success_at) == (0, None, NOW)
    assert kept.next_due == NOW + 900
    same = poll_decider.not_modified(
        FEED, failing, SCHEDULE, NOW, rng(), '"v2"', "Mon, 04 Nov 2024", same_body=True
    )
    assert (same.etag, same.last_modified) == ('"v2"', "Mon, 04 Nov 2024")
    dates = [
        datetime(2024, 11, 4, tzinfo=UTC),
        None,
        datetime.fromtimestamp(NOW + 5 * 86400, UTC),  # a date in the future: ignored
    ]
    parsed = poll_decider.polled_ok(
        FEED,
        evolve(failing, items=4),
        SCHEDULE,
        NOW,
        rng(),
        meta=FeedMeta(title="News", language="en"),
        etag='"v3"',
        last_modified=None,
        body_hash="abc",
        entry_dates=dates,
        new_entries=2,
    )
    assert (parsed.title, parsed.language, parsed.etag, parsed.body_hash) == (
        "News",
        "en",
        '"v3"',
        "abc",
    )
    assert parsed.items == 6 and parsed.error_count == 0
    assert parsed.recent_entry_times == (datetime(2024, 11, 4, tzinfo=UTC).timestamp(),)


def test_entries_counted():
    assert poll_decider.entries_counted([False, True, False]) == (2, 1)
