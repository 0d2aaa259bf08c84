"""`ingestor tail`: the change journal as JSON lines, after a seq or a cursor file's, in
journal order; with `--follow`, new lines as they come.

Where the order comes from: with SQLite, the journal's segment files in
`<output.dir>/journal/`; with PostgreSQL (a fleet writes several instances' segments),
the state database.

Delivery: lines are written and flushed a batch at a time, then the cursor file is
replaced (atomically) with the batch's last seq. SIGINT, SIGTERM and a closed pipe end the
command after the batch in hand; a kill between the flush and the cursor's replacement
repeats that batch on the next start (at least once, at that boundary only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ingestor.config.model import Config
from ingestor.core.journal import JOURNAL_DIR, JournalEntry, parse_line
from ingestor.errors import ConfigError
from ingestor.sink.journal_files import list_segments, read_lines
from ingestor.store.factory import make_store

BATCH = 500


class JournalSource(Protocol):
    async def after(self, seq: int, limit: int) -> list[JournalEntry]: ...

    async def describe_empty(self) -> str | None:
        """Why there is nothing to read at all (missing or empty journal), else None."""
        ...

    async def oldest(self) -> int | None: ...

    async def close(self) -> None: ...


class SegmentFiles:
    """The segment files of one writer, read incrementally: the segment being read and
    the offset reached in it are kept between calls (a rename from `.open` to closed keeps
    the first seq, so the offset stays valid)."""

    def __init__(self, output_dir: Path, writer: str = "") -> None:
        self.directory = output_dir / JOURNAL_DIR
        self.writer = writer
        self._segment: int | None = None  # first seq of the segment being read
        self._offset = 0
        self._last = 0  # the last seq returned: the offset is valid for reading after it

    async def after(self, seq: int, limit: int) -> list[JournalEntry]:
        segments = list_segments(self.directory, self.writer)
        if not segments:
            return []
        candidates = [s for s in segments if s.name.first_seq <= seq + 1]
        # None: retention removed the lines after `seq`; the oldest kept come next.
        segment = candidates[-1] if candidates else segments[0]
        if segment.name.first_seq != self._segment or seq != self._last:
            # Another segment, or a read again from an earlier place (a delivery retried,
            # a cursor rewound): from the segment's start.
            self._segment, self._offset = segment.name.first_seq, 0
        found: list[JournalEntry] = []
        lines, end = read_lines(segment.path, self._offset)
        offset = self._offset
        for line in lines:
            offset += len(line)
            entry = parse_line(line)
            if entry.seq > seq:
                found.append(entry)
                if len(found) >= limit:
                    break
        self._offset = offset if len(found) >= limit else end
        self._last = found[-1].seq if found else seq
        return found

    async def describe_empty(self) -> str | None:
        if not self.directory.is_dir():
            return (
                f"journal {self.directory} does not exist: no record written yet, "
                "or output.journal is false"
            )
        if not list_segments(self.directory, self.writer):
            return f"journal {self.directory} is empty: no record written yet"
        return None

    async def oldest(self) -> int | None:
        segments = list_segments(self.directory, self.writer)
        return segments[0].name.first_seq if segments else None

    async def close(self) -> None:
        return None


class StateJournal:
    """The fleet's journal, in the order the PostgreSQL state gave it."""

    def __init__(self, config: Config) -> None:
        self.store = make_store(config.state, read_only=True)
        self.where = config.state.where
        self._open = False

    async def _ensure_open(self) -> None:
        if not self._open:
            await self.store.open()
            self._open = True

    async def after(self, seq: int, limit: int) -> list[JournalEntry]:
        await self._ensure_open()
        return await self.store.journal_since(seq, limit)

    async def describe_empty(self) -> str | None:
        await self._ensure_open()
        if not await self.store.journal_since(0, 1):
            return f"journal in {self.where} is empty: no record written yet"
        return None

    async def oldest(self) -> int | None:
        await self._ensure_open()
        first = await self.store.journal_since(0, 1)
        return first[0].seq if first else None

    async def close(self) -> None:
        if self._open:
            await self.store.close()


@dataclass
class TailOptions:
    since: int = 0
    follow: bool = False
    cursor: Path | None = None
    paths_only: bool = False
    poll_interval: float = 0.5


def read_cursor(path: Path) -> int | None:
    try:
        text = path.read_text("utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError([f"--cursor {path}: {exc.strerror}"]) from None
    if not text.isdigit():
        raise ConfigError([f"--cursor {path}: {text[:40]!r} is not a journal seq"])
    return int(text)


def write_cursor(path: Path, seq: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(f"{seq}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def render(entry: JournalEntry, output_dir: Path, paths_only: bool) -> bytes:
    data: dict[str, Any] = entry.to_dict()
    if not paths_only and entry.op != "delete":
        # The file as it is now: a later update may have replaced this line's version.
        try:
            data["record"] = json.loads((output_dir / entry.path).read_bytes())
        except (OSError, ValueError):
            data["record"] = None
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


async def tail(config: Config, options: TailOptions, out: BinaryIO, err: Any = sys.stderr) -> int:
    source: JournalSource = (
        StateJournal(config) if config.state.url is not None else SegmentFiles(config.output.dir)
    )
    stop = asyncio.Event()
    seq = options.since
    if options.cursor is not None:
        saved = read_cursor(options.cursor)
        if saved is not None:
            seq = saved
    try:
        _on_signals(stop.set)
        reported_empty = False
        warned_gap = False
        while not stop.is_set():
            entries = await source.after(seq, BATCH)
            if not entries:
                if not reported_empty and (why := await source.describe_empty()):
                    print(why, file=err, flush=True)
                    reported_empty = True
                if not warned_gap and (oldest := await source.oldest()) and oldest > seq + 1:
                    _report_removed(seq, oldest, err)
                    warned_gap = True
                    seq = oldest - 1
                    continue
                if not options.follow:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), options.poll_interval)
                continue
            if entries[0].seq > seq + 1 and not warned_gap:
                _report_removed(seq, entries[0].seq, err)
                warned_gap = True
            data = b"".join(render(e, config.output.dir, options.paths_only) for e in entries)
            try:
                out.write(data)
                out.flush()
            except BrokenPipeError:
                _silence_stdout()
                return 0
            seq = entries[-1].seq
            if options.cursor is not None:
                write_cursor(options.cursor, seq)
    finally:
        await source.close()
        _on_signals(None)
    return 0


def _on_signals(handler: Callable[[], None] | None) -> None:
    """SIGINT and SIGTERM call `handler` (None: no longer), where the loop allows it."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            if handler is None:
                loop.remove_signal_handler(signum)
            else:
                loop.add_signal_handler(signum, handler)


def _report_removed(seq: int, oldest: int, err: Any) -> None:
    # output.retention removed the lines this cursor was waiting for: say so, go on.
    print(
        f"journal lines {seq + 1}-{oldest - 1} were removed by retention: going on from {oldest}",
        file=err,
        flush=True,
    )


def _silence_stdout() -> None:
    # The reader is gone: the interpreter's final flush of stdout must not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
