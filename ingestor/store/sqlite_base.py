"""The SQLite store's connection: one connection, used from one dedicated thread, so the
event loop never waits on disk and every call is atomic with respect to the others; an
exclusive lock file so that only one process writes; the schema created and migrated at
open."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ingestor.core.state import NearCandidate, RecordFiles
from ingestor.errors import StateError
from ingestor.store.sqlite_schema import RECOVERY_HINT, RETENTION_INDEX, SCHEMA, SCHEMA_VERSION
from ingestor.store.traffic import CURRENT_CALL, StoreTraffic

T = TypeVar("T")


# (store method, its body, the record files it puts, its caller's future)
_GroupCall = tuple[
    str, Callable[[sqlite3.Connection], Any], RecordFiles | None, "asyncio.Future[Any]"
]


def _run_group(
    group: list[_GroupCall], conn: sqlite3.Connection
) -> tuple[list[object], list[RecordFiles]]:
    outcomes: list[object] = []
    sinks: list[RecordFiles] = []
    for _name, body, files, _future in group:
        conn.execute("SAVEPOINT grouped")
        try:
            outcomes.append(body(conn))
        except Exception as exc:  # handed to this call's caller
            conn.execute("ROLLBACK TO grouped")
            outcomes.append(exc)
        conn.execute("RELEASE grouped")
        if files is not None and files not in sinks:
            sinks.append(files)
    for files in sinks:
        files.sync()
    return outcomes, sinks


class SQLiteConnection:
    def __init__(
        self,
        path: Path,
        read_only: bool = False,
        traffic: StoreTraffic | None = None,
        allow_moved: bool = False,
    ) -> None:
        self.path = path
        # migrate-state moved this state into PostgreSQL: using it again would write the
        # same journal seqs twice, unless the user says so (state.allow_moved).
        self.allow_moved = allow_moved
        # A reader (`ingestor status`) takes no lock, so it works beside a running daemon.
        self.read_only = read_only
        self.journal_writer = ""  # one process owns the output: its segments need no name
        self.state_id = ""  # this state's identity (made once, kept in its meta table)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._has_frontier = True
        self.traffic = traffic or StoreTraffic()
        # Group commit: calls waiting for the next shared transaction, and whether one runs.
        self._group: list[_GroupCall] = []
        self._group_running = False

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            blocker = next(
                (p for p in (self.path.parent, *self.path.parent.parents) if p.is_file()),
                self.path.parent,
            )
            raise StateError(
                f"state.path {self.path}: {blocker} is a file, not a directory"
            ) from None
        except OSError as exc:
            raise StateError(
                f"state.path {self.path}: cannot create {self.path.parent} ({exc.strerror})"
            ) from None
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
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise StateError(
                    f"state database {self.path} has schema version {row[0]}, newer than this "
                    f"ingestor understands ({SCHEMA_VERSION}): upgrade ingestor"
                )
            if row is not None and int(row[0]) < 3:
                # Version 3's content claims, from the records finished so far (earliest
                # first: the first record with a body owns it).
                conn.execute(
                    "INSERT OR IGNORE INTO content_claims SELECT content_hash, record_id "
                    "FROM records WHERE done = 1 AND content_hash IS NOT NULL "
                    "ORDER BY committed_at"
                )
            if row is not None and int(row[0]) < 4:
                conn.execute("ALTER TABLE records ADD COLUMN deleted_at REAL")
            if row is not None and int(row[0]) < 5:
                conn.execute("ALTER TABLE entries ADD COLUMN entry_digest TEXT")
            if row is not None and int(row[0]) < 6:
                conn.execute("ALTER TABLE records ADD COLUMN story_id TEXT")
            conn.execute(RETENTION_INDEX)
            # Older versions only lack tables and columns, added above.
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('state_id', ?)", (uuid.uuid4().hex,))
            self.state_id = conn.execute(
                "SELECT value FROM meta WHERE key = 'state_id'"
            ).fetchone()[0]
            self._refuse_if_moved(conn)
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
                f"state database {self.path} is unusable ({message}); {RECOVERY_HINT}"
            ) from None
        self._conn = conn

    def _refuse_if_moved(self, conn: sqlite3.Connection) -> None:
        if self.allow_moved:
            return
        row = conn.execute("SELECT value FROM meta WHERE key = 'moved_to'").fetchone()
        if row is not None:
            conn.close()
            self._release_lock()
            raise StateError(
                f"state database {self.path} was moved by migrate-state ({row[0]}): set "
                "state.url to the new home (and remove state.path), or set "
                "state.allow_moved: true to use this copy again"
            )

    def mark_moved(self, where: str) -> None:
        """After migrate-state: this copy is no longer the state (see _refuse_if_moved)."""
        assert self._conn is not None
        self._conn.execute(
            "INSERT INTO meta VALUES ('moved_to', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (where,),
        )

    def _open_read_only(self) -> None:
        if not self.path.exists():
            raise StateError(f"state database {self.path} does not exist yet: run ingestor first")
        try:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("SELECT count(*) FROM feeds").fetchone()
            self._refuse_if_moved(conn)
            # A state written by an older release has no frontier until a writer migrates it.
            self._has_frontier = (
                conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'article_failures'"
                ).fetchone()[0]
                > 0
            )
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"state database {self.path} is unusable ({exc}); {RECOVERY_HINT}"
            ) from None
        self._conn = conn

    def _acquire_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(
                f"state.path {self.path}: cannot create its lock file in {self.path.parent} "
                f"({exc.strerror}): the state needs a writable directory"
            ) from None
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

    async def _run(self, function: Callable[..., T], *args: Any, calls: Sequence[str] = ()) -> T:
        """`function(*args)` in the state thread; `calls` names the store methods it
        serves (by default the one being served)."""
        self.traffic.count(1, calls or None)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed, function, args)

    def _timed(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        started = time.thread_time()
        try:
            return function(*args)
        finally:
            self.traffic.thread_cpu_seconds += time.thread_time() - started

    async def _grouped(
        self,
        body: Callable[[sqlite3.Connection], T],
        files: RecordFiles | None = None,
    ) -> T:
        """`body` in a transaction shared with the other grouped calls that arrive while
        one is running (each in a savepoint: one that raises is rolled back alone, and its
        caller gets the exception). The record files the bodies put are synced once after
        every body and before COMMIT (if that raises, nothing of the group is committed),
        published after COMMIT and abandoned when it fails."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._group.append((CURRENT_CALL.get(), body, files, future))
        if not self._group_running:
            # On the loop's next turn: the calls made in this turn join the group.
            self._group_running = True
            asyncio.get_running_loop().call_soon(self._start_group)
        return await future  # type: ignore[no-any-return]

    def _start_group(self) -> None:
        group, self._group = self._group, []
        calls = [name for name, *_rest in group]
        task = asyncio.ensure_future(self._run(self._group_transaction, group, calls=calls))
        task.add_done_callback(partial(self._group_done, group))

    def _group_done(self, group: list[_GroupCall], task: asyncio.Future[list[object]]) -> None:
        if task.cancelled():
            outcomes: list[object] = [asyncio.CancelledError()] * len(group)
        elif (error := task.exception()) is not None:
            outcomes = [error] * len(group)
        else:
            outcomes = task.result()
        for (_name, _body, _hook, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if self._group:
            self._start_group()
        else:
            self._group_running = False

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"state database {self.path} is not open")
        return self._conn

    def _group_transaction(self, group: list[_GroupCall]) -> list[object]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        sinks: list[RecordFiles] = [files for _n, _b, files, _f in group if files is not None]
        try:
            outcomes, sinks = _run_group(group, conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for files in sinks:
                files.abandon()
            raise
        for files in sinks:
            files.publish()
        return outcomes

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

    def _find_exact(self, content_hash: str, exclude_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT record_id FROM content_claims WHERE content_hash = ? AND record_id != ?",
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
