"""The PostgreSQL state store's schema and its migrations, applied at start under an
advisory lock so that several instances starting together migrate once.

Times are epoch seconds (double precision), as in the SQLite store, so both backends share
the pure rules in core/. Leases: `owner` is an instance id, `lease_until` when the claim
lapses unless the owner's heartbeat renews it.
"""

from __future__ import annotations

import psycopg

from ingestor.errors import StateError
from ingestor.store.postgres_functions import FUNCTIONS

# The advisory lock key under which the schema is created or migrated ("ingestor").
MIGRATION_LOCK = 0x696E6765

SCHEMA_VERSION = 5

MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE feeds (
    feed_id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    next_due DOUBLE PRECISION NOT NULL DEFAULT 0,
    host TEXT NOT NULL DEFAULT '',
    owner TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_poll_by TEXT,
    last_poll_at DOUBLE PRECISION
);
CREATE INDEX feeds_next_due ON feeds (next_due);
CREATE TABLE entries (
    feed_id TEXT NOT NULL,
    entry_key TEXT NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL,
    record_id TEXT,
    entry_updated DOUBLE PRECISION,
    PRIMARY KEY (feed_id, entry_key)
);
CREATE INDEX entries_seen_at ON entries (seen_at);
CREATE TABLE records (
    record_id TEXT PRIMARY KEY,
    canonical_url TEXT NOT NULL UNIQUE,
    location TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT false,
    content_hash TEXT,
    feed_id TEXT,
    first_ingested DOUBLE PRECISION NOT NULL,
    committed_at DOUBLE PRECISION
);
CREATE TABLE content_claims (
    content_hash TEXT PRIMARY KEY,
    record_id TEXT NOT NULL
);
CREATE INDEX content_claims_record ON content_claims (record_id);
CREATE TABLE fingerprints (
    record_id TEXT PRIMARY KEY,
    scheme TEXT NOT NULL,
    signature BYTEA NOT NULL,
    ingested_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX fingerprints_ingested_at ON fingerprints (ingested_at);
CREATE TABLE lsh_bands (
    band_key BIGINT NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (band_key, record_id)
);
CREATE INDEX lsh_bands_record ON lsh_bands (record_id);
CREATE TABLE frontier (
    item_id BIGSERIAL PRIMARY KEY,
    feed_id TEXT NOT NULL,
    entry_key TEXT NOT NULL,
    canonical_url TEXT NOT NULL,
    host TEXT NOT NULL,
    payload TEXT NOT NULL,
    is_update BOOLEAN NOT NULL DEFAULT false,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    enqueued_at DOUBLE PRECISION NOT NULL,
    last_error TEXT,
    owner TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    UNIQUE (feed_id, entry_key)
);
CREATE INDEX frontier_host_due ON frontier (host, not_before);
CREATE TABLE article_failures (
    feed_id TEXT PRIMARY KEY,
    url TEXT,
    error TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE TABLE host_waits (
    host TEXT PRIMARY KEY,
    not_before DOUBLE PRECISION NOT NULL,
    reason TEXT
);
CREATE TABLE hosts (
    host TEXT PRIMARY KEY,
    owner TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    next_allowed_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE instances (
    instance_id TEXT PRIMARY KEY,
    started_at DOUBLE PRECISION NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL
);
""",
    # The change journal: one fleet-wide, gap-free order (the counter's row lock keeps
    # commits in seq order), and records.deleted_at for output.retention. The article
    # functions change their signatures: the old ones go.
    2: """
CREATE TABLE journal (
    seq BIGINT PRIMARY KEY,
    op TEXT NOT NULL,
    record_id TEXT NOT NULL,
    path TEXT NOT NULL,
    content_hash TEXT,
    at DOUBLE PRECISION NOT NULL,
    writer TEXT NOT NULL DEFAULT ''
);
CREATE INDEX journal_record ON journal (record_id, seq);
CREATE INDEX journal_at ON journal (at);
CREATE TABLE journal_counter (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    seq BIGINT NOT NULL
);
INSERT INTO journal_counter VALUES (true, 0);
ALTER TABLE records ADD COLUMN deleted_at DOUBLE PRECISION;
CREATE INDEX records_retention ON records (first_ingested) WHERE done AND deleted_at IS NULL;
DROP FUNCTION IF EXISTS ingestor_prepare_article(
    TEXT, TEXT, TEXT, DOUBLE PRECISION, TEXT, TEXT, BIGINT[], DOUBLE PRECISION, BYTEA, BOOLEAN);
DROP FUNCTION IF EXISTS ingestor_commit_article(
    BIGINT, TEXT, TEXT, DOUBLE PRECISION, TEXT, DOUBLE PRECISION, TEXT, TEXT, TEXT, TEXT, TEXT,
    TEXT, TEXT, BYTEA, BIGINT[], DOUBLE PRECISION);
""",
    # The state's identity: the output directory's journal names the state that owns it.
    3: """
CREATE TABLE ingestor_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO ingestor_meta VALUES ('state_id', replace(gen_random_uuid()::text, '-', ''));
""",
    # What the feed said of an entry (FeedEntry.text_digest): a change is an update.
    4: """
ALTER TABLE entries ADD COLUMN entry_digest TEXT;
""",
    # Delivery sinks (webhooks): each one's cursor in the journal, and its lease; stories.
    5: """
CREATE TABLE sinks (
    name TEXT PRIMARY KEY,
    cursor BIGINT NOT NULL,
    updated_at DOUBLE PRECISION,
    last_error TEXT,
    failures BIGINT NOT NULL DEFAULT 0,
    holder TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
-- The first record of each record's story (NULL: the record itself).
ALTER TABLE records ADD COLUMN story_id TEXT;
""",
}


async def migrate(conn: psycopg.AsyncConnection, where: str) -> None:
    """Create or upgrade the schema; safe when several instances start at once."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS ingestor_schema (version INTEGER NOT NULL)")
        cursor = await conn.execute("SELECT max(version) FROM ingestor_schema")
        row = await cursor.fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise StateError(
                f"state database {where} has schema version {current}, newer than this "
                f"ingestor understands ({SCHEMA_VERSION}): upgrade ingestor"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            async with conn.transaction():
                await conn.execute(MIGRATIONS[version].encode())
                await conn.execute("INSERT INTO ingestor_schema VALUES (%s)", (version,))
        await conn.execute(FUNCTIONS.encode())
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
