"""Several instances on one PostgreSQL: leases on feed polls, frontier items and hosts, and
the database (not a process) deciding races. A real server (see tests/pgcluster.py)."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from ingestor.core.state import ArticleLookup, DedupQuery, FeedState, ItemRetry, PollCommit
from ingestor.store.postgres import PostgresStateStore
from tests.test_store_contract import _items


@pytest.fixture
async def fleet(pg_url):
    stores: list[PostgresStateStore] = []

    async def make(name: str, lease_ttl: float = 30.0) -> PostgresStateStore:
        store = PostgresStateStore(pg_url, instance_id=name, lease_ttl=lease_ttl)
        await store.open()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


async def crash(store: PostgresStateStore) -> None:
    """What kill -9 leaves: no heartbeat, no clean give-back, connections gone."""
    assert store._heartbeat is not None
    store._heartbeat.cancel()
    store._heartbeat = None
    await store._pool.close()


async def test_a_feed_poll_is_claimed_by_one_instance_at_a_time(fleet):
    a, b = await fleet("a"), await fleet("b")
    now = time.time()
    first = await a.claim_feeds([("f", "h:80")], now)
    assert list(first.claimed) == ["f"]
    busy = await b.claim_feeds([("f", "h:80")], now, force=True)
    assert not busy.claimed and "instance a" in busy.busy["f"][1]
    # A's commit gives the feed back; it is not due again, but run --once may poll it.
    await a.commit_poll(PollCommit(FeedState(feed_id="f", etag='"1"', next_due=now + 600)))
    later = await b.claim_feeds([("f", "h:80")], time.time())
    assert not later.claimed and later.busy["f"][0] == now + 600
    # The host stays with A for a moment after its work ends, so B waits for it.
    forced = await b.claim_feeds([("f", "h:80")], time.time(), force=True)
    assert not forced.claimed and "leased by another instance" in forced.busy["f"][1]
    await a._give_back(["h:80"])
    forced = await b.claim_feeds([("f", "h:80")], time.time(), force=True)
    assert forced.claimed["f"].etag == '"1"'
    polls = await b.feed_polls()
    assert polls["f"][0] == "a" and polls["f"][2] == "b"


async def test_a_dead_instances_leases_lapse_and_its_work_is_taken_over(fleet):
    a, b = await fleet("a", lease_ttl=1.0), await fleet("b", lease_ttl=1.0)
    now = time.time()
    await a.commit_poll(PollCommit(FeedState(feed_id="f"), _items("f", 3, "h:80", now)))
    claim = await a.claim_articles([("h:80", 2)], now, now + 1.0)
    assert len(claim.items) == 2
    # The host is A's: B gets nothing from it, and does not even see it as waiting work.
    assert (await b.claim_articles([("h:80", 5)], now, now + 1.0)).items == []
    assert "h:80" not in await b.frontier_hosts(now)
    # A's heartbeat keeps its leases past lease_ttl while it lives...
    await asyncio.sleep(1.6)
    assert (await b.claim_articles([("h:80", 5)], time.time(), time.time() + 1)).items == []
    # ...and once it is gone, they lapse and B takes all three items.
    await crash(a)
    await asyncio.sleep(1.2)
    assert "h:80" in await b.frontier_hosts(time.time())
    taken = await b.claim_articles([("h:80", 5)], time.time(), time.time() + 1)
    assert sorted(i.entry.key for i in taken.items) == ["k0", "k1", "k2"]


async def test_racing_instances_on_one_url_share_one_reservation(fleet):
    a, b = await fleet("a"), await fleet("b")
    now = time.time()
    lookups = [
        ArticleLookup("rid", "https://e.com/x", f"out/{name}.json", now) for name in ("a", "b")
    ]
    preps = await asyncio.gather(a.prepare_article(lookups[0]), b.prepare_article(lookups[1]))
    assert preps[0].location == preps[1].location
    assert sorted(p.existing is None for p in preps) == [False, True]


@pytest.mark.parametrize("kind", ["exact", "near"])
async def test_racing_duplicates_get_exactly_one_original(fleet, kind):
    a, b = await fleet("a"), await fleet("b")
    now = time.time()
    signature = b"\x07" * 64
    for attempt in range(5):

        def lookup(name: str, attempt: int = attempt) -> ArticleLookup:
            body = "same" if kind == "exact" else name
            query = DedupQuery(
                f"{attempt}:{body}", "s", [attempt * 10 + 1, attempt * 10 + 2], 0.0, signature
            )
            return ArticleLookup(f"{attempt}{name}", f"https://{name}/{attempt}", "l", now, query)

        first, second = await asyncio.gather(
            a.prepare_article(lookup("a")), b.prepare_article(lookup("b"))
        )
        if kind == "exact":
            assert sorted(p.exact is None for p in (first, second)) == [False, True]
        else:
            # One of the two saw the other's claim; the other saw nothing yet.
            seen = [[c.record_id for c in p.candidates] for p in (first, second)]
            assert sorted(seen) == [[], [f"{attempt}a" if seen[1] else f"{attempt}b"]]


async def test_a_second_start_against_the_same_database_keeps_the_schema(pg_url):
    store = PostgresStateStore(pg_url, instance_id="x")
    await store.open()
    await store.save_feed(FeedState(feed_id="f", etag='"e"'))
    await store.close()
    again = PostgresStateStore(pg_url, instance_id="y")
    await again.open()
    assert (await again.load_feeds())["f"].etag == '"e"'
    await again.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM ingestor_schema").fetchall() == [
            (1,),
            (2,),
            (3,),
            (4,),
            (5,),
        ]


async def test_the_shared_schedule_gives_each_due_feed_to_one_instance(fleet):
    a, b = await fleet("a"), await fleet("b")
    now = time.time()
    await a.register_feeds([(f"f{n}", f"h{n % 2}:80", now - 10 + n) for n in range(4)])
    await a.register_feeds([("f0", "h0:80", now + 999)])  # known already: left as it is
    mine = await a.claim_due_feeds(now, 1)
    assert list(mine) == ["f0"]
    # B gets neither A's feed nor any feed on A's host h0 (f2), only h1's.
    theirs = await b.claim_due_feeds(now, 10)
    assert sorted(theirs) == ["f1", "f3"]
    # A's poll ends without a commit (say, skipped): due again when it said.
    await a.release_feeds(["f0"], now + 300)
    await a._give_back(["h0:80"])
    # (B's own f1 and f3 are being polled by B: not handed out again, to B either.)
    assert list(await b.claim_due_feeds(time.time(), 10)) == ["f2"]


async def test_a_host_handed_over_keeps_the_pause_its_last_holder_was_told(fleet):
    # A 429 with Retry-After reaches only the instance that made the request; when it gives
    # the host back, the next holder must wait out the same pause, for articles and feeds.
    a, b = await fleet("a"), await fleet("b")
    now = time.time()
    polled = FeedState(feed_id="f", next_due=now + 600)
    await a.commit_poll(PollCommit(polled, _items("f", 2, "h:80", now)))
    await a.register_feeds([("g", "h:80", now - 1)])  # a feed on that host, due now
    claim = await a.claim_articles([("h:80", 1)], now, now + 30)
    assert len(claim.items) == 1
    pause_until = now + 120
    a.watch_hosts(lambda host: pause_until if host == "h:80" else 0.0)
    await a.reschedule_article(ItemRetry(claim.items[0].item_id, now, 0, "HTTP 429"))
    await a._give_back(["h:80"])
    later = time.time()
    assert await b.frontier_hosts(later) == {"h:80": pause_until}
    taken = await b.claim_articles([("h:80", 5)], later, later + 30)
    assert taken.items == [] and taken.host_next == {"h:80": pause_until}
    assert await b.claim_due_feeds(later, 10) == {}


async def test_committed_items_are_released_and_their_host_handed_back(fleet):
    """A live instance that finished its items gives their host back: another instance
    then works the host's remaining items (the release used to be unreachable: every
    committed item stayed held, renewed by the heartbeat, its host never handed back)."""
    from ingestor.core.state import ArticleCommit

    a, b = await fleet("a", lease_ttl=1.0), await fleet("b", lease_ttl=1.0)
    now = time.time()
    await a.commit_poll(PollCommit(FeedState(feed_id="f"), _items("f", 3, "h:80", now)))
    claim = await a.claim_articles([("h:80", 2)], now, now + 1.0)
    assert len(claim.items) == 2
    for item in claim.items:
        await a.commit_article(ArticleCommit(item.item_id, "f", item.entry.key, time.time()))
    assert a._held_items == {}
    # B gets the third item once A's heartbeat has handed the idle host back (its linger
    # is 2 s): A lives on, so only the release can let B in. Bounded: 15 s at most.
    taken = []
    for _ in range(150):
        taken = (await b.claim_articles([("h:80", 5)], time.time(), time.time() + 1)).items
        if taken:
            break
        await asyncio.sleep(0.1)
    assert [i.entry.key for i in taken] == ["k2"]


async def test_migrate_state_carries_delivery_cursors_and_retires_the_old_state(tmp_path, pg_url):
    """After the switch a webhook sink goes on from its cursor (it sent lines 1-72 again),
    and the SQLite copy is refused with a line naming the new home: used again, it would
    write the journal's seqs a second time."""
    from ingestor.errors import StateError
    from ingestor.store.migrate import migrate_state
    from ingestor.store.sqlite import SQLiteStateStore

    path = tmp_path / "state.db"
    sqlite = SQLiteStateStore(path)
    await sqlite.open()
    await sqlite.sink_position("hook", latest=False)
    assert await sqlite.advance_sink("hook", 0, 72, time.time())
    await sqlite.close()
    copied = await migrate_state(path, pg_url)
    assert copied["sinks"] == 1
    target = PostgresStateStore(pg_url, instance_id="a")
    await target.open()
    try:
        assert (await target.sink_position("hook", latest=False)).cursor == 72
    finally:
        await target.close()
    for read_only in (False, True):
        with pytest.raises(StateError) as refused:
            await SQLiteStateStore(path, read_only=read_only).open()
        message = str(refused.value)
        assert "moved by migrate-state" in message and "127.0.0.1" in message
        assert "\n" not in message
    # Moving it twice would copy the same history again: refused the same way.
    with pytest.raises(StateError, match="moved by migrate-state"):
        await migrate_state(path, pg_url, merge=True)
    # The user's word: the old copy is used again (to go back).
    again = SQLiteStateStore(path, allow_moved=True)
    await again.open()
    await again.close()
