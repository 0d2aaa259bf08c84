"""SQLite state store (WAL): the embedded default backend of the StateStore protocol."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence

from ingestor.core.journal import JournalChange, JournalEntry
from ingestor.core.state import (
    EntryVersion,
    FeedState,
    RecordFiles,
    RecordRef,
    SinkPosition,
)
from ingestor.store import codec
from ingestor.store.sqlite_frontier import SQLiteFrontier
from ingestor.store.sqlite_schema import (
    BATCH,
    SAVE_FEED,
    append_journal,
)
from ingestor.store.traffic import names_calls


@names_calls
class SQLiteStateStore(SQLiteFrontier):
    async def load_feeds(self) -> dict[str, FeedState]:
        def load() -> dict[str, FeedState]:
            rows = self.conn.execute("SELECT data FROM feeds").fetchall()
            states = (codec.feed_from_json(row[0]) for row in rows)
            return {s.feed_id: s for s in states}

        return await self._run(load)

    async def save_feed(self, state: FeedState) -> None:
        await self.save_feeds([state])

    async def save_feeds(self, states: Iterable[FeedState]) -> None:
        rows = [(s.feed_id, codec.feed_to_json(s), s.next_due) for s in states]

        def save(conn: sqlite3.Connection) -> None:
            conn.executemany(SAVE_FEED, rows)

        if rows:
            await self._run(self._transaction, save)

    async def entry_versions(self, feed_id: str, keys: Sequence[str]) -> dict[str, EntryVersion]:
        def lookup() -> dict[str, EntryVersion]:
            found: dict[str, EntryVersion] = {}
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), BATCH):
                batch = unique[start : start + BATCH]
                marks = ",".join("?" * len(batch))
                for key, updated, digest in self.conn.execute(
                    f"SELECT entry_key, entry_updated, entry_digest FROM entries "
                    f"WHERE feed_id = ? AND entry_key IN ({marks})",
                    (feed_id, *batch),
                ):
                    found[key] = EntryVersion(updated, digest)
            return found

        return await self._run(lookup)

    async def record_by_canonical(self, canonical_url: str) -> RecordRef | None:
        def lookup() -> RecordRef | None:
            sql = codec.RECORD_BY + "canonical_url = ?"
            row = self.conn.execute(sql, (canonical_url,)).fetchone()
            return codec.record_ref(row) if row else None

        return await self._run(lookup)

    async def journal_since(
        self, seq: int, limit: int, writer: str | None = None
    ) -> list[JournalEntry]:
        def lookup() -> list[JournalEntry]:
            where = "seq > ?" + ("" if writer is None else " AND writer = ?")
            args: tuple[object, ...] = (seq,) if writer is None else (seq, writer)
            rows = self.conn.execute(
                f"SELECT {codec.JOURNAL_COLUMNS} FROM journal WHERE {where} ORDER BY seq LIMIT ?",
                (*args, limit),
            )
            return [codec.journal_entry(row) for row in rows]

        return await self._run(lookup)

    async def take_over_lost_writers(
        self, now: float, settle: Callable[[str], Awaitable[None]]
    ) -> list[str]:
        return []  # one process writes this state (its lock says so): nobody to take over

    async def journal_latest(self, record_ids: Sequence[str]) -> dict[str, JournalEntry]:
        def lookup() -> dict[str, JournalEntry]:
            found: dict[str, JournalEntry] = {}
            for record_id in dict.fromkeys(record_ids):
                row = self.conn.execute(
                    f"SELECT {codec.JOURNAL_COLUMNS} FROM journal WHERE record_id = ? "
                    "ORDER BY seq DESC LIMIT 1",
                    (record_id,),
                ).fetchone()
                if row is not None:
                    found[record_id] = codec.journal_entry(row)
            return found

        return await self._run(lookup)

    async def expire_records(
        self, before: float, now: float, limit: int, files: RecordFiles
    ) -> int:
        def expire(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT record_id, location, content_hash FROM records WHERE done = 1 "
                "AND deleted_at IS NULL AND first_ingested < ? ORDER BY first_ingested LIMIT ?",
                (before, limit),
            ).fetchall()
            for record_id, location, content_hash in rows:
                conn.execute(
                    "UPDATE records SET deleted_at = ? WHERE record_id = ?", (now, record_id)
                )
                change = JournalChange("delete", record_id, location, content_hash, now)
                files.queue(None, append_journal(conn, change, self.journal_writer))
            # The journal's copy in the state: what is older than the retention goes too.
            conn.execute(
                "DELETE FROM journal WHERE at < ? AND seq < (SELECT max(seq) FROM journal)",
                (before,),
            )
            return len(rows)

        return await self._grouped(expire, files)

    async def prune(self, now: float, seen_max_age: float, fingerprint_window: float) -> int:
        """Forget entry keys older than seen_max_age and fingerprints outside the window."""

        def prune(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM entries WHERE seen_at < ?", (now - seen_max_age,)
            ).rowcount
            old = [
                r[0]
                for r in conn.execute(
                    "SELECT record_id FROM fingerprints WHERE ingested_at < ?",
                    (now - fingerprint_window,),
                )
            ]
            for start in range(0, len(old), BATCH):
                batch = old[start : start + BATCH]
                marks = ",".join("?" * len(batch))
                conn.execute(f"DELETE FROM lsh_bands WHERE record_id IN ({marks})", batch)
                conn.execute(f"DELETE FROM fingerprints WHERE record_id IN ({marks})", batch)
            conn.execute("DELETE FROM host_waits WHERE not_before < ?", (now,))
            return removed + len(old)

        return await self._run(self._transaction, prune)

    # --- delivery sinks ---

    async def sink_position(self, name: str, latest: bool) -> SinkPosition:
        def position(conn: sqlite3.Connection) -> SinkPosition:
            start = "(SELECT coalesce(max(seq), 0) FROM journal)" if latest else "0"
            conn.execute(
                f"INSERT INTO sinks (name, cursor) VALUES (?, {start}) ON CONFLICT DO NOTHING",
                (name,),
            )
            row = conn.execute(
                f"SELECT {codec.SINK_COLUMNS} FROM sinks WHERE name = ?", (name,)
            ).fetchone()
            return codec.sink_position(row)

        return await self._run(self._transaction, position)

    async def sink_positions(self) -> dict[str, SinkPosition]:
        def lookup() -> dict[str, SinkPosition]:
            try:
                rows = self.conn.execute(f"SELECT {codec.SINK_COLUMNS} FROM sinks").fetchall()
            except sqlite3.OperationalError:
                return {}  # a state older than sinks, read only: none yet
            return {row[0]: codec.sink_position(row) for row in rows}

        return await self._run(lookup)

    async def journal_newest(self) -> int:
        def lookup() -> int:
            return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0])

        return await self._run(lookup)

    async def advance_sink(self, name: str, cursor: int, seq: int, now: float) -> bool:
        def advance(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(
                "UPDATE sinks SET cursor = ?, updated_at = ?, last_error = NULL "
                "WHERE name = ? AND cursor = ?",
                (seq, now, name, cursor),
            )
            return changed.rowcount == 1

        return await self._run(self._transaction, advance)

    async def sink_failed(self, name: str, error: str) -> None:
        def failed(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE sinks SET last_error = ?, failures = failures + 1 WHERE name = ?",
                (error, name),
            )

        await self._run(self._transaction, failed)

    async def rewind_sink(self, name: str, cursor: int) -> bool:
        return await self._run(rewind_sink_in, self.conn, name, cursor)

    async def lease_sink(self, name: str, holder: str, now: float, until: float) -> bool:
        return True  # one process holds the SQLite state (its lock file)


def rewind_sink_in(conn: sqlite3.Connection, name: str, cursor: int) -> bool:
    """A sink's cursor set back (`ingestor sinks replay`). Also used on a connection of its
    own while the daemon holds the state: the daemon reads the cursor before each batch
    and advances it only from the value it read, so the rewind is never overwritten."""
    with conn:
        changed = conn.execute(
            "UPDATE sinks SET cursor = ?, last_error = NULL WHERE name = ?", (cursor, name)
        )
    return changed.rowcount == 1
