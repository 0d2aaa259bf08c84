"""Rows to plain data and back, shared by both state stores: a feed's state as JSON, a
record reference, a journal entry and a frontier item from their columns."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from ingestor.core.frontier import FrontierItem
from ingestor.core.journal import JournalEntry
from ingestor.core.payload import decode_payload
from ingestor.core.state import FeedState, RecordRef, SinkPosition


def feed_to_json(state: FeedState) -> str:
    # Every field is a plain value or a tuple of them: a shallow dict serializes the same as
    # dataclasses.asdict, whose deep copy cost about as much as the rest of a 304's commit.
    # orjson: every poll writes its feed's state, and every start reads them all; it takes
    # a third of the json module's time to write one and a quarter to read it (issue 28).
    return orjson.dumps({name: getattr(state, name) for name in _FEED_FIELDS}).decode()


_FEED_FIELDS = tuple(f.name for f in dataclasses.fields(FeedState))
_KNOWN_FEED_FIELDS = frozenset(_FEED_FIELDS)


def feed_from_json(text: str) -> FeedState:
    data = orjson.loads(text)
    if not data.keys() <= _KNOWN_FEED_FIELDS:
        # Written by another version: its extra fields are not this one's.
        data = {k: v for k, v in data.items() if k in _KNOWN_FEED_FIELDS}
    for key in ("skip_hours", "skip_days", "recent_entry_times", "sources"):
        if key in data and isinstance(data[key], list):
            data[key] = tuple(data[key])
    for key in ("discovery", "coverage"):
        if key in data and isinstance(data[key], list):
            data[key] = tuple(tuple(row) for row in data[key] if isinstance(row, list))
    return FeedState(**data)


def record_ref(row: tuple[Any, ...]) -> RecordRef:
    return RecordRef(row[0], row[1], row[2], bool(row[3]), row[4], row[5], bool(row[6]))


JOURNAL_COLUMNS = "seq, op, record_id, path, content_hash, at, writer"

SINK_COLUMNS = "name, cursor, updated_at, last_error, failures, holder, lease_until"


def sink_position(row: tuple[Any, ...]) -> SinkPosition:
    name, cursor, updated_at, last_error, failures, holder, lease_until = row
    return SinkPosition(
        name, int(cursor), updated_at, last_error, int(failures), holder, float(lease_until)
    )


def journal_entry(row: tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(int(row[0]), row[1], row[2], row[3], row[4], float(row[5]), row[6])


def frontier_item(row: tuple[Any, ...]) -> FrontierItem:
    item_id, feed_id, canonical, host, payload, is_update, attempts, enqueued, error, known = row
    entry, title, language, settings = decode_payload(payload)
    # In FrontierItem's field order (the names above say which is which).
    item = (item_id, feed_id, entry, canonical, host, title, language, bool(is_update))
    return FrontierItem(*item, attempts, enqueued, error, known, settings)


# A record's row as record_ref reads it (the caller adds the condition).
RECORD_BY = (
    "SELECT record_id, canonical_url, location, done, content_hash, first_ingested, "
    "deleted_at IS NOT NULL FROM records WHERE "
)
