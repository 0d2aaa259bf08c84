"""The change journal's plain data and the decisions about it (no I/O here).

One line per record file created, updated or deleted, in `seq` order. `seq` is assigned by
the state store in the transaction that commits the change, so it is gap-free and shared
by a fleet (PostgreSQL); the line reaches the journal file only after the record file has
its final name (or, for a delete, after the file is gone).

Segment files in `<output.dir>/journal/`:

    <first seq, 16 digits>[.<writer>].jsonl        closed: never changed again
    <first seq, 16 digits>[.<writer>].jsonl.open   the one being appended to

`writer` is absent with SQLite (one process owns the output) and names the instance with
PostgreSQL (each instance appends to its own segments).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Literal

JournalOp = Literal["create", "update", "delete"]
OPS: tuple[JournalOp, ...] = ("create", "update", "delete")

JOURNAL_DIR = "journal"
CLOSED_SUFFIX = ".jsonl"
OPEN_SUFFIX = ".jsonl.open"
_SEGMENT = re.compile(r"^(\d{16})(?:\.([A-Za-z0-9_-]{1,64}))?\.jsonl(\.open)?$")


@dataclass(frozen=True)
class JournalChange:
    """A change to record in the journal, before the store has given it a seq."""

    op: JournalOp
    record_id: str
    path: str  # relative to output.dir
    content_hash: str | None
    at: float


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    op: JournalOp
    record_id: str
    path: str
    content_hash: str | None
    at: float
    writer: str = ""  # the instance whose segments carry the line ("" with SQLite)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "op": self.op,
            "id": self.record_id,
            "path": self.path,
            "content_hash": self.content_hash,
            "at": timestamp(self.at),
        }

    def to_line(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8") + b"\n"


@cache
def journal_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every journal line validates against."""
    text = resources.files("ingestor").joinpath("schema/journal.schema.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def with_seq(change: JournalChange, seq: int, writer: str) -> JournalEntry:
    return JournalEntry(
        seq, change.op, change.record_id, change.path, change.content_hash, change.at, writer
    )


def timestamp(moment: float) -> str:
    """RFC 3339 UTC with milliseconds: several lines share a second."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_timestamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def parse_line(line: bytes) -> JournalEntry:
    """A journal line back into an entry; ValueError names what is wrong."""
    try:
        data = json.loads(line)
        op = data["op"]
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        return JournalEntry(
            int(data["seq"]),
            op,
            str(data["id"]),
            str(data["path"]),
            data.get("content_hash"),
            parse_timestamp(data["at"]),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a journal line: {exc}") from None


@dataclass(frozen=True)
class SegmentName:
    first_seq: int
    writer: str
    is_open: bool

    def closed(self) -> str:
        return segment_file_name(self.first_seq, self.writer, is_open=False)

    def opened(self) -> str:
        return segment_file_name(self.first_seq, self.writer, is_open=True)


def segment_file_name(first_seq: int, writer: str, *, is_open: bool) -> str:
    base = f"{first_seq:016d}" + (f".{writer}" if writer else "")
    return base + (OPEN_SUFFIX if is_open else CLOSED_SUFFIX)


def parse_segment_name(name: str) -> SegmentName | None:
    match = _SEGMENT.match(name)
    if match is None:
        return None
    return SegmentName(int(match[1]), match[2] or "", match[3] is not None)


def writer_name(instance: str) -> str:
    """An instance id as a file-name part: letters, digits, '-' and '_' only."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", instance).strip("-")[:64]
    return slug or "instance"


def should_rotate(size: int, opened_at: float, now: float, max_bytes: int, max_age: float) -> bool:
    """Close the open segment before appending more: it is big or old enough."""
    return size >= max_bytes or (size > 0 and now - opened_at >= max_age)


def upkeep_interval(retention: float | None, segment_age: float) -> float:
    """How often the daemon applies retention and closes a segment that has aged: often
    enough that neither lags by more than a twentieth of its period, at most every 10
    minutes, at least every second."""
    periods = [segment_age / 4] + ([retention / 20] if retention else [])
    return min(max(min(periods), 1.0), 600.0)


StagedVerdict = Literal["publish", "discard"]


def staged_verdict(
    staged_hash: str | None, latest: JournalEntry | None, final_hash: str | None
) -> StagedVerdict:
    """A record file a crash left staged (written, not yet renamed into place): publish it
    when the state committed exactly this version and the tree does not have it yet;
    otherwise its commit never happened (the item is still queued and is done again)."""
    if latest is None or latest.op == "delete" or staged_hash is None:
        return "discard"
    if latest.content_hash != staged_hash or final_hash == staged_hash:
        return "discard"
    return "publish"


# The file in the journal directory that names the state owning the journal.
OWNER_FILE = "OWNER"

Ownership = Literal["owned", "claim", "refuse"]


def journal_ownership(
    owner: str | None, state_id: str, journal_last_seq: int, state_has_last: bool
) -> Ownership:
    """Whether this state may write the output directory's journal.

    `owner`: the state id the journal names (None: it names none, as a journal written
    before owners were recorded); `journal_last_seq`: the last seq of any segment;
    `state_has_last`: this state's own journal holds that seq. Two states never write one
    journal: each numbers from its own counter, so the lines would repeat seqs and the
    files would have lines that no longer match them."""
    if owner is not None:
        return "owned" if owner == state_id else "refuse"
    if journal_last_seq == 0 or state_has_last:
        return "claim"  # empty, or this state's own journal from before owners
    return "refuse"
