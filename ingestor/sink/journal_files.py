"""The change journal's files: one writer appends lines to its open segment, closes it by
size and age, and removes closed segments past retention. See ingestor.core.journal for
the line format and the segment names."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ingestor.core.journal import (
    JOURNAL_DIR,
    OWNER_FILE,
    JournalEntry,
    SegmentName,
    parse_line,
    parse_segment_name,
    segment_file_name,
    should_rotate,
)
from ingestor.errors import SinkError
from ingestor.sink.fsync import fsync_directory

log = logging.getLogger("ingestor.journal")


@dataclass(frozen=True)
class Segment:
    path: Path
    name: SegmentName


def list_segments(directory: Path, writer: str | None = None) -> list[Segment]:
    """The segments in `directory` (of one writer when given), in seq order."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for file_name in names:
        parsed = parse_segment_name(file_name)
        if parsed is not None and (writer is None or parsed.writer == writer):
            found.append(Segment(directory / file_name, parsed))
    found.sort(key=lambda s: (s.name.first_seq, s.name.writer, s.name.is_open))
    return found


def last_complete_line(path: Path) -> bytes | None:
    """The last newline-terminated line of a file (None if it has none)."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        block = 4096
        tail = b""
        position = end
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
            cut = tail.rfind(b"\n")
            if cut < 0:
                continue
            before = tail.rfind(b"\n", 0, cut)
            if before >= 0 or position == 0:
                return tail[before + 1 : cut + 1]
        return None


def read_owner(directory: Path) -> str | None:
    """The state id the journal in `directory` names as its owner (None: no owner file)."""
    try:
        text = (directory / OWNER_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SinkError(f"{directory / OWNER_FILE}: {exc.strerror}") from None
    return text or None


def write_owner(directory: Path, state_id: str) -> None:
    """Name `state_id` as the journal's owner (atomically: staged, fsynced, renamed)."""
    directory.mkdir(parents=True, exist_ok=True)
    staged = directory / f".{OWNER_FILE}.{os.getpid()}"
    try:
        with open(staged, "w", encoding="utf-8") as handle:
            handle.write(state_id + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, directory / OWNER_FILE)
        fsync_directory(directory)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise SinkError(f"{directory / OWNER_FILE}: {exc.strerror}") from None


def last_seq_of_all(directory: Path) -> int:
    """The last seq in the journal, whichever writer's segment holds it."""
    last = 0
    for segment in list_segments(directory):
        line = last_complete_line(segment.path)
        if line is not None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                last = max(last, parse_line(line).seq)
    return last


class JournalWriter:
    """Appends journal lines for one writer ("" with SQLite). Callers append in seq order,
    one at a time (the store's thread, or its settle lock)."""

    def __init__(
        self, output_dir: Path, writer: str = "", max_bytes: int = 64 << 20, max_age: float = 86400
    ) -> None:
        self.directory = output_dir / JOURNAL_DIR
        self.writer = writer
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.last_seq = 0
        self._open: Path | None = None
        self._first_seq = 0
        self._size = 0
        self._opened_at = 0.0
        self._lock = threading.Lock()

    def recover(self) -> int:
        """At start, before any append: cut a line a crash left half-written, go on with
        the open segment an earlier run left (a run --once from cron does not leave a tiny
        segment each time), and learn the last seq written. Returns it."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            for segment in list_segments(self.directory, self.writer):
                if segment.name.is_open:
                    self._repair(segment.path)
            segments = list_segments(self.directory, self.writer)
            last = 0
            for segment in reversed(segments):
                line = last_complete_line(segment.path)
                if line is not None:
                    last = parse_line(line).seq
                    break
            opened = [s for s in segments if s.name.is_open]
            for segment in opened[:-1]:
                self._close(segment.path, segment.name)
            if opened:
                current = opened[-1]
                with open(current.path, "rb") as handle:
                    first_line = handle.readline()
                self._open = current.path
                self._first_seq = current.name.first_seq
                self._size = current.path.stat().st_size
                self._opened_at = parse_line(first_line).at
            self.last_seq = last
            return last

    def _repair(self, path: Path) -> None:
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            log.warning(
                "journal %s: cut a half-written last line (%d bytes)", path, len(data) - keep
            )
            with open(path, "r+b") as handle:
                handle.truncate(keep)
                os.fsync(handle.fileno())
        if keep == 0:
            path.unlink()

    def _close(self, path: Path, name: SegmentName) -> None:
        if not path.exists():
            return
        if path.stat().st_size == 0:
            path.unlink()
            return
        os.replace(path, self.directory / name.closed())
        fsync_directory(self.directory)

    def append(self, entries: Sequence[JournalEntry], now: float | None = None) -> None:
        """Append lines durably (fsync); lines at or below the last seq are already there."""
        fresh = [e for e in entries if e.seq > self.last_seq]
        if not fresh:
            return
        with self._lock:
            moment = time.time() if now is None else now
            if self._open is not None and should_rotate(
                self._size, self._opened_at, moment, self.max_bytes, self.max_age
            ):
                self._close_current()
            if self._open is None:
                self._start(fresh[0].seq, moment)
            assert self._open is not None
            data = b"".join(entry.to_line() for entry in fresh)
            try:
                fd = os.open(self._open, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError:
                    # No half line stays behind for the next append to follow.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, self._size)
                    raise
                finally:
                    os.close(fd)
            except OSError as exc:
                raise SinkError(f"cannot append to journal {self._open}: {exc.strerror}") from None
            self._size += len(data)
            self.last_seq = fresh[-1].seq

    def rotate_if_old(self, now: float) -> None:
        with self._lock:
            if self._open is not None and should_rotate(
                self._size, self._opened_at, now, self.max_bytes, self.max_age
            ):
                self._close_current()

    def _start(self, first_seq: int, now: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._first_seq = first_seq
        self._open = self.directory / segment_file_name(first_seq, self.writer, is_open=True)
        fd = os.open(self._open, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        fsync_directory(self.directory)
        self._size = 0
        self._opened_at = now

    def _close_current(self) -> None:
        if self._open is None:
            return
        name = SegmentName(self._first_seq, self.writer, True)
        self._open = None
        self._close(self.directory / name.opened(), name)

    def remove_closed_before(self, cutoff: float) -> int:
        """Closed segments (any writer's) whose last line is older than `cutoff`."""
        removed = 0
        for segment in list_segments(self.directory):
            if segment.name.is_open:
                continue
            with contextlib.suppress(OSError, ValueError):
                line = last_complete_line(segment.path)
                if line is None or parse_line(line).at < cutoff:
                    segment.path.unlink()
                    removed += 1
        return removed


def read_lines(path: Path, offset: int) -> tuple[list[bytes], int]:
    """Complete lines of a segment from `offset`; the offset after the last one."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(keepends=True), offset + end
