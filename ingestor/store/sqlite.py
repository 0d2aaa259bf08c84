"""SQLite state store (WAL). One connection, used from one dedicated thread, so the event
loop never waits on disk and every call is atomic with respect to the others."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ingestor.core.frontier import FrontierItem, decode_payload
from ingestor.core.state import (
    ArticleCommit,
    ArticlePrep,
    ClaimResult,
    CommitItem,
    FeedState,
    FrontierRow,
    FrontierSummary,
    HostWait,
    NearCandidate,
    PollCommit,
    RecordRef,
)
from ingestor.errors import StateError

T = TypeVar("T")
# 1: feeds, entries, records, fingerprints. 2: the article frontier and host waits.
SCHEMA_VERSION = 2
_BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feeds (
    feed_id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    next_due REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS entries (
    feed_id TEXT NOT NULL,
    entry_key TEXT NOT NULL,
    seen_at REAL NOT NULL,
    record_id TEXT,
    entry_updated REAL,
    PRIMARY KEY (feed_id, entry_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_seen_at ON entries (seen_at);
CREATE TABLE IF NOT EXISTS records (
    record_id TEXT PRIMARY KEY,
    canonical_url TEXT NOT NULL UNIQUE,
    location TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    content_hash TEXT,
    feed_id TEXT,
    first_ingested REAL NOT NULL,
    committed_at REAL
);
CREATE INDEX IF NOT EXISTS records_content_hash ON records (content_hash) WHERE done = 1;
CREATE TABLE IF NOT EXISTS fingerprints (
    record_id TEXT PRIMARY KEY,
    scheme TEXT NOT NULL,
    signature BLOB NOT NULL,
    ingested_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fingerprints_ingested_at ON fingerprints (ingested_at);
CREATE TABLE IF NOT EXISTS lsh_bands (
    band_key INTEGER NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (band_key, record_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lsh_bands_record ON lsh_bands (record_id);
CREATE TABLE IF NOT EXISTS frontier (
    item_id INTEGER PRIMARY KEY,
    feed_id TEXT NOT NULL,
    entry_key TEXT NOT NULL,
    canonical_url TEXT NOT NULL,
    host TEXT NOT NULL,
    payload TEXT NOT NULL,
    is_update INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    last_error TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    UNIQUE (feed_id, entry_key)
);
CREATE INDEX IF NOT EXISTS frontier_host_due ON frontier (host, not_before);
CREATE TABLE IF NOT EXISTS article_failures (
    feed_id TEXT PRIMARY KEY,
    url TEXT,
    error TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS host_waits (
    host TEXT PRIMARY KEY,
    not_before REAL NOT NULL,
    reason TEXT
) WITHOUT ROWID;
"""
_ENTRY_SEEN = (
    "INSERT INTO entries (feed_id, entry_key, seen_at, record_id, entry_updated) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (feed_id, entry_key) DO UPDATE SET "
    "seen_at = excluded.seen_at, record_id = coalesce(excluded.record_id, entries.record_id), "
    "entry_updated = coalesce(excluded.entry_updated, entries.entry_updated)"
)
_HOST_WAIT = (
    "INSERT INTO host_waits VALUES (?, ?, ?) ON CONFLICT (host) DO UPDATE SET "
    "not_before = max(not_before, excluded.not_before), reason = excluded.reason"
)
_SAVE_FEED = (
    "INSERT INTO feeds (feed_id, data, next_due) VALUES (?, ?, ?) "
    "ON CONFLICT (feed_id) DO UPDATE SET data = excluded.data, next_due = excluded.next_due"
)
_CLAIM_COLUMNS = (
    "f.item_id, f.feed_id, f.canonical_url, f.host, f.payload, f.is_update, f.attempts, "
    "f.enqueued_at, f.last_error, r.record_id"
)

_RECOVERY_HINT = (
    "to recover, stop ingestor, move the file (and its -wal/-shm files) aside and start "
    "again: records already in the output directory are kept, feeds are re-polled and "
    "their current entries are written again under the same ids"
)


def _feed_to_json(state: FeedState) -> str:
    return json.dumps(dataclasses.asdict(state), separators=(",", ":"))


def _feed_from_json(text: str) -> FeedState:
    data = json.loads(text)
    known = {f.name for f in dataclasses.fields(FeedState)}
    data = {k: v for k, v in data.items() if k in known}
    for key in ("skip_hours", "skip_days", "recent_entry_times"):
        if key in data and isinstance(data[key], list):
            data[key] = tuple(data[key])
    return FeedState(**data)


def _write_record(conn: sqlite3.Connection, item: CommitItem) -> None:
    conn.execute(
        "UPDATE records SET done = 1, content_hash = ?, feed_id = ?, committed_at = ? "
        "WHERE record_id = ?",
        (item.content_hash, item.feed_id, item.committed_at, item.record_id),
    )
    if item.signature is not None:
        conn.execute(
            "INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?)",
            (item.record_id, item.scheme, item.signature, item.committed_at),
        )
        conn.execute("DELETE FROM lsh_bands WHERE record_id = ?", (item.record_id,))
        conn.executemany(
            "INSERT OR IGNORE INTO lsh_bands VALUES (?, ?)",
            [(key, item.record_id) for key in item.band_keys],
        )


_RECORD_BY = (
    "SELECT record_id, canonical_url, location, done, content_hash, first_ingested "
    "FROM records WHERE "
)


def _record_ref(row: tuple[Any, ...]) -> RecordRef:
    return RecordRef(row[0], row[1], row[2], bool(row[3]), row[4], row[5])


def _frontier_item(row: tuple[Any, ...]) -> FrontierItem:
    item_id, feed_id, canonical, host, payload, is_update, attempts, enqueued, error, known = row
    entry, feed_title, feed_language = decode_payload(payload)
    return FrontierItem(
        item_id=item_id,
        feed_id=feed_id,
        entry=entry,
        canonical_url=canonical,
        host=host,
        feed_title=feed_title,
        feed_language=feed_language,
        is_update=bool(is_update),
        attempts=attempts,
        enqueued_at=enqueued,
        last_error=error,
        known_record=known,
    )


class SQLiteStateStore:
    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        # A reader (`ingestor status`) takes no lock, so it works beside a running daemon.
        self.read_only = read_only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._has_frontier = True

    # --- lifecycle ---

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"state directory {self.path.parent}: {exc.strerror}") from None
        if self.read_only:
            self._open_read_only()
            return
        self._acquire_lock()
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL survives a process crash (kill -9); only power loss can drop the
            # last transactions, which the deterministic ids then redo without duplicates.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise StateError(
                    f"state database {self.path} has schema version {row[0]}, newer than this "
                    f"ingestor understands ({SCHEMA_VERSION}): upgrade ingestor"
                )
            # Older versions only lack tables, which the script above has just created.
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            # This process holds the lock file: any lease in the frontier is a dead
            # process's, and its items are due again now.
            conn.execute("UPDATE frontier SET lease_until = 0 WHERE lease_until > 0")
            conn.execute("SELECT count(*) FROM feeds").fetchone()
        except sqlite3.DatabaseError as exc:
            self._release_lock()
            message = str(exc)
            if "locked" in message:
                raise StateError(
                    f"state database {self.path} is locked by another program ({message}); "
                    "stop the other process and start again"
                ) from None
            raise StateError(
                f"state database {self.path} is unusable ({message}); {_RECOVERY_HINT}"
            ) from None
        self._conn = conn

    def _open_read_only(self) -> None:
        if not self.path.exists():
            raise StateError(f"state database {self.path} does not exist yet: run ingestor first")
        try:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("SELECT count(*) FROM feeds").fetchone()
            # A state written by an older release has no frontier until a writer migrates it.
            self._has_frontier = (
                conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'article_failures'"
                ).fetchone()[0]
                > 0
            )
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"state database {self.path} is unusable ({exc}); {_RECOVERY_HINT}"
            ) from None
        self._conn = conn

    def _acquire_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"state database {self.path} is in use by another ingestor process "
                f"(pid {holder}); stop it first, or give this one its own state.path"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA optimize")
            self._conn.close()
            self._conn = None
        self._release_lock()

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"state database {self.path} is not open")
        return self._conn

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # --- feeds ---

    async def load_feeds(self) -> dict[str, FeedState]:
        def load() -> dict[str, FeedState]:
            rows = self.conn.execute("SELECT data FROM feeds").fetchall()
            states = (_feed_from_json(row[0]) for row in rows)
            return {s.feed_id: s for s in states}

        return await self._run(load)

    async def save_feed(self, state: FeedState) -> None:
        await self.save_feeds([state])

    async def save_feeds(self, states: Iterable[FeedState]) -> None:
        rows = [(s.feed_id, _feed_to_json(s), s.next_due) for s in states]

        def save(conn: sqlite3.Connection) -> None:
            conn.executemany(_SAVE_FEED, rows)

        if rows:
            await self._run(self._transaction, save)

    async def delete_feeds(self, feed_ids: Iterable[str]) -> None:
        ids = [(f,) for f in feed_ids]

        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM feeds WHERE feed_id = ?", ids)

        if ids:
            await self._run(self._transaction, delete)

    # --- entries ---

    async def entry_updated_times(
        self, feed_id: str, keys: Sequence[str]
    ) -> dict[str, float | None]:
        def lookup() -> dict[str, float | None]:
            found: dict[str, float | None] = {}
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), _BATCH):
                batch = unique[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                for key, updated in self.conn.execute(
                    f"SELECT entry_key, entry_updated FROM entries "
                    f"WHERE feed_id = ? AND entry_key IN ({marks})",
                    (feed_id, *batch),
                ):
                    found[key] = updated
            return found

        return await self._run(lookup)

    async def mark_entries_seen(
        self,
        feed_id: str,
        keys: Sequence[str],
        now: float,
        record_id: str | None = None,
        entry_updated: float | None = None,
    ) -> None:
        rows = [(feed_id, key, now, record_id, entry_updated) for key in keys]

        def mark(conn: sqlite3.Connection) -> None:
            conn.executemany(_ENTRY_SEEN, rows)

        if rows:
            await self._run(self._transaction, mark)

    # --- records and dedup ---

    async def record_by_canonical(self, canonical_url: str) -> RecordRef | None:
        def lookup() -> RecordRef | None:
            row = self.conn.execute(_RECORD_BY + "canonical_url = ?", (canonical_url,)).fetchone()
            return _record_ref(row) if row else None

        return await self._run(lookup)

    async def reserve_record(
        self, record_id: str, canonical_url: str, location: str, now: float
    ) -> str:
        """Claim a location for a record before its file is written; returns the location
        to use (an earlier claim wins, so a redo after a crash rewrites the same file)."""

        def reserve(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT location FROM records WHERE record_id = ?", (record_id,)
            ).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute(
                "INSERT INTO records (record_id, canonical_url, location, done, first_ingested) "
                "VALUES (?, ?, ?, 0, ?)",
                (record_id, canonical_url, location, now),
            )
            return location

        return await self._run(self._transaction, reserve)

    async def signature_of(self, record_id: str) -> bytes | None:
        def lookup() -> bytes | None:
            row = self.conn.execute(
                "SELECT signature FROM fingerprints WHERE record_id = ?", (record_id,)
            ).fetchone()
            return bytes(row[0]) if row else None

        return await self._run(lookup)

    async def duplicate_candidates(
        self,
        content_hash: str,
        scheme: str,
        band_keys: Sequence[int],
        since: float,
        exclude_id: str,
    ) -> tuple[str | None, list[NearCandidate]]:
        def lookup() -> tuple[str | None, list[NearCandidate]]:
            exact = self._find_exact(content_hash, exclude_id)
            if exact is not None:
                return exact, []
            return None, self._near_candidates(scheme, band_keys, since, exclude_id)

        return await self._run(lookup)

    def _find_exact(self, content_hash: str, exclude_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT record_id FROM records WHERE content_hash = ? AND done = 1 "
            "AND record_id != ? ORDER BY committed_at LIMIT 1",
            (content_hash, exclude_id),
        ).fetchone()
        return row[0] if row else None

    def _near_candidates(
        self, scheme: str, band_keys: Sequence[int], since: float, exclude_id: str
    ) -> list[NearCandidate]:
        if not band_keys:
            return []
        marks = ",".join("?" * len(band_keys))
        rows = self.conn.execute(
            f"SELECT DISTINCT f.record_id, f.signature, f.ingested_at "
            f"FROM lsh_bands b JOIN fingerprints f ON f.record_id = b.record_id "
            f"WHERE b.band_key IN ({marks}) AND f.scheme = ? AND f.ingested_at >= ? "
            f"AND f.record_id != ? ORDER BY f.ingested_at LIMIT 200",
            (*band_keys, scheme, since, exclude_id),
        ).fetchall()
        return [NearCandidate(r[0], bytes(r[1]), r[2]) for r in rows]

    async def commit_record(self, item: CommitItem) -> None:
        def commit(conn: sqlite3.Connection) -> None:
            _write_record(conn, item)
            conn.execute(
                _ENTRY_SEEN,
                (
                    item.feed_id,
                    item.entry_key,
                    item.committed_at,
                    item.record_id,
                    item.entry_updated,
                ),
            )

        await self._run(self._transaction, commit)

    async def prune(self, now: float, seen_max_age: float, fingerprint_window: float) -> int:
        """Forget entry keys older than seen_max_age and fingerprints outside the window."""

        def prune(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM entries WHERE seen_at < ?", (now - seen_max_age,)
            ).rowcount
            old = [
                r[0]
                for r in conn.execute(
                    "SELECT record_id FROM fingerprints WHERE ingested_at < ?",
                    (now - fingerprint_window,),
                )
            ]
            for start in range(0, len(old), _BATCH):
                batch = old[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                conn.execute(f"DELETE FROM lsh_bands WHERE record_id IN ({marks})", batch)
                conn.execute(f"DELETE FROM fingerprints WHERE record_id IN ({marks})", batch)
            conn.execute("DELETE FROM host_waits WHERE not_before < ?", (now,))
            return removed + len(old)

        return await self._run(self._transaction, prune)

    # --- the durable frontier ---

    async def commit_poll(self, commit: PollCommit) -> None:
        state = commit.state
        items = [
            (
                i.feed_id,
                i.entry_key,
                i.canonical_url,
                i.host,
                i.payload,
                int(i.is_update),
                i.enqueued_at,
            )
            for i in commit.items
        ]
        seen = [
            (i.feed_id, i.entry_key, i.enqueued_at, None, i.entry_updated) for i in commit.items
        ]

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(_SAVE_FEED, (state.feed_id, _feed_to_json(state), state.next_due))
            # An entry still queued keeps its place and attempts; its text is the newest.
            conn.executemany(
                "INSERT INTO frontier (feed_id, entry_key, canonical_url, host, payload, "
                "is_update, enqueued_at, not_before) VALUES (?, ?, ?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (feed_id, entry_key) DO UPDATE SET payload = excluded.payload, "
                "is_update = min(is_update, excluded.is_update)",
                items,
            )
            conn.executemany(_ENTRY_SEEN, seen)
            if commit.host_wait is not None:
                wait = commit.host_wait
                conn.execute(_HOST_WAIT, (wait.host, wait.until, wait.reason))

        await self._run(self._transaction, save)

    async def frontier_hosts(self, now: float) -> dict[str, float]:
        def lookup() -> dict[str, float]:
            rows = self.conn.execute(
                "SELECT host, min(not_before) FROM frontier WHERE lease_until <= ? GROUP BY host",
                (now,),
            )
            return {host: due for host, due in rows}

        return await self._run(lookup)

    async def host_waits(self, now: float) -> dict[str, float]:
        def lookup() -> dict[str, float]:
            rows = self.conn.execute(
                "SELECT host, not_before FROM host_waits WHERE not_before > ?", (now,)
            )
            return {host: until for host, until in rows}

        return await self._run(lookup)

    async def claim_articles(
        self, requests: Sequence[tuple[str, int]], now: float, lease_until: float
    ) -> ClaimResult:
        def claim(conn: sqlite3.Connection) -> ClaimResult:
            items: list[FrontierItem] = []
            host_next: dict[str, float | None] = {}
            for host, count in requests:
                rows = conn.execute(
                    f"SELECT {_CLAIM_COLUMNS} FROM frontier f LEFT JOIN records r "
                    "ON r.canonical_url = f.canonical_url AND r.done = 1 "
                    "WHERE f.host = ? AND f.not_before <= ? AND f.lease_until <= ? "
                    "ORDER BY f.not_before, f.item_id LIMIT ?",
                    (host, now, now, count),
                ).fetchall()
                conn.executemany(
                    "UPDATE frontier SET lease_until = ? WHERE item_id = ?",
                    [(lease_until, row[0]) for row in rows],
                )
                items.extend(_frontier_item(row) for row in rows)
                host_next[host] = conn.execute(
                    "SELECT min(not_before) FROM frontier WHERE host = ? AND lease_until <= ?",
                    (host, now),
                ).fetchone()[0]
            return ClaimResult(items, host_next)

        return await self._run(self._transaction, claim)

    async def prepare_article(
        self,
        record_id: str,
        canonical_url: str,
        location: str,
        now: float,
        dedup: tuple[str, str, Sequence[int], float] | None,
        want_signature: bool = False,
    ) -> ArticlePrep:
        def prepare(conn: sqlite3.Connection) -> ArticlePrep:
            row = conn.execute(_RECORD_BY + "record_id = ?", (record_id,)).fetchone()
            existing = _record_ref(row) if row else None
            if existing is None:
                conn.execute(
                    "INSERT INTO records (record_id, canonical_url, location, done, "
                    "first_ingested) VALUES (?, ?, ?, 0, ?)",
                    (record_id, canonical_url, location, now),
                )
            exact, candidates = None, []
            if dedup is not None:
                content_hash, scheme, band_keys, since = dedup
                exact = self._find_exact(content_hash, record_id)
                if exact is None:
                    candidates = self._near_candidates(scheme, band_keys, since, record_id)
            old_signature = None
            if want_signature and existing is not None:
                found = conn.execute(
                    "SELECT signature FROM fingerprints WHERE record_id = ?", (record_id,)
                ).fetchone()
                old_signature = bytes(found[0]) if found else None
            return ArticlePrep(
                location if existing is None else existing.location,
                existing,
                exact,
                candidates,
                old_signature,
            )

        return await self._run(self._transaction, prepare)

    async def commit_article(self, commit: ArticleCommit) -> None:
        record = commit.record
        record_id = record.record_id if record is not None else commit.seen_record_id

        def save(conn: sqlite3.Connection) -> None:
            if record is not None:
                _write_record(conn, record)
            if commit.release_record is not None:
                conn.execute(
                    "DELETE FROM records WHERE record_id = ? AND done = 0",
                    (commit.release_record,),
                )
            conn.execute(
                _ENTRY_SEEN,
                (
                    commit.feed_id,
                    commit.entry_key,
                    commit.committed_at,
                    record_id,
                    commit.entry_updated,
                ),
            )
            conn.execute("DELETE FROM frontier WHERE item_id = ?", (commit.item_id,))
            if commit.failure is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO article_failures VALUES (?, ?, ?, ?)",
                    (commit.feed_id, commit.failed_url, commit.failure, commit.committed_at),
                )

        await self._run(self._transaction, save)

    async def reschedule_article(
        self,
        item_id: int,
        not_before: float,
        attempts: int,
        error: str | None,
        host_wait: HostWait | None = None,
    ) -> None:
        def save(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE frontier SET not_before = ?, attempts = ?, last_error = ?, "
                "lease_until = 0 WHERE item_id = ?",
                (not_before, attempts, error, item_id),
            )
            if host_wait is not None:
                conn.execute(_HOST_WAIT, (host_wait.host, host_wait.until, host_wait.reason))

        await self._run(self._transaction, save)

    async def frontier_summary(self, now: float) -> FrontierSummary:
        def lookup() -> FrontierSummary:
            if not self._has_frontier:
                return FrontierSummary()
            conn = self.conn
            size, oldest = conn.execute(
                "SELECT count(*), min(enqueued_at) FROM frontier"
            ).fetchone()
            waits = {
                h: t
                for h, t in conn.execute(
                    "SELECT host, not_before FROM host_waits WHERE not_before > ?", (now,)
                )
            }
            grouped = (
                "SELECT {key}, count(*), min(not_before), max(attempts), "
                "(SELECT last_error FROM frontier g WHERE g.{key} = f.{key} "
                "AND g.last_error IS NOT NULL ORDER BY g.attempts DESC LIMIT 1) "
                "FROM frontier f GROUP BY {key} ORDER BY count(*) DESC"
            )
            hosts = [
                FrontierRow(h, n, max(due, waits.get(h, 0.0)), a, e)
                for h, n, due, a, e in conn.execute(grouped.format(key="host"))
            ]
            feeds = [
                FrontierRow(f, n, due, a, e)
                for f, n, due, a, e in conn.execute(grouped.format(key="feed_id"))
            ]
            failures = {
                feed_id: (url, error, at)
                for feed_id, url, error, at in conn.execute("SELECT * FROM article_failures")
            }
            return FrontierSummary(size, oldest, hosts, feeds, failures)

        return await self._run(lookup)
