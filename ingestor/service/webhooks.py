"""Webhook sinks: the change journal POSTed to a receiver, in order, signed, at least once.

deliver(sink):
    while running:
        lease the sink (PostgreSQL: one instance of the fleet delivers it)
        cursor = store.sink_position(sink)            # re-read: `sinks replay` may rewind
        lines = journal after cursor, at most `batch`, up to a line not yet published
        POST {"lines": [...]} with X-Ingestor-Signature
        2xx -> store.advance_sink(cursor -> last seq)  # durable; only then the next batch
        else -> the same lines again after 1 s, 2 s, ... 60 s; never a later line first

A SIGTERM cancels the task: a batch in flight stays behind the cursor and is sent again by
the next start (receivers dedupe by seq). The sink's URL is the operator's own: it is not
held to http.allowed_networks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Protocol

import aiohttp

from ingestor.config.model import Config, WebhookConfig
from ingestor.core import delivery
from ingestor.core.cleaning import clean_line
from ingestor.core.journal import JournalEntry
from ingestor.core.metrics import Metrics
from ingestor.errors import ConfigError
from ingestor.service.tail import SegmentFiles, render
from ingestor.store.factory import make_store
from ingestor.store.protocol import StateStore
from ingestor.store.sqlite import rewind_sink_in

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5


class Lines(Protocol):
    async def after(self, seq: int, limit: int) -> list[JournalEntry]: ...


class WebhookSink:
    def __init__(
        self,
        sink: WebhookConfig,
        store: StateStore,
        source: Lines,
        output_dir: Path,
        metrics: Metrics,
        instance: str,
        lease_seconds: float,
    ) -> None:
        self.sink = sink
        self.name = sink.sink_name
        self.store = store
        self.source = source
        self.output_dir = output_dir
        self.metrics = metrics
        self.instance = instance
        # Held across a whole POST: no other instance sends while one may be in flight.
        self.lease_seconds = lease_seconds + sink.timeout
        self.failures = 0  # in a row
        self.lag_lines = 0.0
        # A batch that was not acknowledged: (the cursor it followed, its last seq). It is
        # sent again as it was, never grown by the lines written since.
        self._unacked: tuple[int, int] | None = None

    async def run(self, stop: asyncio.Event, until_caught_up: bool = False) -> None:
        """Deliver until `stop` is set (or, `until_caught_up`, until no line is left:
        `run --once`)."""
        timeout = aiohttp.ClientTimeout(total=self.sink.timeout)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=True) as session:
            while not stop.is_set():
                if await self.deliver_once(session):
                    continue
                if until_caught_up and not self.failures:
                    return
                wait = delivery.retry_delay(self.failures) if self.failures else POLL_INTERVAL
                await _sleep(stop, wait)

    async def deliver_once(self, session: aiohttp.ClientSession) -> bool:
        """One batch: True when lines were acknowledged."""
        now = time.time()
        if not await self.store.lease_sink(self.name, self.instance, now, now + self.lease_seconds):
            return False
        # A read: place_sinks made the sink's row at start (a replay may have moved it).
        position = (await self.store.sink_positions()).get(self.name) or (
            await self.store.sink_position(self.name, latest=self.sink.start == "latest")
        )
        entries = await self._next_lines(position.cursor)
        if self._unacked is not None and self._unacked[0] == position.cursor:
            entries = [e for e in entries if e.seq <= self._unacked[1]]
        self.lag_lines = float(max(await self.store.journal_newest() - position.cursor, 0))
        if not entries:
            return False
        lines = [render(e, self.output_dir, paths_only=False) for e in entries]
        body = delivery.batch_body(lines)
        error = await self._post(session, body)
        if error is not None:
            self._unacked = (position.cursor, entries[-1].seq)
            self.failures += 1
            self.metrics.inc("sink_delivery_failures", self.name)
            await self.store.sink_failed(self.name, error)
            log.warning(
                "sink %s: lines %d-%d not delivered (%s); sent again in %.0fs",
                self.name,
                entries[0].seq,
                entries[-1].seq,
                error,
                delivery.retry_delay(self.failures),
            )
            return False
        self.failures = 0
        self._unacked = None
        await self.store.advance_sink(self.name, position.cursor, entries[-1].seq, time.time())
        return True

    async def _next_lines(self, cursor: int) -> list[JournalEntry]:
        entries = await self.source.after(cursor, self.sink.batch)
        if entries and entries[0].seq > cursor + 1:
            log.warning(
                "sink %s: journal lines %d-%d were removed by retention before delivery",
                self.name,
                cursor + 1,
                entries[0].seq - 1,
            )
        published = [(self.output_dir / e.path).exists() for e in entries]
        return delivery.ready_lines(entries, published, time.time())

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> str | None:
        """None when acknowledged, else why not (one line: the status or the error)."""
        headers = {
            **dict(self.sink.headers),
            "Content-Type": "application/json",
            delivery.SIGNATURE_HEADER: delivery.signature(self.sink.secret, body),
        }
        try:
            async with session.post(
                self.sink.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                if delivery.acknowledged(response.status):
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self.sink.timeout:g}s"
        except aiohttp.ClientError as exc:
            return clean_line(f"{type(exc).__name__}: {exc}", 200).replace(self.sink.url, self.name)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class _StoreLines:
    """The journal in the order the shared state gives it (a fleet's instances each
    write segments of their own; PostgreSQL holds the one order)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def after(self, seq: int, limit: int) -> list[JournalEntry]:
        return await self.store.journal_since(seq, limit)


def make_sinks(config: Config, store: StateStore, metrics: Metrics) -> list[WebhookSink]:
    """One WebhookSink per configured sink, its lag and failures in the metrics."""
    source: Lines = _StoreLines(store) if store.shared else SegmentFiles(config.output.dir)
    sinks = [
        WebhookSink(
            sink,
            store,
            source,
            config.output.dir,
            metrics,
            metrics.instance,
            config.state.lease_ttl,
        )
        for sink in config.sinks
    ]
    if sinks:
        metrics.labeled_gauges["sink_lag_lines"] = (
            "sink",
            lambda: {s.name: s.lag_lines for s in sinks},
        )
    return sinks


async def place_sinks(sinks: list[WebhookSink]) -> None:
    """A sink seen for the first time gets its place before anything is written: `from:
    latest` then means the lines written from this start on."""
    for sink in sinks:
        await sink.store.sink_position(sink.name, latest=sink.sink.start == "latest")


class RunningSinks:
    """The daemon's delivery tasks. stop() cancels them without waiting for a receiver:
    an unacknowledged batch stays behind its cursor for the next start."""

    def __init__(self, sinks: list[WebhookSink]) -> None:
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._guarded(s)) for s in sinks]

    async def _guarded(self, sink: WebhookSink) -> None:
        while not self._stop.is_set():
            try:
                await sink.run(self._stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the state store failed: try again shortly
                log.error("sink %s: %s; trying again in 5s", sink.name, clean_line(str(exc), 300))
                await _sleep(self._stop, 5.0)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def deliver_pending(sinks: list[WebhookSink], max_wait: float) -> None:
    """`run --once`: each sink gets what the journal holds, until it is caught up or
    `max_wait` has passed (failures are retried within it); the rest waits for the next
    run."""
    stop = asyncio.Event()

    async def one(sink: WebhookSink) -> None:
        try:
            await asyncio.wait_for(sink.run(stop, until_caught_up=True), max_wait)
        except TimeoutError:
            pass  # what is left goes with the next run
        except Exception as exc:  # the pass's records are in; its delivery waits
            log.error(
                "sink %s: %s; delivered at the next run", sink.name, clean_line(str(exc), 300)
            )

    await asyncio.gather(*(one(s) for s in sinks))


async def replay_sink(config: Config, name: str, first_seq: int) -> int:
    """`ingestor sinks replay NAME --from SEQ`: the sink delivers again from line SEQ
    (while the daemon runs too: it reads the cursor before each batch). Returns the
    journal's last seq."""
    names = [s.sink_name for s in config.sinks]
    if name not in names:
        known = ", ".join(names) or "none configured"
        raise ConfigError([f"sinks replay: no sink named {name!r} (sinks: {known})"])
    if first_seq < 1:
        raise ConfigError(["sinks replay: --from must be a journal seq (1 or more)"])
    store = make_store(config.state, read_only=True)
    await store.open()
    try:
        oldest = await store.journal_since(0, 1)
        if not store.shared:
            # The segment files are what a SQLite daemon delivers from.
            kept = await SegmentFiles(config.output.dir).oldest()
            oldest = [e for e in oldest if kept is None or e.seq >= kept] or oldest
        if oldest and first_seq < oldest[0].seq:
            raise ConfigError(
                [
                    f"sinks replay: lines before {oldest[0].seq} were removed by retention "
                    f"(output.retention); replay from {oldest[0].seq} or later"
                ]
            )
        newest = await store.journal_newest()
        if first_seq > newest + 1:
            # Past the end: the cursor would skip the lines still to come.
            raise ConfigError(
                [
                    f"sinks replay: --from {first_seq} is past the journal's end (its last "
                    f"line is {newest}); replay from {max(newest, 1)} or earlier"
                ]
            )
        if store.shared:
            await store.sink_position(name, latest=False)
            await store.rewind_sink(name, first_seq - 1)
        else:
            await asyncio.to_thread(_rewind_sqlite, config, name, first_seq - 1)
        return newest
    finally:
        await store.close()


def _rewind_sqlite(config: Config, name: str, cursor: int) -> None:
    # The daemon holds the state's lock file; SQLite itself lets a second writer in.
    assert config.state.path is not None
    conn = sqlite3.connect(config.state.path, isolation_level=None, timeout=10)
    try:
        conn.execute("INSERT OR IGNORE INTO sinks (name, cursor) VALUES (?, ?)", (name, cursor))
        rewind_sink_in(conn, name, cursor)
    finally:
        conn.close()
