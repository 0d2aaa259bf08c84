"""The PostgreSQL store's shared work: feed poll claims, the frontier (claims with
FOR UPDATE SKIP LOCKED, leased to an owner), host leases, article commits."""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

from ingestor.core.frontier import NO_FETCH_HOST, FrontierItem
from ingestor.core.journal import JournalEntry, with_seq
from ingestor.core.state import (
    ArticleCommit,
    ClaimResult,
    FeedClaims,
    FeedState,
    FrontierRow,
    FrontierSummary,
    ItemRetry,
    PollCommit,
)
from ingestor.core.urls import host_key
from ingestor.store.codec import feed_from_json, feed_to_json, frontier_item
from ingestor.store.postgres_base import PostgresConnection
from ingestor.store.postgres_sql import ENTRY_SEEN, HOST_WAIT, SAVE_FEED


class PostgresFrontier(PostgresConnection):
    # --- feed polls ---

    async def claim_feeds(
        self, requests: Sequence[tuple[str, str]], now: float, force: bool = False
    ) -> FeedClaims:
        """Claim the polls of these (feed id, host) pairs: the feed's lease and its host's,
        in one call (see ingestor_claim_feeds in postgres_schema)."""
        ids = [feed_id for feed_id, _ in requests]
        host_of = dict(requests)
        rows = await self._fetch(
            "SELECT * FROM ingestor_claim_feeds(%s, %s, %s, %s, %s, %s, %s)",
            (
                ids,
                [host for _, host in requests],
                [feed_to_json(FeedState(feed_id=f)) for f in ids],
                self.instance_id,
                now,
                now + self.lease_ttl,
                force,
            ),
        )
        # Feeds another instance is claiming at this very moment are not returned.
        busy: dict[str, tuple[float, str]] = {
            f: (now + 1.0, "being claimed by another instance") for f in ids
        }
        claimed: dict[str, FeedState] = {}
        for feed_id, data, wait, why, took_host in rows:
            if took_host:
                self._idle_host(host_of[feed_id], now)
            if data is not None:
                claimed[feed_id] = feed_from_json(data)
                del busy[feed_id]
                self._feed_hosts[feed_id] = host_of[feed_id]
                self._took_host(host_of[feed_id])
            else:
                busy[feed_id] = (float(wait), str(why))
        return FeedClaims(claimed, busy)

    async def claim_due_feeds(self, now: float, limit: int) -> dict[str, FeedState]:
        """The shared schedule: up to `limit` due feeds no other instance holds, on hosts
        no other instance holds, earliest first (see ingestor_claim_due_feeds)."""
        rows = await self._fetch(
            "SELECT * FROM ingestor_claim_due_feeds(%s, %s, %s, %s)",
            (self.instance_id, now, now + self.lease_ttl, limit),
        )
        claimed = {}
        for feed_id, data in rows:
            if feed_id in self._feed_hosts:
                continue  # a lapsed lease on a poll still running here: it is still ours
            state = feed_from_json(data)
            claimed[feed_id] = state
            host = host_key(state.url)
            self._feed_hosts[feed_id] = host
            self._took_host(host)
        return claimed

    async def register_feeds(self, feeds: Sequence[tuple[str, str, float]]) -> None:
        """Configured (feed id, host, first due time): the ones the state lacks are added,
        so that the shared schedule knows them."""
        if feeds:
            await self._fetch(
                "INSERT INTO feeds (feed_id, host, next_due, data) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[]) "
                "ON CONFLICT (feed_id) DO NOTHING",
                (
                    [f for f, _, _ in feeds],
                    [h for _, h, _ in feeds],
                    [d for _, _, d in feeds],
                    [feed_to_json(FeedState(feed_id=f, next_due=d)) for f, _, d in feeds],
                ),
            )

    async def release_feeds(self, feed_ids: Sequence[str], next_due: float | None = None) -> None:
        """Polls that ended without a commit (skipped, disabled, an unexpected error): due
        again at `next_due` when given."""
        held = [f for f in feed_ids if f in self._feed_hosts]
        if not held:
            return
        for feed_id in held:
            self._release_feed_locally(feed_id)
        await self._fetch(
            "UPDATE feeds SET owner = NULL, lease_until = 0, "
            "next_due = greatest(next_due, coalesce(%s, 0)) "
            "WHERE feed_id = ANY(%s) AND owner = %s",
            (next_due, held, self.instance_id),
        )

    async def commit_poll(self, commit: PollCommit) -> None:
        state, now = commit.state, time.time()
        saved = (
            state.feed_id,
            feed_to_json(state),
            state.next_due,
            host_key(state.url),
            self.instance_id,
            now,
        )
        if not commit.items and commit.host_wait is None:
            # An unchanged feed, the common case: one statement.
            await self._fetch(SAVE_FEED, saved)
            self._release_feed_locally(state.feed_id)
            return
        items = [
            (i.feed_id, i.entry_key, i.canonical_url, i.host, i.payload, i.is_update, i.enqueued_at)
            for i in commit.items
        ]
        seen = [
            (i.feed_id, i.entry_key, i.enqueued_at, None, i.entry_updated, i.entry_digest)
            for i in commit.items
        ]

        async def save(conn: psycopg.AsyncConnection) -> None:
            await conn.execute(SAVE_FEED, saved)
            async with conn.cursor() as cursor:
                if items:
                    # An entry still queued keeps its place and attempts; its text is newest.
                    await cursor.executemany(
                        "INSERT INTO frontier (feed_id, entry_key, canonical_url, host, "
                        "payload, is_update, enqueued_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (feed_id, entry_key) DO UPDATE SET "
                        "payload = excluded.payload, "
                        "is_update = frontier.is_update AND excluded.is_update",
                        items,
                    )
                    await cursor.executemany(ENTRY_SEEN, seen)
            if commit.host_wait is not None:
                wait = commit.host_wait
                await conn.execute(HOST_WAIT, (wait.host, wait.until, wait.reason))

        await self._transaction(save)
        self._release_feed_locally(state.feed_id)

    # --- the frontier ---

    async def frontier_hosts(self, now: float) -> dict[str, float]:
        """Hosts with unclaimed items that no other live instance holds."""
        rows = await self._fetch(
            "SELECT f.host, greatest(min(f.not_before), coalesce(max(h.next_allowed_at), 0)) "
            "FROM frontier f LEFT JOIN hosts h ON h.host = f.host "
            "WHERE f.lease_until <= %(now)s AND (h.owner IS NULL OR h.owner = %(me)s "
            "OR h.lease_until <= %(now)s) GROUP BY f.host",
            {"now": now, "me": self.instance_id},
        )
        return {host: float(due) for host, due in rows}

    async def host_waits(self, now: float) -> dict[str, float]:
        rows = await self._fetch(
            "SELECT host, not_before FROM host_waits WHERE not_before > %s", (now,)
        )
        return {host: float(until) for host, until in rows}

    async def claim_articles(
        self, requests: Sequence[tuple[str, int]], now: float, lease_until: float
    ) -> ClaimResult:
        """One call (ingestor_claim_articles): each host's lease, then its due items."""
        rows = await self._fetch(
            "SELECT * FROM ingestor_claim_articles(%s, %s, %s, %s, %s)",
            (
                [host for host, _ in requests],
                [count for _, count in requests],
                self.instance_id,
                now,
                lease_until,
            ),
        )
        items: list[FrontierItem] = []
        host_next: dict[str, float | None] = {}
        for host, taken, next_due, item_id, *item in rows:
            if item_id is not None:
                feed_id, canonical, payload, is_update, attempts, enqueued, error, known = item
                row = (item_id, feed_id, canonical, host, payload, is_update, attempts)
                items.append(frontier_item((*row, enqueued, error, known)))
                self._held_items[item_id] = host
                if host != NO_FETCH_HOST:
                    self._took_host(host)
                continue
            # A host another instance holds is dropped; the board's refresh brings it back.
            host_next[host] = float(next_due) if taken and next_due is not None else None
            if taken and host != NO_FETCH_HOST:
                self._idle_host(host, now)
        items.sort(key=lambda i: i.item_id)
        return ClaimResult(items, host_next)

    async def commit_article(self, commit: ArticleCommit) -> None:
        await self._commit_article(commit)

    async def _commit_article(self, commit: ArticleCommit) -> JournalEntry | None:
        """One call (ingestor_commit_article); a written record's journal line comes back
        with its seq."""
        record = commit.record
        if record is not None and record.story_id is not None:
            # Before the commit (a crash in between leaves an uncommitted record, whose
            # redo sets the same story): copies only, one round trip more for them.
            await self._fetch(
                "UPDATE records SET story_id = %s WHERE record_id = %s RETURNING record_id",
                (record.story_id, record.record_id),
            )
        rows = await self._fetch(
            "SELECT * FROM ingestor_commit_article(%s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                commit.item_id,
                commit.feed_id,
                commit.entry_key,
                commit.committed_at,
                commit.seen_record_id,
                commit.entry_updated,
                commit.release_record,
                commit.failure,
                commit.failed_url,
                *(
                    (
                        record.record_id,
                        record.content_hash,
                        record.feed_id,
                        record.scheme,
                        record.signature,
                        list(record.band_keys),
                        record.committed_at,
                        record.op,
                        self.journal_writer,
                    )
                    if record is not None
                    else (None, None, None, None, None, [], None, None, None)
                ),
            ),
        )
        if commit.host_wait is not None:
            # Rare (a page given up on while its host asked to wait): one statement more.
            wait = commit.host_wait
            await self._fetch(HOST_WAIT, (wait.host, wait.until, wait.reason))
        # The item is no longer this instance's: the heartbeat stops renewing it, and its
        # host is handed back once no other item holds it.
        self._release_item_locally(commit.item_id)
        seq, location = rows[0]
        if record is None or seq is None:
            return None
        return with_seq(record.journal_change(location), int(seq), self.journal_writer)

    async def reschedule_article(self, retry: ItemRetry) -> None:
        host_wait = retry.host_wait

        async def save(conn: psycopg.AsyncConnection) -> None:
            await conn.execute(
                "UPDATE frontier SET not_before = %s, attempts = %s, last_error = %s, "
                "owner = NULL, lease_until = 0 WHERE item_id = %s",
                (retry.not_before, retry.attempts, retry.error, retry.item_id),
            )
            if host_wait is not None:
                await conn.execute(HOST_WAIT, (host_wait.host, host_wait.until, host_wait.reason))

        await self._transaction(save)
        self._release_item_locally(retry.item_id)

    async def frontier_summary(self, now: float) -> FrontierSummary:
        async def lookup(conn: psycopg.AsyncConnection) -> FrontierSummary:
            cursor = await conn.execute("SELECT count(*), min(enqueued_at) FROM frontier")
            size, oldest = await cursor.fetchone() or (0, None)
            grouped = (
                "SELECT f.{key}, count(*), "
                "min(greatest(f.not_before, coalesce(w.not_before, 0))), max(f.attempts), "
                "(SELECT last_error FROM frontier g WHERE g.{key} = f.{key} "
                "AND g.last_error IS NOT NULL ORDER BY g.attempts DESC LIMIT 1) "
                "FROM frontier f LEFT JOIN host_waits w ON w.host = f.host "
                "AND w.not_before > %s GROUP BY f.{key} ORDER BY count(*) DESC"
            )
            rows = {}
            for key in ("host", "feed_id"):
                cursor = await conn.execute(grouped.format(key=key).encode(), (now,))
                rows[key] = [FrontierRow(*row) for row in await cursor.fetchall()]
            cursor = await conn.execute("SELECT feed_id, url, error, at FROM article_failures")
            failures = {f: (url, error, at) for f, url, error, at in await cursor.fetchall()}
            return FrontierSummary(size, oldest, rows["host"], rows["feed_id"], failures)

        return await self._transaction(lookup)
