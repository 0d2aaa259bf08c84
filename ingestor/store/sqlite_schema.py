"""The SQLite state store's schema, its SQL statements and row conversions."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ingestor.core.journal import JournalChange, JournalEntry
from ingestor.core.state import CommitItem
from ingestor.store.codec import JOURNAL_COLUMNS, journal_entry

# 1: feeds, entries, records, fingerprints. 2: the article frontier and host waits.
# 3: content claims (the first record with a body hash owns it). 4: the change journal
# and records.deleted_at (output.retention). 5: entries.entry_digest. 6: delivery sinks
# and records.story_id.
SCHEMA_VERSION = 6

BATCH = 500

SCHEMA = """
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
    entry_digest TEXT,
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
    committed_at REAL,
    deleted_at REAL,
    story_id TEXT  -- the first record of its story; NULL: this one
);
CREATE INDEX IF NOT EXISTS records_content_hash ON records (content_hash) WHERE done = 1;
CREATE TABLE IF NOT EXISTS content_claims (
    content_hash TEXT PRIMARY KEY,
    record_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS content_claims_record ON content_claims (record_id);
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
-- AUTOINCREMENT: a seq is never reused, and one rolled back is given again (gap-free).
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    record_id TEXT NOT NULL,
    path TEXT NOT NULL,
    content_hash TEXT,
    at REAL NOT NULL,
    writer TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS journal_record ON journal (record_id, seq);
CREATE INDEX IF NOT EXISTS journal_at ON journal (at);
CREATE TABLE IF NOT EXISTS sinks (
    name TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,
    updated_at REAL,
    last_error TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    holder TEXT,
    lease_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS host_waits (
    host TEXT PRIMARY KEY,
    not_before REAL NOT NULL,
    reason TEXT
) WITHOUT ROWID;
"""

# After the migrations (a version 3 database gets deleted_at from one of them).
RETENTION_INDEX = (
    "CREATE INDEX IF NOT EXISTS records_retention ON records (first_ingested) "
    "WHERE done = 1 AND deleted_at IS NULL"
)

ENTRY_SEEN = (
    "INSERT INTO entries (feed_id, entry_key, seen_at, record_id, entry_updated, "
    "entry_digest) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (feed_id, entry_key) DO UPDATE SET "
    "seen_at = excluded.seen_at, record_id = coalesce(excluded.record_id, entries.record_id), "
    "entry_updated = coalesce(excluded.entry_updated, entries.entry_updated), "
    "entry_digest = coalesce(excluded.entry_digest, entries.entry_digest)"
)

HOST_WAIT = (
    "INSERT INTO host_waits VALUES (?, ?, ?) ON CONFLICT (host) DO UPDATE SET "
    "not_before = max(not_before, excluded.not_before), reason = excluded.reason"
)

SAVE_FEED = (
    "INSERT INTO feeds (feed_id, data, next_due) VALUES (?, ?, ?) "
    "ON CONFLICT (feed_id) DO UPDATE SET data = excluded.data, next_due = excluded.next_due"
)

CLAIM_COLUMNS = (
    "f.item_id, f.feed_id, f.canonical_url, f.host, f.payload, f.is_update, f.attempts, "
    "f.enqueued_at, f.last_error, r.record_id"
)

RECOVERY_HINT = (
    "to recover, stop ingestor, move the file (and its -wal/-shm files) aside and start "
    "again: records already in the output directory are kept, feeds are re-polled and "
    "their current entries are written again under the same ids"
)


def write_record(conn: sqlite3.Connection, item: CommitItem) -> str:
    """The record done, its claims and fingerprint kept; returns its location."""
    if item.story_id is not None:
        conn.execute(
            "UPDATE records SET story_id = ? WHERE record_id = ?", (item.story_id, item.record_id)
        )
    (location,) = conn.execute(
        "UPDATE records SET done = 1, content_hash = ?, feed_id = ?, committed_at = ? "
        "WHERE record_id = ? RETURNING location",
        (item.content_hash, item.feed_id, item.committed_at, item.record_id),
    ).fetchone()
    conn.execute(
        "INSERT OR IGNORE INTO content_claims VALUES (?, ?)", (item.content_hash, item.record_id)
    )
    if item.signature is not None:
        register_fingerprint(
            conn, item.record_id, item.scheme, item.signature, item.band_keys, item.committed_at
        )
    return str(location)


def register_fingerprint(
    conn: sqlite3.Connection,
    record_id: str,
    scheme: str,
    signature: bytes,
    band_keys: Sequence[int],
    at: float,
) -> None:
    known = conn.execute(
        "SELECT scheme, signature FROM fingerprints WHERE record_id = ?", (record_id,)
    ).fetchone()
    if known is not None and known[0] == scheme and bytes(known[1]) == signature:
        # Claimed when the article was prepared, in this same transaction: its bands
        # (which follow from the signature) are in place; only the time moves.
        conn.execute("UPDATE fingerprints SET ingested_at = ? WHERE record_id = ?", (at, record_id))
        return
    conn.execute(
        "INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?)",
        (record_id, scheme, signature, at),
    )
    conn.execute("DELETE FROM lsh_bands WHERE record_id = ?", (record_id,))
    conn.executemany(
        "INSERT OR IGNORE INTO lsh_bands VALUES (?, ?)", [(key, record_id) for key in band_keys]
    )


def release_reservation(conn: sqlite3.Connection, record_id: str) -> None:
    """A reservation never written (a dropped duplicate): it and its dedup claims go."""
    conn.execute("DELETE FROM records WHERE record_id = ? AND done = 0", (record_id,))
    for table in ("content_claims", "lsh_bands", "fingerprints"):
        conn.execute(f"DELETE FROM {table} WHERE record_id = ?", (record_id,))


def append_journal(conn: sqlite3.Connection, change: JournalChange, writer: str) -> JournalEntry:
    row = conn.execute(
        f"INSERT INTO journal (op, record_id, path, content_hash, at, writer) "
        f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {JOURNAL_COLUMNS}",
        (change.op, change.record_id, change.path, change.content_hash, change.at, writer),
    ).fetchone()
    return journal_entry(row)


def story_ids(conn: sqlite3.Connection, record_ids: Sequence[str]) -> dict[str, str]:
    """The story of each of these records (a record that is no copy is its own story)."""
    unique = list(dict.fromkeys(record_ids))[:BATCH]
    if not unique:
        return {}
    marks = ",".join("?" * len(unique))
    rows = conn.execute(
        f"SELECT record_id, coalesce(story_id, record_id) FROM records "
        f"WHERE record_id IN ({marks})",
        unique,
    )
    return dict(rows.fetchall())
