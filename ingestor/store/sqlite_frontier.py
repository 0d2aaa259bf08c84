"""The SQLite store's frontier: poll commits, claims, article commits and reschedules,
each one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

from ingestor.core import settle_steps as steps
from ingestor.core.frontier import FrontierItem
from ingestor.core.journal import JournalEntry
from ingestor.core.state import (
    ArticleCommit,
    ArticleLookup,
    ArticlePrep,
    ClaimResult,
    FeedClaims,
    FeedState,
    FrontierRow,
    FrontierSummary,
    ItemRetry,
    PollCommit,
    RecordFiles,
    Settlement,
)
from ingestor.store.codec import RECORD_BY, feed_from_json, feed_to_json, frontier_item, record_ref
from ingestor.store.sqlite_base import SQLiteConnection
from ingestor.store.sqlite_schema import (
    BATCH,
    CLAIM_COLUMNS,
    ENTRY_SEEN,
    HOST_WAIT,
    SAVE_FEED,
    append_journal,
    register_fingerprint,
    release_reservation,
    story_ids,
    write_record,
)
from ingestor.store.step_driver import run_steps


class SQLiteFrontier(SQLiteConnection):
    # One process owns the file (its lock): every claim succeeds and nothing is leased out.
    shared = False

    async def claim_feeds(
        self, requests: Sequence[tuple[str, str]], now: float, force: bool = False
    ) -> FeedClaims:
        ids = [feed_id for feed_id, _ in requests]

        def lookup() -> FeedClaims:
            found: dict[str, FeedState] = {}
            for start in range(0, len(ids), BATCH):
                batch = ids[start : start + BATCH]
                marks = ",".join("?" * len(batch))
                for (data,) in self.conn.execute(
                    f"SELECT data FROM feeds WHERE feed_id IN ({marks})", batch
                ):
                    state = feed_from_json(data)
                    found[state.feed_id] = state
            return FeedClaims({f: found.get(f) or FeedState(feed_id=f) for f in ids})

        return await self._run(lookup)

    async def claim_due_feeds(self, now: float, limit: int) -> dict[str, FeedState]:
        def lookup() -> dict[str, FeedState]:
            rows = self.conn.execute(
                "SELECT data FROM feeds WHERE next_due <= ? ORDER BY next_due LIMIT ?",
                (now, limit),
            )
            states = (feed_from_json(data) for (data,) in rows)
            return {s.feed_id: s for s in states}

        return await self._run(lookup)

    async def register_feeds(self, feeds: Sequence[tuple[str, str, float]]) -> None:
        return None  # one process: its schedule lives in memory

    async def release_feeds(self, feed_ids: Sequence[str], next_due: float | None = None) -> None:
        return None

    async def feed_polls(self) -> dict[str, tuple[str | None, float | None, str | None]]:
        return {}

    def watch_hosts(self, ready_at: Callable[[str], float]) -> None:
        return None

    async def commit_poll(self, commit: PollCommit) -> None:
        state = commit.state
        items = [
            (
                i.feed_id,
                i.entry_key,
                i.canonical_url,
                i.host,
                i.payload,
                int(i.is_update),
                i.enqueued_at,
            )
            for i in commit.items
        ]
        seen = [
            (i.feed_id, i.entry_key, i.enqueued_at, None, i.entry_updated, i.entry_digest)
            for i in commit.items
        ]

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(SAVE_FEED, (state.feed_id, feed_to_json(state), state.next_due))
            if commit.host_wait is not None:
                wait = commit.host_wait
                conn.execute(HOST_WAIT, (wait.host, wait.until, wait.reason))
            if not items:
                return
            # An entry still queued keeps its place and attempts; its text is the newest.
            conn.executemany(
                "INSERT INTO frontier (feed_id, entry_key, canonical_url, host, payload, "
                "is_update, enqueued_at, not_before) VALUES (?, ?, ?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (feed_id, entry_key) DO UPDATE SET payload = excluded.payload, "
                "is_update = min(is_update, excluded.is_update)",
                items,
            )
            conn.executemany(ENTRY_SEEN, seen)

        await self._grouped(save)

    async def frontier_hosts(self, now: float) -> dict[str, float]:
        def lookup() -> dict[str, float]:
            rows = self.conn.execute(
                "SELECT host, min(not_before) FROM frontier WHERE lease_until <= ? GROUP BY host",
                (now,),
            )
            return {host: due for host, due in rows}

        return await self._run(lookup)

    async def host_waits(self, now: float) -> dict[str, float]:
        def lookup() -> dict[str, float]:
            rows = self.conn.execute(
                "SELECT host, not_before FROM host_waits WHERE not_before > ?", (now,)
            )
            return {host: until for host, until in rows}

        return await self._run(lookup)

    async def claim_articles(
        self, requests: Sequence[tuple[str, int]], now: float, lease_until: float
    ) -> ClaimResult:
        def claim(conn: sqlite3.Connection) -> ClaimResult:
            items: list[FrontierItem] = []
            host_next: dict[str, float | None] = {}
            for host, count in requests:
                rows = conn.execute(
                    f"SELECT {CLAIM_COLUMNS} FROM frontier f LEFT JOIN records r "
                    "ON r.canonical_url = f.canonical_url AND r.done = 1 "
                    "WHERE f.host = ? AND f.not_before <= ? AND f.lease_until <= ? "
                    "ORDER BY f.not_before, f.item_id LIMIT ?",
                    (host, now, now, count),
                ).fetchall()
                conn.executemany(
                    "UPDATE frontier SET lease_until = ? WHERE item_id = ?",
                    [(lease_until, row[0]) for row in rows],
                )
                items.extend(frontier_item(row) for row in rows)
                host_next[host] = conn.execute(
                    "SELECT min(not_before) FROM frontier WHERE host = ? AND lease_until <= ?",
                    (host, now),
                ).fetchone()[0]
            return ClaimResult(items, host_next)

        return await self._run(self._transaction, claim)

    async def prepare_article(self, lookup: ArticleLookup) -> ArticlePrep:
        return await self._run(self._transaction, lambda conn: self._prepare(conn, lookup))

    def _prepare(self, conn: sqlite3.Connection, lookup: ArticleLookup) -> ArticlePrep:
        record_id, canonical_url, location = lookup.record_id, lookup.canonical_url, lookup.location
        now, dedup, want_signature = lookup.now, lookup.dedup, lookup.want_signature
        row = conn.execute(RECORD_BY + "record_id = ?", (record_id,)).fetchone()
        existing = record_ref(row) if row else None
        if existing is None:
            conn.execute(
                "INSERT INTO records (record_id, canonical_url, location, done, "
                "first_ingested) VALUES (?, ?, ?, 0, ?)",
                (record_id, canonical_url, location, now),
            )
        old_signature = None
        if want_signature and existing is not None:
            # Only a signature of the same scheme compares (else: no evidence either way).
            found = conn.execute(
                "SELECT signature FROM fingerprints WHERE record_id = ? AND scheme = ?",
                (record_id, dedup.scheme if dedup else ""),
            ).fetchone()
            old_signature = bytes(found[0]) if found else None
        exact, candidates = None, []
        if dedup is not None:
            conn.execute(
                "INSERT OR IGNORE INTO content_claims VALUES (?, ?)",
                (dedup.content_hash, record_id),
            )
            exact = self._find_exact(dedup.content_hash, record_id)
            if exact is None:
                candidates = self._near_candidates(
                    dedup.scheme, dedup.band_keys, dedup.since, record_id
                )
                if dedup.legacy is not None:
                    legacy = dedup.legacy
                    candidates += [
                        replace(c, legacy=True)
                        for c in self._near_candidates(
                            legacy.scheme, legacy.band_keys, legacy.since, record_id
                        )
                    ]
            if dedup.signature is not None and (existing is None or not existing.done):
                # Claimed before the file is written, as in the PostgreSQL store.
                register_fingerprint(
                    conn, record_id, dedup.scheme, dedup.signature, dedup.band_keys, now
                )
        ids = [exact, *(c.record_id for c in candidates), record_id if existing else None]
        return ArticlePrep(
            location if existing is None else existing.location,
            existing,
            exact,
            candidates,
            old_signature,
            story_ids(conn, [i for i in ids if i is not None]),
        )

    async def commit_article(self, commit: ArticleCommit) -> None:
        await self._run(self._transaction, lambda conn: self._commit(conn, commit))

    def _commit(self, conn: sqlite3.Connection, commit: ArticleCommit) -> JournalEntry | None:
        """The item finished; a written record's journal line gets its seq (returned)."""
        record = commit.record
        record_id = record.record_id if record is not None else commit.seen_record_id
        entry = None
        if record is not None:
            change = record.journal_change(write_record(conn, record))
            entry = append_journal(conn, change, self.journal_writer)
        if commit.release_record is not None:
            release_reservation(conn, commit.release_record)
        conn.execute(
            ENTRY_SEEN,
            (
                commit.feed_id,
                commit.entry_key,
                commit.committed_at,
                record_id,
                commit.entry_updated,
                None,
            ),
        )
        conn.execute("DELETE FROM frontier WHERE item_id = ?", (commit.item_id,))
        if commit.failure is not None:
            conn.execute(
                "INSERT OR REPLACE INTO article_failures VALUES (?, ?, ?, ?)",
                (commit.feed_id, commit.failed_url, commit.failure, commit.committed_at),
            )
        if commit.host_wait is not None:
            wait = commit.host_wait
            conn.execute(HOST_WAIT, (wait.host, wait.until, wait.reason))
        return entry

    async def fingerprint_schemes(self, since: float) -> set[str]:
        def lookup() -> set[str]:
            rows = self.conn.execute(
                "SELECT DISTINCT scheme FROM fingerprints WHERE ingested_at >= ?", (since,)
            )
            return {row[0] for row in rows}

        return await self._run(lookup)

    async def settle_article(self, sequence: steps.SettleSteps, files: RecordFiles) -> Settlement:
        """Group commit: the articles (and polls) that arrive while the state thread is busy
        share its next transaction, and each article's steps run inside it.

        The crash argument: a record file is staged (written, fsynced) before the
        transaction that says it is done commits, `files.sync` makes the staged names
        durable before that commit, and the file gets its own name and its journal line
        only after it. A crash before the commit leaves staged files the state does not
        know (dropped at the next start; their items, still in the frontier, are done
        again under the same ids and locations); a crash after it leaves staged files or
        journal lines the state does know (published at the next start)."""

        def settle(conn: sqlite3.Connection) -> Settlement:
            return run_steps(sequence, partial(self._perform, conn, files))

        return await self._grouped(settle, files)

    def _perform(
        self, conn: sqlite3.Connection, files: RecordFiles, step: steps.SettleStep
    ) -> object:
        match step:
            case steps.Prepare(lookup):
                return self._prepare(conn, lookup)
            case steps.Stage(data, location):
                return files.put(data, location)  # synced once for the group, before COMMIT
            case steps.Commit(commit):
                return self._commit(conn, commit)
            case steps.CommitFailed(staged):
                files.discard(staged)  # its savepoint rolls back: certainly not committed
            case steps.Publish(staged, entry):
                files.queue(staged, entry)  # published after the group's COMMIT
        return None

    async def reschedule_article(self, retry: ItemRetry) -> None:
        host_wait = retry.host_wait

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE frontier SET not_before = ?, attempts = ?, last_error = ?, "
                "lease_until = 0 WHERE item_id = ?",
                (retry.not_before, retry.attempts, retry.error, retry.item_id),
            )
            if host_wait is not None:
                conn.execute(HOST_WAIT, (host_wait.host, host_wait.until, host_wait.reason))

        await self._run(self._transaction, save)

    async def frontier_summary(self, now: float) -> FrontierSummary:
        def lookup() -> FrontierSummary:
            if not self._has_frontier:
                return FrontierSummary()
            conn = self.conn
            size, oldest = conn.execute(
                "SELECT count(*), min(enqueued_at) FROM frontier"
            ).fetchone()
            # An item is due at its own not_before or when its host stops waiting,
            # whichever is later.
            grouped = (
                "SELECT f.{key}, count(*), "
                "min(max(f.not_before, coalesce(w.not_before, 0))), max(f.attempts), "
                "(SELECT last_error FROM frontier g WHERE g.{key} = f.{key} "
                "AND g.last_error IS NOT NULL ORDER BY g.attempts DESC LIMIT 1) "
                "FROM frontier f LEFT JOIN host_waits w ON w.host = f.host AND w.not_before > ? "
                "GROUP BY f.{key} ORDER BY count(*) DESC"
            )
            hosts = [FrontierRow(*row) for row in conn.execute(grouped.format(key="host"), (now,))]
            feeds = [
                FrontierRow(*row) for row in conn.execute(grouped.format(key="feed_id"), (now,))
            ]
            failures = {
                feed_id: (url, error, at)
                for feed_id, url, error, at in conn.execute("SELECT * FROM article_failures")
            }
            return FrontierSummary(size, oldest, hosts, feeds, failures)

        return await self._run(lookup)
