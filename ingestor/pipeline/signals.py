"""What article work tells the dispatcher, kept apart from both so neither needs the other
to be built first: the output failing (every item would fail: pause all claims), and in a
`run --once` pass, hosts that turned out slow and items put off past the pass."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from ingestor.core import frontier


class WorkSignals:
    def __init__(self) -> None:
        self.on_change: Callable[[], None] = lambda: None  # the dispatcher's wake-up
        # The output cannot be written: no claim before this time.
        self.paused_until = 0.0
        self.failing_since: float | None = None
        self.output_error = ""
        # run --once: its wait (None in the daemon); hosts whose page timed out or
        # trickled (host -> why) and their timeouts in a row; the earliest item of each
        # host put off past the pass.
        self.pass_wait: float | None = None
        self.slow_hosts: dict[str, str] = {}
        self.timeouts_in_row: Counter[str] = Counter()
        self.deferred: dict[str, float] = {}
        # The pass has nothing else to do: no request to a slow host is started now.
        self.pass_settled = False

    # --- the output ---

    def pause(self, until: float, reason: str = "") -> None:
        """Claim nothing before `until` (the output is failing: every item would fail)."""
        self.paused_until = max(self.paused_until, until)
        self.output_error = reason or self.output_error
        if self.failing_since is None:
            self.failing_since = time.time()

    def item_went_through(self) -> None:
        """An item finished while no pause held: the output works."""
        if self.paused_until <= time.time():
            self.failing_since = None

    # --- a run --once pass ---

    def new_pass(self, max_wait: float) -> None:
        """A `run --once` pass starts: it waits at most `max_wait` for what is due."""
        self.pass_wait = max_wait
        self.slow_hosts.clear()
        self.timeouts_in_row.clear()
        self.deferred.clear()
        self.pass_settled = False

    def mark_slow(self, host: str, reason: str) -> None:
        """A page of `host` timed out or trickled: the host is slow for the rest of the pass."""
        if host:
            self.slow_hosts.setdefault(host, reason)
            self.timeouts_in_row[host] += 1
            self.on_change()

    def page_fetched(self, host: str) -> None:
        """A page of `host` came back: its timeouts are no longer in a row."""
        if host in self.timeouts_in_row:
            del self.timeouts_in_row[host]

    def deferred_past_pass(self, host: str, due: float) -> None:
        """An item of `host` was put off past this pass (frontier.after_the_pass)."""
        self.deferred[host] = min(self.deferred.get(host, due), due)

    def given_up(self) -> set[str]:
        """Slow hosts whose pages timed out SLOW_HOST_STRIKES times in a row."""
        strikes = frontier.SLOW_HOST_STRIKES
        return {host for host, n in self.timeouts_in_row.items() if n >= strikes}
