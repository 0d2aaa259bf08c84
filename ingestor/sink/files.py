"""Output sinks: where finished records go. The file sink writes one JSON file per record."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ingestor.core.record import Record
from ingestor.errors import SinkError


class OutputSink(Protocol):
    """A destination for records. `location` is chosen once per id and kept in state."""

    def location_for(self, record_id: str, first_ingested: datetime) -> str: ...

    async def write(self, record: Record, location: str) -> None: ...

    def encode(self, record: Record) -> bytes:
        """The record as this sink stores it."""
        ...

    def put(self, data: bytes, location: str) -> None:
        """Write one record's bytes durably under `location` (called from the state
        store's transaction, in its thread); `sync` makes the new names durable."""
        ...

    def sync(self) -> None: ...

    def prepare(self) -> None:
        """Called once at start: fail early if unusable, clean what a crash left."""
        ...


STAGING_DIR = ".staging"


class FileSink:
    """`<dir>/YYYY/MM/DD/<id>.json`, written atomically: temp file, fsync, rename.

    Temporary files are `<dir>/.staging/.<id>.<random>.tmp`: a consumer's `*.json` glob
    never matches them, the rename stays on one file system, and whatever a crash left
    behind is cleared at the next start without walking the whole output tree.
    """

    def __init__(self, directory: Path, pretty: bool = False) -> None:
        self.directory = directory
        self.staging = directory / STAGING_DIR
        self.pretty = pretty
        self.thread_cpu_seconds = 0.0  # CPU spent writing, in the writing threads
        # Directories that got a new name since the last sync (put and sync are called from
        # one thread, the state store's).
        self._unsynced: set[Path] = set()

    def location_for(self, record_id: str, first_ingested: datetime) -> str:
        if not record_id.isalnum():
            raise ValueError(f"record id {record_id!r} is not alphanumeric")
        return f"{first_ingested:%Y/%m/%d}/{record_id}.json"

    def prepare(self) -> None:
        self.check_writable()
        self.remove_stale_temp_files()

    def check_writable(self) -> None:
        """Fail early (exit code 1) when the output directory cannot be written."""
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
            probe = self.staging / f".write-probe.{secrets.token_hex(4)}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SinkError(
                f"output directory {self.directory} is not writable: {exc.strerror or exc}"
            ) from None

    def remove_stale_temp_files(self) -> int:
        """Temp files of writes a crash interrupted (call only while holding the state lock,
        so that no other writer is using the staging directory)."""
        removed = 0
        for leftover in self.staging.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
        return removed

    async def write(self, record: Record, location: str) -> None:
        data = record.to_json(self.pretty) + b"\n"
        await asyncio.to_thread(self._write_atomically, self.directory / location, data)

    def encode(self, record: Record) -> bytes:
        return record.to_json(self.pretty) + b"\n"

    def put(self, data: bytes, location: str) -> None:
        started = time.thread_time()
        try:
            target = self.directory / location
            self._write_file(target, data, sync_directory=False)
            self._unsynced.add(target.parent)
        finally:
            self.thread_cpu_seconds += time.thread_time() - started

    def sync(self) -> None:
        started = time.thread_time()
        try:
            while self._unsynced:
                directory = self._unsynced.pop()
                try:
                    _fsync_directory(directory)
                except OSError as exc:
                    raise SinkError(
                        f"cannot sync output directory {directory}: {exc.strerror or exc}"
                    ) from None
        finally:
            self.thread_cpu_seconds += time.thread_time() - started

    def _write_atomically(self, target: Path, data: bytes) -> None:
        started = time.thread_time()
        try:
            self._write_file(target, data)
        finally:
            self.thread_cpu_seconds += time.thread_time() - started

    def _write_file(self, target: Path, data: bytes, sync_directory: bool = True) -> None:
        tmp = self.staging / f".{target.stem}.{secrets.token_hex(4)}.tmp"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            if sync_directory:
                _fsync_directory(target.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            reason = (
                "disk full"
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
                else (exc.strerror or str(exc))
            )
            raise SinkError(f"cannot write record {target}: {reason}") from None


def _fsync_directory(directory: Path) -> None:
    # Without this the rename itself may be lost on power failure, though the data is safe.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
