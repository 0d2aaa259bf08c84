"""Output sinks: where finished records go. The file sink writes one JSON file per record."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ingestor.errors import SinkError
from ingestor.record import Record


class OutputSink(Protocol):
    """A destination for records. `location` is chosen once per id and kept in state."""

    def location_for(self, record_id: str, first_ingested: datetime) -> str: ...

    async def write(self, record: Record, location: str) -> None: ...

    def check_writable(self) -> None: ...


class FileSink:
    """`<dir>/YYYY/MM/DD/<id>.json`, written atomically: temp file, fsync, rename.

    Temporary files are named `.<id>.<random>.tmp` in the target directory, so a consumer's
    `*.json` glob never sees them and the rename never crosses a file system.
    """

    def __init__(self, directory: Path, pretty: bool = False) -> None:
        self.directory = directory
        self.pretty = pretty

    def location_for(self, record_id: str, first_ingested: datetime) -> str:
        if not record_id.isalnum():
            raise ValueError(f"record id {record_id!r} is not alphanumeric")
        return f"{first_ingested:%Y/%m/%d}/{record_id}.json"

    def check_writable(self) -> None:
        """Fail early (exit code 1) when the output directory cannot be written."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".write-probe.{secrets.token_hex(4)}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SinkError(
                f"output directory {self.directory} is not writable: {exc.strerror or exc}"
            ) from None

    async def write(self, record: Record, location: str) -> None:
        data = record.to_json(self.pretty) + b"\n"
        await asyncio.to_thread(self._write_atomically, self.directory / location, data)

    def _write_atomically(self, target: Path, data: bytes) -> None:
        tmp = target.parent / f".{target.stem}.{secrets.token_hex(4)}.tmp"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
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
