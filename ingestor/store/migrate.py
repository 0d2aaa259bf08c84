"""`ingestor migrate-state`: a single machine's SQLite state moved into PostgreSQL, so a
user who outgrows one box keeps its history (validators, seen entries, record
reservations, content claims, fingerprints, the queued articles and host pauses)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from ingestor.errors import StateError
from ingestor.store.postgres import PostgresStateStore
from ingestor.store.sqlite import SQLiteStateStore

# (table, SQLite query, PostgreSQL columns); frontier ids are renumbered
# in queue order, leases are not carried over (no instance holds anything yet).
TABLES: tuple[tuple[str, str, str], ...] = (
    ("feeds", "SELECT feed_id, data, next_due FROM feeds", "feed_id, data, next_due"),
    (
        "entries",
        "SELECT feed_id, entry_key, seen_at, record_id, entry_updated, entry_digest FROM entries",
        "feed_id, entry_key, seen_at, record_id, entry_updated, entry_digest",
    ),
    (
        "records",
        "SELECT record_id, canonical_url, location, done = 1, content_hash, feed_id, "
        "first_ingested, committed_at, deleted_at, story_id FROM records",
        "record_id, canonical_url, location, done, content_hash, feed_id, first_ingested, "
        "committed_at, deleted_at, story_id",
    ),
    (
        "content_claims",
        "SELECT content_hash, record_id FROM content_claims",
        "content_hash, record_id",
    ),
    (
        "fingerprints",
        "SELECT record_id, scheme, signature, ingested_at FROM fingerprints",
        "record_id, scheme, signature, ingested_at",
    ),
    ("lsh_bands", "SELECT band_key, record_id FROM lsh_bands", "band_key, record_id"),
    (
        "frontier",
        "SELECT feed_id, entry_key, canonical_url, host, payload, is_update = 1, attempts, "
        "not_before, enqueued_at, last_error FROM frontier ORDER BY item_id",
        "feed_id, entry_key, canonical_url, host, payload, is_update, attempts, not_before, "
        "enqueued_at, last_error",
    ),
    (
        "article_failures",
        "SELECT feed_id, url, error, at FROM article_failures",
        "feed_id, url, error, at",
    ),
    ("host_waits", "SELECT host, not_before, reason FROM host_waits", "host, not_before, reason"),
    # Each delivery's cursor: a consumer is not sent its lines again after the move.
    (
        "sinks",
        "SELECT name, cursor, updated_at, last_error, failures FROM sinks",
        "name, cursor, updated_at, last_error, failures",
    ),
)

# The change journal keeps its numbering (the output directory's segments carry it), so it
# moves only into an empty database; the fleet's next seq follows the last one.
JOURNAL = (
    "journal",
    "SELECT seq, op, record_id, path, content_hash, at, writer FROM journal ORDER BY seq",
    "seq, op, record_id, path, content_hash, at, writer",
)

_BATCH = 2000


async def migrate_state(source: Path, target_url: str, *, merge: bool = False) -> dict[str, int]:
    """Copy every table; returns the rows copied per table. Refuses a target that already
    holds state unless `merge` (then rows already there are kept)."""
    if not source.exists():
        raise StateError(f"state database {source} does not exist")
    # Opening it as a writer takes its lock (no daemon may be using it) and brings an
    # older file up to the current schema first.
    sqlite = SQLiteStateStore(source)
    await sqlite.open()
    target = PostgresStateStore(target_url, instance_id="migrate-state")
    try:
        await target.open()
        try:
            held = await _rows_held(target)
            if held and not merge:
                raise StateError(
                    f"state database {target.where} already holds state ({held}); "
                    "migrate into an empty database, or pass --merge to add to it"
                )
            tables = TABLES if merge else (*TABLES, JOURNAL)
            copied = await target._transaction(lambda conn: _copy_all(sqlite, conn, tables))
            # Committed there: from now on the copy here is refused (state.allow_moved).
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            await sqlite._run(lambda: sqlite.mark_moved(f"to {target.where} on {when}"))
            return copied
        finally:
            await target.close()
    finally:
        await sqlite.close()


async def _rows_held(target: PostgresStateStore) -> str:
    rows = await target._fetch(
        "SELECT (SELECT count(*) FROM feeds), (SELECT count(*) FROM entries), "
        "(SELECT count(*) FROM records), (SELECT count(*) FROM frontier)"
    )
    feeds, entries, records, queued = rows[0]
    if not (feeds or entries or records or queued):
        return ""
    return f"{feeds} feeds, {entries} seen entries, {records} records, {queued} queued"


async def _copy_all(
    sqlite: SQLiteStateStore,
    conn: psycopg.AsyncConnection,
    tables: tuple[tuple[str, str, str], ...],
) -> dict[str, int]:
    copied: dict[str, int] = {}
    for table, query, columns in tables:
        # SQLite keeps booleans as 0/1.
        marks = ", ".join(
            "%s::int::boolean" if c.strip() in ("done", "is_update") else "%s"
            for c in columns.split(",")
        )
        insert = f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        count = 0
        batches = _batches(sqlite, query)
        while True:
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                break
            async with conn.cursor() as cursor:
                await cursor.executemany(insert.encode(), batch)
            count += len(batch)
        copied[table] = count
    if any(table == "journal" for table, _q, _c in tables):
        await conn.execute(
            "UPDATE journal_counter SET seq = (SELECT coalesce(max(seq), 0) FROM journal)"
        )
        # The output directory's journal names the state that owns it: the same state,
        # moved, still owns it.
        await conn.execute(
            "UPDATE ingestor_meta SET value = %s WHERE key = 'state_id'", (sqlite.state_id,)
        )
    return copied


def _batches(sqlite: SQLiteStateStore, query: str) -> Iterator[list[tuple[Any, ...]]]:
    cursor = sqlite.conn.execute(query)
    while rows := cursor.fetchmany(_BATCH):
        yield [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
