"""Statements the PostgreSQL store's modules share."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from ingestor.core.state import CommitItem

ENTRY_SEEN = (
    "INSERT INTO entries (feed_id, entry_key, seen_at, record_id, entry_updated, "
    "entry_digest) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (feed_id, entry_key) DO UPDATE "
    "SET seen_at = excluded.seen_at, "
    "record_id = coalesce(excluded.record_id, entries.record_id), "
    "entry_updated = coalesce(excluded.entry_updated, entries.entry_updated), "
    "entry_digest = coalesce(excluded.entry_digest, entries.entry_digest)"
)

HOST_WAIT = (
    "INSERT INTO host_waits VALUES (%s, %s, %s) ON CONFLICT (host) DO UPDATE SET "
    "not_before = greatest(host_waits.not_before, excluded.not_before), "
    "reason = excluded.reason"
)

# A poll commit also gives the feed's lease back and says who polled it.
SAVE_FEED = (
    "INSERT INTO feeds (feed_id, data, next_due, host, owner, lease_until, last_poll_by, "
    "last_poll_at) VALUES (%s, %s, %s, %s, NULL, 0, %s, %s) ON CONFLICT (feed_id) DO UPDATE "
    "SET data = excluded.data, next_due = excluded.next_due, host = excluded.host, "
    "owner = NULL, lease_until = 0, last_poll_by = excluded.last_poll_by, "
    "last_poll_at = excluded.last_poll_at"
)

RECORD_BY = (
    "SELECT record_id, canonical_url, location, done, content_hash, first_ingested, "
    "deleted_at IS NOT NULL FROM records WHERE "
)


async def write_record(conn: psycopg.AsyncConnection, item: CommitItem) -> None:
    await conn.execute(
        "UPDATE records SET done = true, content_hash = %s, feed_id = %s, committed_at = %s "
        "WHERE record_id = %s",
        (item.content_hash, item.feed_id, item.committed_at, item.record_id),
    )
    await conn.execute(
        "INSERT INTO content_claims VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (item.content_hash, item.record_id),
    )
    if item.signature is not None:
        await register_fingerprint(
            conn, item.record_id, item.scheme, item.signature, item.band_keys, item.committed_at
        )


async def register_fingerprint(
    conn: psycopg.AsyncConnection,
    record_id: str,
    scheme: str,
    signature: bytes,
    band_keys: Sequence[int],
    at: float,
) -> None:
    await conn.execute(
        "WITH d AS (DELETE FROM lsh_bands WHERE record_id = %(id)s AND NOT "
        "(band_key = ANY(%(keys)s))), b AS (INSERT INTO lsh_bands "
        "SELECT k, %(id)s FROM unnest(%(keys)s::bigint[]) AS k ON CONFLICT DO NOTHING) "
        "INSERT INTO fingerprints VALUES (%(id)s, %(scheme)s, %(sig)s, %(at)s) "
        "ON CONFLICT (record_id) DO UPDATE SET scheme = excluded.scheme, "
        "signature = excluded.signature, ingested_at = excluded.ingested_at",
        {"id": record_id, "keys": list(band_keys), "scheme": scheme, "sig": signature, "at": at},
    )
