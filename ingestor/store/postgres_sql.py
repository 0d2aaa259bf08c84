"""Statements the PostgreSQL store's modules share."""

from __future__ import annotations

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
