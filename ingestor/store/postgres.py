"""PostgreSQL state store: the StateStore protocol for several instances sharing one
database (state.url). Each call is one transaction, as in the SQLite store; the work
sharing (leases, host leases, heartbeat) is in postgres_base and postgres_frontier."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial

import psycopg

from ingestor.core import settle_steps as steps
from ingestor.core.journal import JournalChange, JournalEntry, with_seq, writer_name
from ingestor.core.state import (
    ArticleLookup,
    ArticlePrep,
    EntryVersion,
    FeedState,
    NearCandidate,
    RecordFiles,
    RecordRef,
    Settlement,
    SinkPosition,
    StagedFile,
)
from ingestor.store import codec
from ingestor.store.postgres_base import LOST_AFTER_TTLS
from ingestor.store.postgres_frontier import PostgresFrontier
from ingestor.store.step_driver import run_steps_async
from ingestor.store.traffic import names_calls


def _put_durably(files: RecordFiles, data: bytes, location: str) -> StagedFile:
    staged = files.put(data, location)
    files.sync()
    return staged


def _publish(files: RecordFiles, staged: StagedFile | None, entry: JournalEntry | None) -> None:
    files.queue(staged, entry)
    files.publish()


SAVE_FEED_KEEPING_LEASE = (
    "INSERT INTO feeds (feed_id, data, next_due) VALUES (%s, %s, %s) ON CONFLICT (feed_id) "
    "DO UPDATE SET data = excluded.data, next_due = excluded.next_due"
)

NEAR_CANDIDATES = (
    "SELECT DISTINCT f.record_id, f.signature, f.ingested_at FROM lsh_bands b "
    "JOIN fingerprints f ON f.record_id = b.record_id WHERE b.band_key = ANY(%s) "
    "AND f.scheme = %s AND f.ingested_at >= %s AND f.record_id != %s "
    "ORDER BY f.ingested_at LIMIT 200"
)


@names_calls
class PostgresStateStore(PostgresFrontier):
    async def fingerprint_schemes(self, since: float) -> set[str]:
        rows = await self._fetch(
            "SELECT DISTINCT scheme FROM fingerprints WHERE ingested_at >= %s", (since,)
        )
        return {row[0] for row in rows}

    async def settle_article(self, sequence: steps.SettleSteps, files: RecordFiles) -> Settlement:
        """Two round trips (Prepare and Commit), as the database's own functions
        (ingestor_prepare_article, ingestor_commit_article) keep racing instances apart;
        within this one a lock keeps articles (and their journal lines) in order, as
        SQLite's thread does."""
        async with self._settle_lock:
            return await run_steps_async(sequence, partial(self._perform, files))

    async def _perform(self, files: RecordFiles, step: steps.SettleStep) -> object:
        match step:
            case steps.Prepare(lookup):
                return await self.prepare_article(lookup)
            case steps.Stage(data, location):
                return await asyncio.to_thread(_put_durably, files, data, location)
            case steps.Commit(commit):
                return await self._commit_article(commit)
            case steps.CommitFailed():
                pass  # whether the database committed is unknown: the next start settles it
            case steps.Publish(staged, entry):
                await asyncio.to_thread(_publish, files, staged, entry)
        return None

    async def journal_since(
        self, seq: int, limit: int, writer: str | None = None
    ) -> list[JournalEntry]:
        where = "seq > %s" + ("" if writer is None else " AND writer = %s")
        args: tuple[object, ...] = (seq,) if writer is None else (seq, writer)
        rows = await self._fetch(
            f"SELECT {codec.JOURNAL_COLUMNS} FROM journal WHERE {where} ORDER BY seq LIMIT %s",
            (*args, limit),
        )
        return [codec.journal_entry(row) for row in rows]

    async def journal_latest(self, record_ids: Sequence[str]) -> dict[str, JournalEntry]:
        if not record_ids:
            return {}
        rows = await self._fetch(
            f"SELECT DISTINCT ON (record_id) {codec.JOURNAL_COLUMNS} FROM journal "
            "WHERE record_id = ANY(%s) ORDER BY record_id, seq DESC",
            (list(dict.fromkeys(record_ids)),),
        )
        return {row[2]: codec.journal_entry(row) for row in rows}

    async def expire_records(
        self, before: float, now: float, limit: int, files: RecordFiles
    ) -> int:
        """output.retention: records first ingested before `before` are marked deleted and
        journalled, then their files go (under the settle lock: lines stay in seq order)."""

        async def expire(conn: psycopg.AsyncConnection) -> list[JournalEntry]:
            cursor = await conn.execute(
                "SELECT record_id, location, content_hash FROM records WHERE done "
                "AND deleted_at IS NULL AND first_ingested < %s ORDER BY first_ingested "
                "LIMIT %s FOR UPDATE SKIP LOCKED",
                (before, limit),
            )
            entries = []
            for record_id, location, content_hash in await cursor.fetchall():
                await conn.execute(
                    "UPDATE records SET deleted_at = %s WHERE record_id = %s", (now, record_id)
                )
                cursor = await conn.execute(
                    "SELECT ingestor_journal_append('delete', %s, %s, %s, %s, %s)",
                    (record_id, location, content_hash, now, self.journal_writer),
                )
                row = await cursor.fetchone()
                assert row is not None
                change = JournalChange("delete", record_id, location, content_hash, now)
                entries.append(with_seq(change, int(row[0]), self.journal_writer))
            await conn.execute(
                "DELETE FROM journal WHERE at < %s AND seq < (SELECT max(seq) FROM journal)",
                (before,),
            )
            return entries

        async with self._settle_lock:
            entries = await self._transaction(expire)

            def publish() -> None:
                for entry in entries:
                    files.queue(None, entry)
                files.publish()

            if entries:
                await asyncio.to_thread(publish)
        return len(entries)

    async def load_feeds(self) -> dict[str, FeedState]:
        rows = await self._fetch("SELECT data FROM feeds")
        states = (codec.feed_from_json(row[0]) for row in rows)
        return {s.feed_id: s for s in states}

    async def save_feed(self, state: FeedState) -> None:
        await self.save_feeds([state])

    async def save_feeds(self, states: Iterable[FeedState]) -> None:
        rows = [(s.feed_id, codec.feed_to_json(s), s.next_due) for s in states]

        async def save(conn: psycopg.AsyncConnection) -> None:
            async with conn.cursor() as cursor:
                await cursor.executemany(SAVE_FEED_KEEPING_LEASE, rows)

        if rows:
            await self._transaction(save)

    async def entry_versions(self, feed_id: str, keys: Sequence[str]) -> dict[str, EntryVersion]:
        if not keys:
            return {}
        rows = await self._fetch(
            "SELECT entry_key, entry_updated, entry_digest FROM entries WHERE feed_id = %s "
            "AND entry_key = ANY(%s)",
            (feed_id, list(dict.fromkeys(keys))),
        )
        return {key: EntryVersion(updated, digest) for key, updated, digest in rows}

    async def record_by_canonical(self, canonical_url: str) -> RecordRef | None:
        rows = await self._fetch(codec.RECORD_BY + "canonical_url = %s", (canonical_url,))
        return codec.record_ref(rows[0]) if rows else None

    async def prepare_article(self, lookup: ArticleLookup) -> ArticlePrep:
        """One call (ingestor_prepare_article): reserve the location, claim the body's hash
        and bands, find its duplicates. Racing near duplicates serialize on their band keys
        in the database, so the second one sees the first one's claim."""
        dedup = lookup.dedup
        rows = await self._fetch(
            "SELECT * FROM ingestor_prepare_article(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                lookup.record_id,
                lookup.canonical_url,
                lookup.location,
                lookup.now,
                dedup.content_hash if dedup else None,
                dedup.scheme if dedup else None,
                sorted(set(dedup.band_keys)) if dedup else [],
                dedup.since if dedup else 0.0,
                dedup.signature if dedup else None,
                lookup.want_signature,
            ),
        )
        (inserted, canonical, location, done, content_hash, first, exact, ids, sigs, times, old,
         deleted) = rows[0]  # fmt: skip
        existing = (
            None
            if inserted
            else RecordRef(
                lookup.record_id, canonical, location, done, content_hash, first, bool(deleted)
            )
        )
        candidates = [
            NearCandidate(i, bytes(s), float(t))
            for i, s, t in zip(ids or [], sigs or [], times or [], strict=True)
        ]
        if dedup is not None and dedup.legacy is not None and exact is None:
            # Records of the previous MinHash scheme: one more round trip, only while they
            # are in the window (they were committed long ago: no race to serialize).
            legacy = dedup.legacy
            if legacy.band_keys:
                rows = await self._fetch(
                    NEAR_CANDIDATES,
                    (list(legacy.band_keys), legacy.scheme, legacy.since, lookup.record_id),
                )
                candidates += [NearCandidate(r[0], bytes(r[1]), float(r[2]), True) for r in rows]
        ids = [exact, *(c.record_id for c in candidates), None if inserted else lookup.record_id]
        wanted = list(dict.fromkeys(i for i in ids if i is not None))
        stories: dict[str, str] = {}
        if wanted:
            # Only for a possible copy or a rewrite: a new article needs no extra round trip.
            rows = await self._fetch(
                "SELECT record_id, coalesce(story_id, record_id) FROM records "
                "WHERE record_id = ANY(%s)",
                (wanted,),
            )
            stories = {row[0]: row[1] for row in rows}
        return ArticlePrep(
            location, existing, exact, candidates, bytes(old) if old else None, stories
        )

    async def prune(self, now: float, seen_max_age: float, fingerprint_window: float) -> int:
        async def prune(conn: psycopg.AsyncConnection) -> int:
            cursor = await conn.execute(
                "DELETE FROM entries WHERE seen_at < %s", (now - seen_max_age,)
            )
            removed = cursor.rowcount
            cursor = await conn.execute(
                "WITH old AS (DELETE FROM fingerprints WHERE ingested_at < %s "
                "RETURNING record_id), bands AS (DELETE FROM lsh_bands WHERE record_id IN "
                "(SELECT record_id FROM old)) SELECT count(*) FROM old",
                (now - fingerprint_window,),
            )
            row = await cursor.fetchone()
            removed += int(row[0]) if row else 0
            await conn.execute("DELETE FROM host_waits WHERE not_before < %s", (now,))
            await conn.execute(
                "DELETE FROM instances WHERE seen_at < %s AND instance_id != %s",
                (now - 7 * 86400, self.instance_id),
            )
            return removed

        return await self._transaction(prune)

    # --- for `ingestor status` ---

    async def feed_polls(self) -> dict[str, tuple[str | None, float | None, str | None]]:
        """feed id -> (last polled by, when, held now by)."""
        now = time.time()
        rows = await self._fetch(
            "SELECT feed_id, last_poll_by, last_poll_at, "
            "CASE WHEN lease_until > %s THEN owner END FROM feeds",
            (now,),
        )
        return {f: (by, at, owner) for f, by, at, owner in rows}

    async def take_over_lost_writers(
        self, now: float, settle: Callable[[str], Awaitable[None]]
    ) -> list[str]:
        cutoff = now - LOST_AFTER_TTLS * self.lease_ttl
        lost = await self._fetch(
            "SELECT instance_id FROM instances WHERE seen_at < %s AND instance_id != %s",
            (cutoff, self.instance_id),
        )
        taken = []
        for (instance,) in lost:

            async def adopt(conn: psycopg.AsyncConnection, instance: str = instance) -> bool:
                # The row stays locked while its files are settled: the instance's own
                # restart (which writes the row first) waits, and so does another taker.
                cursor = await conn.execute(
                    "SELECT 1 FROM instances WHERE instance_id = %s AND seen_at < %s "
                    "FOR UPDATE SKIP LOCKED",
                    (instance, cutoff),
                )
                if await cursor.fetchone() is None:
                    return False
                await settle(writer_name(instance))
                await conn.execute("DELETE FROM instances WHERE instance_id = %s", (instance,))
                return True

            if await self._transaction(adopt):
                taken.append(writer_name(instance))
        return taken

    async def instances(self) -> list[tuple[str, float, float]]:
        rows = await self._fetch(
            "SELECT instance_id, started_at, seen_at FROM instances ORDER BY seen_at DESC"
        )
        return [(i, float(s), float(seen)) for i, s, seen in rows]

    # --- delivery sinks ---

    async def sink_position(self, name: str, latest: bool) -> SinkPosition:
        async def position(conn: psycopg.AsyncConnection) -> SinkPosition:
            start = "(SELECT seq FROM journal_counter)" if latest else "0"
            await conn.execute(
                f"INSERT INTO sinks (name, cursor) VALUES (%s, {start}) ON CONFLICT DO NOTHING",
                (name,),
            )
            cursor = await conn.execute(
                f"SELECT {codec.SINK_COLUMNS} FROM sinks WHERE name = %s", (name,)
            )
            row = await cursor.fetchone()
            assert row is not None
            return codec.sink_position(row)

        return await self._transaction(position)

    async def sink_positions(self) -> dict[str, SinkPosition]:
        rows = await self._fetch(f"SELECT {codec.SINK_COLUMNS} FROM sinks")
        return {row[0]: codec.sink_position(row) for row in rows}

    async def journal_newest(self) -> int:
        rows = await self._fetch("SELECT seq FROM journal_counter")
        return int(rows[0][0]) if rows else 0

    async def advance_sink(self, name: str, cursor: int, seq: int, now: float) -> bool:
        return await self._sink_update(
            "UPDATE sinks SET cursor = %s, updated_at = %s, last_error = NULL "
            "WHERE name = %s AND cursor = %s",
            (seq, now, name, cursor),
        )

    async def sink_failed(self, name: str, error: str) -> None:
        await self._sink_update(
            "UPDATE sinks SET last_error = %s, failures = failures + 1 WHERE name = %s",
            (error, name),
        )

    async def rewind_sink(self, name: str, cursor: int) -> bool:
        return await self._sink_update(
            "UPDATE sinks SET cursor = %s, last_error = NULL WHERE name = %s", (cursor, name)
        )

    async def lease_sink(self, name: str, holder: str, now: float, until: float) -> bool:
        # One instance of the fleet delivers each sink: the lease is taken when free or
        # lapsed (its holder died), and renewed by its holder.
        return await self._sink_update(
            "UPDATE sinks SET holder = %s, lease_until = %s "
            "WHERE name = %s AND (holder = %s OR holder IS NULL OR lease_until < %s)",
            (holder, until, name, holder, now),
        )

    async def _sink_update(self, sql: str, params: tuple[object, ...]) -> bool:
        async def update(conn: psycopg.AsyncConnection) -> bool:
            cursor = await conn.execute(sql, params)
            return cursor.rowcount == 1

        return await self._transaction(update)
