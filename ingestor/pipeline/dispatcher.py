"""Runs the durable frontier: claims due items host by host and hands each to a worker.

The items stay in the state store; this keeps only a small board per host (the earliest
due item, how many are in flight, when it may be sent the next one), so 50,000 queued
items cost no memory here. Which host goes next is decided by `frontier.plan_claims`.

run loop:
    plan = frontier.plan_claims(board, now, free slots)      # earliest-due host first
    items = store.claim_articles(plan)                       # one transaction, leased
    start work(item) for each; its result may put the host back on the board later
    sleep until the next host is ready, an item is added, or a worker finishes
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping

from ingestor.core import frontier
from ingestor.core.frontier import FrontierItem, HostView
from ingestor.http.politeness import HostLimiter
from ingestor.pipeline.signals import WorkSignals
from ingestor.store.protocol import StateStore

log = logging.getLogger(__name__)

# An in-process claim is released by the work's own commit; with one process the lease
# only matters when that never comes (a crash), and a restart clears it anyway.
_LEASE_SECONDS = 3600.0
_MAX_SLEEP = 5.0
# With a shared state, how often the board is re-read: other instances add items, finish
# them, and give hosts back.
_SHARED_REFRESH = 2.0
# ...and a claim of fewer than this many items waits this long for more free slots first.
_GATHER_ITEMS = 2
_GATHER_SECONDS = 0.05

# work(item) -> None when the item is finished, else the time it is due again.
Work = Callable[[FrontierItem], Awaitable[float | None]]


class ArticleDispatcher:
    def __init__(
        self,
        store: StateStore,
        limiter: HostLimiter,
        work: Work,
        *,
        concurrency: int,
        per_host: int,
        batch: int,
        lease_seconds: float = _LEASE_SECONDS,
        signals: WorkSignals | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.work = work
        self.concurrency = concurrency
        self.per_host = per_host
        self.batch = batch
        self._board: dict[str, float] = {}  # host -> earliest due unclaimed item
        self._in_flight: Counter[str] = Counter()
        self._next_dispatch: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._accepting = True
        self.signals = signals or WorkSignals()
        self.signals.on_change = self._progress.set
        self._shared = store.shared
        self._lease_seconds = lease_seconds
        self._refreshed_at = 0.0
        # Hosts added while a store read that rewrites the board was in flight: that read
        # may predate their commit, so they are applied again after it.
        self._added_meanwhile: dict[str, float] | None = None

    # --- lifecycle ---

    async def start(self) -> None:
        await self._refresh(time.time())
        self._loop_task = asyncio.create_task(self._run(), name="article-dispatcher")

    async def stop(self, grace: float = 0.0) -> None:
        """Claim nothing more; give work in flight `grace` seconds, then cancel it. Items
        cut short stay in the frontier and are claimed again after a restart."""
        self._accepting = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._tasks and grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- what others tell it ---

    def add(self, hosts: Mapping[str, float]) -> None:
        """New items were committed: host -> the earliest time one is due."""
        _keep_earliest(self._board, hosts)
        if self._added_meanwhile is not None:
            _keep_earliest(self._added_meanwhile, hosts)
        self._wake.set()

    @contextlib.contextmanager
    def _keeping_additions(self) -> Iterator[None]:
        """Around a store read whose answer replaces board entries: with several
        connections (PostgreSQL) a poll's items can commit after the read's snapshot and
        be added here before the read returns; without this, the read's older answer
        dropped the host and its items waited for the next run."""
        self._added_meanwhile = {}
        try:
            yield
        finally:
            added, self._added_meanwhile = self._added_meanwhile, None
            _keep_earliest(self._board, added)

    # --- what others ask ---

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def hosts_waiting(self, now: float) -> int:
        return sum(1 for host in self._board if self.limiter.not_before(host) > now)

    def views(self, now: float) -> dict[str, HostView]:
        hosts = set(self._board) | {h for h, n in self._in_flight.items() if n}
        return {
            host: HostView(
                earliest_due=self._board.get(host, float("inf")),
                in_flight=self._in_flight[host],
                wait_until=self.limiter.not_before(host),
                next_dispatch=self._next_dispatch.get(host, 0.0),
            )
            for host in hosts
        }

    async def wait_settled(self, max_wait: float) -> None:
        """Return once nothing is in flight and nothing is due before `max_wait` from now:
        the wait has one deadline, so a retry that fails again, or a host that asks to wait
        again and again, does not move it on."""
        deadline = time.time() + max_wait
        while True:
            self._progress.clear()
            now = time.time()
            signals = self.signals
            views = frontier.without_deferred(self.views(now), signals.deferred)
            left = max(deadline - now, 0.0)
            if frontier.settled(views, self.in_flight, now, left, signals.given_up()):
                # Nothing more to do: what slow hosts have left stays for the next run.
                signals.pass_settled = True
                return
            failing = signals.failing_since
            if failing is not None and now - failing > max_wait and not self.in_flight:
                # The output has failed for the whole wait (a full disk): the items stay
                # queued for the next run instead of a pass that never ends.
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), 1.0)

    # --- the loop ---

    async def _refresh(self, now: float) -> None:
        """The board from the store: hosts with unclaimed items (that no other instance
        holds) and the pauses hosts asked for."""
        with self._keeping_additions():
            self._board = await self.store.frontier_hosts(now)
        for host, until in (await self.store.host_waits(now)).items():
            self.limiter.defer_host(host, until)
        self._refreshed_at = now

    def _spaced(self) -> dict[str, bool]:
        return {host: self.limiter.delay_for(host) > 0 for host in self._board}

    async def _run(self) -> None:
        gathered = False
        while self._accepting:
            self._wake.clear()
            now = time.time()
            if self._shared and now - self._refreshed_at >= _SHARED_REFRESH:
                await self._refresh(now)
            spaced = self._spaced()
            room = min(self.concurrency - len(self._tasks), self.batch)
            if self.signals.paused_until > now:
                room = 0
            views = self.views(now)
            if self.signals.pass_settled:
                views = {h: v for h, v in views.items() if h not in self.signals.slow_hosts}
            plan = frontier.plan_claims(views, now, room, self.per_host, spaced)
            small = sum(count for _, count in plan) < _GATHER_ITEMS
            if self._shared and self._tasks and plan and small and not gathered:
                # Each claim is a database round trip: while work is in flight, let a few
                # more slots free up and claim them together.
                gathered = True
                await asyncio.sleep(_GATHER_SECONDS)
                continue
            gathered = False
            if plan:
                with self._keeping_additions():
                    result = await self.store.claim_articles(plan, now, now + self._lease_seconds)
                    for host, due in result.host_next.items():
                        if due is None:
                            self._board.pop(host, None)
                        else:
                            self._board[host] = due
                for item in result.items:
                    self._launch(item, now)
                self._progress.set()
                if result.items:
                    continue
            wake_at = max(
                frontier.next_wakeup(self.views(now), self.per_host, spaced),
                self.signals.paused_until,
            )
            longest = _SHARED_REFRESH if self._shared else _MAX_SLEEP
            timeout = min(max(wake_at - time.time(), 0.005), longest)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _launch(self, item: FrontierItem, now: float) -> None:
        self._in_flight[item.host] += 1
        delay = self.limiter.delay_for(item.host) if item.host else 0.0
        if delay > 0:
            self._next_dispatch[item.host] = now + delay
        task = asyncio.create_task(self._do(item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _do(self, item: FrontierItem) -> None:
        due_again: float | None = None
        try:
            due_again = await self.work(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The work handles its own failures; this is a bug. The item stays leased in
            # the frontier and comes back after a restart.
            log.exception("article %s (feed %s): unexpected error", item.entry.link, item.feed_id)
        finally:
            self._in_flight[item.host] -= 1
            if self._in_flight[item.host] <= 0:
                del self._in_flight[item.host]
            if due_again is not None:
                _keep_earliest(self._board, {item.host: due_again})
            else:
                self.signals.item_went_through()
            self._wake.set()
            self._progress.set()


def _keep_earliest(board: dict[str, float], hosts: Mapping[str, float]) -> None:
    """Each host's due time on `board` becomes the earlier of its own and the given one."""
    for host, due in hosts.items():
        board[host] = min(board.get(host, due), due)
