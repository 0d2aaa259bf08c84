"""Output sinks: where finished records go. The file sink writes one JSON file per record."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ingestor.core.journal import JournalEntry
from ingestor.core.state import RecordFiles, StagedFile
from ingestor.errors import SinkError
from ingestor.sink.fsync import fsync_directory
from ingestor.sink.journal_files import JournalWriter

log = logging.getLogger("ingestor.sink")


class OutputSink(RecordFiles, Protocol):
    """A destination for records. `location` is chosen once per id and kept in state."""

    journal: JournalWriter | None
    publish_errors: int  # publications that failed after their commit (retried)

    def location_for(self, record_id: str, first_ingested: datetime) -> str: ...

    def prepare(self) -> None:
        """Called once at start: fail early if unusable."""
        ...

    def check_writable(self, probe: bytes = b"") -> None:
        """Raise SinkError unless a file holding `probe` can be written now."""
        ...


STAGING_DIR = ".staging"
_STAGED_SUFFIX = ".staged"


@dataclass(frozen=True)
class StagedRecord:
    """A staged file found at start: its name and what its JSON says it is."""

    path: Path
    record_id: str | None
    content_hash: str | None


class FileSink:
    """`<dir>/YYYY/MM/DD/<id>.json`, written so that a file appears under its own name only
    once the state store has committed it: written and fsynced under
    `<dir>/.staging/.<writer>.<id>.<random>.staged`, renamed into place after the commit, and only
    then named in the journal (`<dir>/journal/`). A consumer's `*.json` glob never matches
    a staged file or a journal segment, the rename stays on one file system, and what a
    crash left staged is settled at the next start against the state (reconcile)."""

    def __init__(
        self,
        directory: Path,
        journal: JournalWriter | None = None,
        writer: str = "",
    ) -> None:
        self.directory = directory
        # Staged names carry the writer: an instance of a fleet sharing this directory
        # settles only its own leftovers at start, never a live neighbour's.
        self._staged_prefix = f".{writer or '_'}."
        self.staging = directory / STAGING_DIR
        self.journal = journal
        self.thread_cpu_seconds = 0.0  # CPU spent writing, in the writing threads
        self.publish_errors = 0
        # Staged files written but not yet fsynced: staging name -> (open fd, location).
        # Written first and synced together (sync), they share the file system's journal
        # commits instead of paying one each.
        self._unsynced: dict[str, tuple[int, str]] = {}
        self._made_dirs: set[Path] = set()
        # What the last transaction committed, in order; what an earlier publish could not
        # finish (retried first, in order).
        self._queued: list[tuple[StagedFile | None, JournalEntry | None]] = []
        self._backlog: list[tuple[StagedFile | None, JournalEntry | None]] = []
        self._lock = threading.RLock()

    def location_for(self, record_id: str, first_ingested: datetime) -> str:
        if not record_id.isalnum():
            raise ValueError(f"record id {record_id!r} is not alphanumeric")
        return f"{first_ingested:%Y/%m/%d}/{record_id}.json"

    def prepare(self) -> None:
        self.check_writable()
        self.remove_stale_temp_files()

    def check_writable(self, probe: bytes = b"") -> None:
        """Fail early (exit code 1) when the output directory cannot be written. With
        bytes to write, a full disk fails too (an empty file needs no space): the check
        made before fetching a page while the output has been failing."""
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
            path = self.staging / f".write-probe.{secrets.token_hex(4)}.tmp"
            try:
                path.write_bytes(probe)
            finally:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise SinkError(
                f"output directory {self.directory} is not writable: {exc.strerror or exc}"
            ) from None

    def remove_stale_temp_files(self) -> int:
        """Half-written temp files of earlier versions and probes (call only while holding
        the state lock, so that no other writer is using the staging directory)."""
        removed = 0
        for leftover in self.staging.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
        return removed

    # --- inside the store's transaction ---

    def put(self, data: bytes, location: str) -> StagedFile:
        started = time.thread_time()
        try:
            stem = Path(location).stem
            name = f"{self._staged_prefix}{stem}.{secrets.token_hex(4)}{_STAGED_SUFFIX}"
            fd = self._write_staged(self.staging / name, data, location)
            with self._lock:
                self._unsynced[name] = (fd, location)
            return StagedFile(name, location)
        finally:
            self.thread_cpu_seconds += time.thread_time() - started

    def discard(self, staged: StagedFile) -> None:
        with self._lock:
            pending = self._unsynced.pop(staged.staging_name, None)
        if pending is not None:
            os.close(pending[0])
        with contextlib.suppress(OSError):
            (self.staging / staged.staging_name).unlink()

    def sync(self) -> None:
        """Every file put since the last sync, then their names, made durable."""
        with self._lock:
            pending, self._unsynced = self._unsynced, {}
        if not pending:
            return
        started = time.thread_time()
        try:
            failed = None
            for fd, location in pending.values():
                try:
                    os.fsync(fd)
                except OSError as exc:
                    failed = failed or (location, exc)
                finally:
                    os.close(fd)
            if failed is not None:
                location, exc = failed
                raise SinkError(f"cannot write record {self.directory / location}: {_reason(exc)}")
            _sync_or_fail(self.staging)
        finally:
            self.thread_cpu_seconds += time.thread_time() - started

    def queue(self, staged: StagedFile | None, entry: JournalEntry | None) -> None:
        with self._lock:
            self._queued.append((staged, entry))

    def abandon(self) -> None:
        with self._lock:
            self._queued.clear()
            pending, self._unsynced = self._unsynced, {}
        for fd, _location in pending.values():
            os.close(fd)  # the files stay staged, for the reconciliation at the next start

    # --- after the commit ---

    def publish(self) -> None:
        """Install what the last transaction committed, in commit order: staged files
        renamed into place and deleted files removed (their directories fsynced), then the
        journal lines appended. What fails stays for the next call (logged once per call),
        so that the journal never names a file that is not there and never skips a seq."""
        started = time.thread_time()
        with self._lock:
            work, self._backlog = self._backlog + self._queued, []
            self._queued = []
            done: list[JournalEntry] = []
            directories: set[Path] = set()
            try:
                for index, (staged, entry) in enumerate(work):
                    try:
                        self._install(staged, entry, directories)
                    except OSError as exc:
                        self._backlog = work[index:]
                        self.publish_errors += 1
                        what = entry.path if entry else staged.location if staged else "?"
                        log.error(
                            "cannot publish record %s in %s: %s (retried with the next one)",
                            what,
                            self.directory,
                            exc.strerror or exc,
                        )
                        break
                    if entry is not None:
                        done.append(entry)
                for directory in directories:
                    with contextlib.suppress(FileNotFoundError):
                        fsync_directory(directory)
                if self.journal is not None and done:
                    try:
                        self.journal.append(done)
                    except SinkError as exc:
                        # The files are in place; their lines go first next time, in order.
                        self._backlog = [(None, entry) for entry in done] + self._backlog
                        self.publish_errors += 1
                        log.error("%s (retried with the next one)", exc)
            finally:
                self.thread_cpu_seconds += time.thread_time() - started

    def _install(
        self, staged: StagedFile | None, entry: JournalEntry | None, directories: set[Path]
    ) -> None:
        if staged is not None:
            target = self.directory / staged.location
            source = self.staging / staged.staging_name
            try:
                os.replace(source, target)
            except FileNotFoundError:
                if not source.exists():
                    # Installed by an earlier try whose journal append failed.
                    return
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
            directories.add(target.parent)
        elif entry is not None and entry.op == "delete":
            target = self.directory / entry.path
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            directories.add(target.parent)

    # --- reconciliation at start ---

    def staged_records(self) -> list[StagedRecord]:
        found = []
        for path in self.staging.glob(f"{self._staged_prefix}*{_STAGED_SUFFIX}"):
            record_id, content_hash = _identity(path)
            found.append(StagedRecord(path, record_id, content_hash))
        return found

    def content_hash_at(self, location: str) -> str | None:
        return _identity(self.directory / location)[1]

    def install_staged(self, staged: StagedRecord, location: str) -> None:
        target = self.directory / location
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, target)
        fsync_directory(target.parent)

    def exists(self, location: str) -> bool:
        return (self.directory / location).is_file()

    def remove(self, location: str) -> None:
        target = self.directory / location
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
            fsync_directory(target.parent)

    def _write_staged(self, path: Path, data: bytes, location: str) -> int:
        """Write a staged file; returns its descriptor, still open, for sync to fsync."""
        try:
            self._make_dir(self.staging)
            self._make_dir((self.directory / location).parent)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:  # the staging directory was removed under us
                self._made_dirs.clear()
                self._make_dir(self.staging)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except BaseException:
                os.close(fd)
                raise
            return fd
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            raise SinkError(
                f"cannot write record {self.directory / location}: {_reason(exc)}"
            ) from None

    def _make_dir(self, directory: Path) -> None:
        # Once per directory and process: a day's directory is made for its first record.
        if directory not in self._made_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(directory)


def _identity(path: Path) -> tuple[str | None, str | None]:
    """A record file's id and content hash (None, None when it is missing or unreadable)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    return data.get("id"), data.get("content_hash")


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "disk full"
    return exc.strerror or str(exc)


def _sync_or_fail(directory: Path) -> None:
    try:
        fsync_directory(directory)
    except OSError as exc:
        raise SinkError(
            f"cannot sync output directory {directory}: {exc.strerror or exc}"
        ) from None
