"""The PostgreSQL store's shared work: feed poll claims, the frontier (claims with
FOR UPDATE SKIP LOCKED, leased to an owner), host leases, article commits."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg

from ingestor.core.frontier import NO_FETCH_HOST, FrontierItem
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
from ingestor.store.postgres_base import PostgresConnection
from ingestor.store.postgres_sql import ENTRY_SEEN, HOST_WAIT, SAVE_FEED
from ingestor.store.sqlite_schema import feed_from_json, feed_to_json, frontier_item

# Take a host for this instance, unless another live instance holds it.
TAKE_HOSTS = (
    "INSERT INTO hosts (host, owner, lease_until) "
    "SELECT h, %(me)s, %(until)s FROM unnest(%(hosts)s::text[]) AS h "
    "ON CONFLICT (host) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until "
    "WHERE hosts.owner IS NULL OR hosts.owner = excluded.owner OR hosts.lease_until <= %(now)s "
    "RETURNING host, next_allowed_at"
)

CLAIM_ITEMS = (
    "WITH picked AS (SELECT p.item_id FROM unnest(%(hosts)s::text[], %(counts)s::int[]) "
    "  AS r(host, n), LATERAL (SELECT item_id FROM frontier WHERE host = r.host "
    "  AND not_before <= %(now)s AND lease_until <= %(now)s ORDER BY not_before, item_id "
    "  LIMIT r.n FOR UPDATE SKIP LOCKED) p) "
    "UPDATE frontier f SET owner = %(me)s, lease_until = %(until)s FROM picked "
    "WHERE f.item_id = picked.item_id RETURNING f.item_id, f.feed_id, f.canonical_url, f.host, "
    "f.payload, f.is_update, f.attempts, f.enqueued_at, f.last_error, "
    "(SELECT r.record_id FROM records r WHERE r.canonical_url = f.canonical_url AND r.done)"
)


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

    async def _take_hosts(
        self, conn: psycopg.AsyncConnection, hosts: list[str], now: float, until: float
    ) -> dict[str, float]:
        """Lease these hosts to this instance where no other live one holds them; returns
        the hosts taken and when each may be sent its next request."""
        if not hosts:
            return {}
        cursor = await conn.execute(
            TAKE_HOSTS, {"me": self.instance_id, "until": until, "now": now, "hosts": hosts}
        )
        taken = {host: float(allowed) for host, allowed in await cursor.fetchall()}
        for host in taken:
            self._idle_host(host, now)
        return taken

    async def release_feeds(self, feed_ids: Sequence[str]) -> None:
        """Polls that ended without a commit (skipped, or an unexpected error)."""
        held = [f for f in feed_ids if f in self._feed_hosts]
        if not held:
            return
        for feed_id in held:
            self._release_feed_locally(feed_id)
        await self._fetch(
            "UPDATE feeds SET owner = NULL, lease_until = 0 WHERE feed_id = ANY(%s) AND owner = %s",
            (held, self.instance_id),
        )

    async def commit_poll(self, commit: PollCommit) -> None:
        state, now = commit.state, time.time()
        items = [
            (i.feed_id, i.entry_key, i.canonical_url, i.host, i.payload, i.is_update, i.enqueued_at)
            for i in commit.items
        ]
        seen = [
            (i.feed_id, i.entry_key, i.enqueued_at, None, i.entry_updated) for i in commit.items
        ]

        async def save(conn: psycopg.AsyncConnection) -> None:
            await conn.execute(
                SAVE_FEED,
                (state.feed_id, feed_to_json(state), state.next_due, self.instance_id, now),
            )
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
        me, until = self.instance_id, lease_until

        async def claim(conn: psycopg.AsyncConnection) -> ClaimResult:
            wanted = [h for h, _ in requests if h != NO_FETCH_HOST]
            taken = await self._take_hosts(conn, wanted, now, until)
            host_next: dict[str, float | None] = {}
            ready: list[tuple[str, int]] = []
            for host, count in requests:
                allowed_at = 0.0 if host == NO_FETCH_HOST else taken.get(host)
                if allowed_at is None:
                    host_next[host] = None  # another instance's now: the refresh brings it back
                elif allowed_at > now:
                    host_next[host] = allowed_at
                else:
                    ready.append((host, count))
            items: list[FrontierItem] = []
            if ready:
                params: dict[str, Any] = {
                    "hosts": [h for h, _ in ready],
                    "counts": [n for _, n in ready],
                    "now": now,
                    "me": me,
                    "until": until,
                }
                cursor = await conn.execute(CLAIM_ITEMS, params)
                items = [frontier_item(row) for row in await cursor.fetchall()]
                cursor = await conn.execute(
                    "SELECT host, min(not_before) FROM frontier WHERE host = ANY(%(hosts)s) "
                    "AND lease_until <= %(now)s GROUP BY host",
                    params,
                )
                left = dict(await cursor.fetchall())
                for host, _ in ready:
                    host_next[host] = left.get(host)
            return ClaimResult(items, host_next)

        result = await self._transaction(claim)
        for item in result.items:
            self._held_items[item.item_id] = item.host
            if item.host != NO_FETCH_HOST:
                self._took_host(item.host)
        return result

    async def commit_article(self, commit: ArticleCommit) -> None:
        record = commit.record
        await self._fetch(
            "SELECT ingestor_commit_article(%s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s, %s)",
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
                    )
                    if record is not None
                    else (None, None, None, None, None, [], None)
                ),
            ),
        )
        self._release_item_locally(commit.item_id)

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
