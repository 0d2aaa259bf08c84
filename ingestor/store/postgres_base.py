"""The PostgreSQL store's connection pool, its instance identity and its heartbeat.

Several instances share one database. Whatever an instance claims (a feed poll, a frontier
item, a host) carries its id as `owner` and a `lease_until`; the heartbeat renews what the
instance still holds, so a claim outlives the lease only while its owner is alive. An
instance that dies (kill -9, machine gone) stops renewing, and the others take its work
after `lease_ttl`.

Hosts are leased to one instance at a time (see `PostgresFrontier.claim_articles`): the
holder's own HostLimiter then enforces per-host connections, delay, Crawl-delay and
Retry-After exactly as on one machine. A host is given back once its holder has had no
work on it for a moment, with the time its next request may start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from ingestor.config.values import redact_url
from ingestor.core.journal import writer_name
from ingestor.errors import StateError
from ingestor.store.postgres_schema import migrate
from ingestor.store.traffic import CURRENT_CALL, StoreTraffic

log = logging.getLogger(__name__)
T = TypeVar("T")

# A host with no work left is kept this long (it is often wanted again at once).
HOST_LINGER = 2.0
# An instance whose heartbeat has been silent this many lease_ttls is presumed dead: its
# leases lapsed long ago, and a live instance publishes what it committed (its records
# staged but not renamed, its journal lines not yet appended).
LOST_AFTER_TTLS = 3.0


def _counting_cursor(owner: PostgresConnection) -> type[psycopg.AsyncCursor[Any]]:
    """A cursor class that counts what it sends (executemany is pipelined: one)."""

    class CountingCursor(psycopg.AsyncCursor[Any]):
        async def execute(self, *args: Any, **kwargs: Any) -> Any:
            owner.traffic.count(1)
            return await super().execute(*args, **kwargs)

        async def executemany(self, *args: Any, **kwargs: Any) -> None:
            owner.traffic.count(1)
            await super().executemany(*args, **kwargs)

    return CountingCursor


class PostgresConnection:
    shared = True

    def __init__(
        self,
        url: str,
        *,
        instance_id: str,
        lease_ttl: float = 60.0,
        read_only: bool = False,
        pool_size: int = 4,
        journal_writer: str = "",
        traffic: StoreTraffic | None = None,
    ) -> None:
        self.url = url
        self.journal_writer = journal_writer or writer_name(instance_id)
        self.state_id = ""  # the fleet's state identity (ingestor_meta), read at open
        self.where = redact_url(url)
        self.instance_id = instance_id
        self.lease_ttl = lease_ttl
        self.read_only = read_only
        self.traffic = traffic or StoreTraffic()
        self._settle_lock = asyncio.Lock()
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True, "cursor_factory": _counting_cursor(self)},
            name=f"ingestor-state-{instance_id}",
        )
        self._held_items: dict[int, str] = {}  # item id -> its host
        self._feed_hosts: dict[str, str] = {}  # feed id -> the host leased for its poll
        self._host_work: Counter[str] = Counter()
        self._host_idle_since: dict[str, float] = {}
        self._host_ready_at: Callable[[str], float] = lambda host: 0.0
        self._heartbeat: asyncio.Task[None] | None = None

    # --- lifecycle ---

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=15.0)
        except psycopg.Error as exc:
            raise StateError(f"state database {self.where}: cannot connect ({exc})") from None
        except Exception as exc:  # psycopg_pool.PoolTimeout carries the libpq message
            raise StateError(f"state database {self.where}: cannot connect ({exc})") from None
        if self.read_only:
            return
        try:
            async with self._pool.connection() as conn:
                await migrate(conn, self.where)
                cursor = await conn.execute(
                    "SELECT value FROM ingestor_meta WHERE key = 'state_id'"
                )
                row = await cursor.fetchone()
                self.state_id = str(row[0]) if row else ""
                now = time.time()
                await conn.execute(
                    "INSERT INTO instances VALUES (%s, %s, %s) ON CONFLICT (instance_id) "
                    "DO UPDATE SET started_at = excluded.started_at, seen_at = excluded.seen_at",
                    (self.instance_id, now, now),
                )
        except psycopg.Error as exc:
            await self._pool.close()
            raise StateError(f"state database {self.where}: {exc}") from None
        self._heartbeat = asyncio.create_task(self._beat(), name="state-heartbeat")

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
            with contextlib.suppress(psycopg.Error):
                await self._give_back_all()
        await self._pool.close()

    def watch_hosts(self, ready_at: Callable[[str], float]) -> None:
        """When each host may be sent its next request (the HostLimiter's view); written
        into the host's row when the host is given back, for the next holder."""
        self._host_ready_at = ready_at

    # --- running statements ---

    async def _fetch(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(sql.encode(), params)
                return await cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:
            raise StateError(f"state database {self.where}: {exc}") from None

    async def _transaction(self, body: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        self.traffic.count(2)  # BEGIN and COMMIT
        try:
            async with self._pool.connection() as conn, conn.transaction():
                return await body(conn)
        except psycopg.Error as exc:
            raise StateError(f"state database {self.where}: {exc}") from None

    # --- what this instance holds ---

    def _took_host(self, host: str) -> None:
        self._host_work[host] += 1
        self._host_idle_since.pop(host, None)

    def _done_with_host(self, host: str) -> None:
        self._host_work[host] -= 1
        if self._host_work[host] <= 0:
            del self._host_work[host]
            self._host_idle_since[host] = time.time()

    def _idle_host(self, host: str, now: float) -> None:
        """A host leased but given no work (yet): given back after the linger."""
        if host not in self._host_work:
            self._host_idle_since.setdefault(host, now)

    def _release_feed_locally(self, feed_id: str) -> None:
        host = self._feed_hosts.pop(feed_id, None)
        if host is not None:
            self._done_with_host(host)

    def _release_item_locally(self, item_id: int) -> None:
        host = self._held_items.pop(item_id, None)
        if host is not None:
            self._done_with_host(host)

    async def _beat(self) -> None:
        CURRENT_CALL.set("heartbeat")  # this task's own context: its statements count here
        renew_every = max(self.lease_ttl / 3.0, 0.2)
        tick = min(renew_every, 0.5)
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                await self._give_back(self._idle_hosts(time.time()))
                if time.monotonic() - last_renewal >= renew_every:
                    last_renewal = time.monotonic()
                    await self._renew()
            except StateError as exc:
                log.warning("lease heartbeat failed (%s); retrying", exc)

    def _idle_hosts(self, now: float) -> list[str]:
        return [h for h, since in self._host_idle_since.items() if now - since >= HOST_LINGER]

    async def _renew(self) -> None:
        now = time.time()
        until = now + self.lease_ttl
        hosts = list(self._host_work) + list(self._host_idle_since)
        await self._fetch(
            "WITH f AS (UPDATE feeds SET lease_until = %(until)s "
            "  WHERE feed_id = ANY(%(feeds)s) AND owner = %(me)s RETURNING 1), "
            "i AS (UPDATE frontier SET lease_until = %(until)s "
            "  WHERE item_id = ANY(%(items)s) AND owner = %(me)s RETURNING 1), "
            "h AS (UPDATE hosts SET lease_until = %(until)s "
            "  WHERE host = ANY(%(hosts)s) AND owner = %(me)s RETURNING 1) "
            "UPDATE instances SET seen_at = %(now)s WHERE instance_id = %(me)s",
            {
                "until": until,
                "now": now,
                "me": self.instance_id,
                "feeds": list(self._feed_hosts),
                "items": list(self._held_items),
                "hosts": hosts,
            },
        )

    async def _give_back(self, hosts: Iterable[str]) -> None:
        rows = [(h, max(self._host_ready_at(h), 0.0)) for h in hosts]
        if not rows:
            return
        for host, _ in rows:
            self._host_idle_since.pop(host, None)
        await self._fetch(
            "UPDATE hosts h SET owner = NULL, lease_until = 0, "
            "next_allowed_at = greatest(h.next_allowed_at, r.ready) "
            "FROM unnest(%s::text[], %s::float8[]) AS r(host, ready) "
            "WHERE h.host = r.host AND h.owner = %s",
            ([h for h, _ in rows], [r for _, r in rows], self.instance_id),
        )

    async def _give_back_all(self) -> None:
        """A clean stop: what this instance holds is free for the others at once."""
        await self._give_back([*self._host_work, *self._host_idle_since])
        await self._fetch(
            "WITH f AS (UPDATE feeds SET owner = NULL, lease_until = 0 WHERE owner = %(me)s "
            "RETURNING 1) UPDATE frontier SET owner = NULL, lease_until = 0 "
            "WHERE owner = %(me)s",
            {"me": self.instance_id},
        )
        self._feed_hosts.clear()
        self._held_items.clear()
