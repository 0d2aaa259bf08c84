"""The change journal of a PostgreSQL fleet: one gap-free order from the database, each
instance's lines in its own segments, `ingestor tail` reading the order from the database,
and an instance's restart finishing what it left. A real server (tests/pgcluster.py)."""

from __future__ import annotations

import asyncio
import io
import json

from ingestor.config.model import StateConfig
from ingestor.core.state import FeedState, PollCommit
from ingestor.pipeline.journal_upkeep import reconcile_journal
from ingestor.service.tail import TailOptions, tail
from ingestor.sink.files import FileSink
from ingestor.sink.journal_files import JournalWriter
from ingestor.store.postgres import PostgresStateStore
from tests.conftest import make_config
from tests.journal_checks import check_journal, journal_lines, record_files
from tests.test_journal import NOW, _rid, _settle
from tests.test_store_contract import _items


async def _instance(
    pg_url: str, name: str, out, lease_ttl: float = 60.0
) -> tuple[PostgresStateStore, FileSink]:
    store = PostgresStateStore(pg_url, instance_id=name, lease_ttl=lease_ttl)
    await store.open()
    sink = FileSink(
        out, journal=JournalWriter(out, store.journal_writer), writer=store.journal_writer
    )
    sink.prepare()
    await reconcile_journal(store, sink)
    return store, sink


async def test_a_fleet_shares_one_order_and_each_instance_writes_its_own_segments(
    tmp_path, pg_url, monkeypatch
):
    out = tmp_path / "out"
    a, sink_a = await _instance(pg_url, "db-1.a", out)
    b, sink_b = await _instance(pg_url, "db-2.b", out)
    try:
        await a.commit_poll(PollCommit(FeedState(feed_id="f"), _items("f", 8, "h1:80", NOW)))
        await b.commit_poll(PollCommit(FeedState(feed_id="g"), _items("g", 8, "h2:80", NOW)))
        mine = (await a.claim_articles([("h1:80", 8)], NOW, NOW + 600)).items
        theirs = (await b.claim_articles([("h2:80", 8)], NOW, NOW + 600)).items
        assert len(mine) == len(theirs) == 8
        await asyncio.gather(
            *(_settle(a, sink_a, item, n) for n, item in enumerate(mine[:6])),
            *(_settle(b, sink_b, item, 100 + n) for n, item in enumerate(theirs[:6])),
        )
        lines = check_journal(out)
        assert [line["seq"] for line in lines] == list(range(1, 13))
        # Each instance's segments hold its own lines only, in order.
        own_a = [line["id"] for line in journal_lines(out, "db-1-a")]
        own_b = [line["id"] for line in journal_lines(out, "db-2-b")]
        assert sorted(own_a) == sorted(_rid(n) for n in range(6))
        assert sorted(own_b) == sorted(_rid(100 + n) for n in range(6))

        # A dies between its commit and the rename; its restart finishes the work, and
        # leaves alone what B has staged and not yet committed.
        monkeypatch.setattr(sink_a, "publish", lambda: sink_a.abandon())
        await _settle(a, sink_a, mine[6], 6)
        monkeypatch.undo()
        pending = sink_b.put(b'{"id": "x", "content_hash": "sha256:x"}\n', "2023/11/14/x.json")
        await _settle(b, sink_b, theirs[6], 106)
        assert len(record_files(out)) == 13
        await a.close()
        a, sink_a = await _instance(pg_url, "db-1.a", out)
        lines = check_journal(out)
        assert [line["seq"] for line in lines] == list(range(1, 15))
        assert len(record_files(out)) == 14
        assert (out / ".staging" / pending.staging_name).exists()

        # `ingestor tail` reads the fleet's order from the database.
        config = make_config(tmp_path, ["http://127.0.0.1:9/f"], state=StateConfig(url=pg_url))
        printed = io.BytesIO()
        assert await tail(config, TailOptions(since=3, paths_only=True), printed) == 0
        seqs = [json.loads(line)["seq"] for line in printed.getvalue().splitlines()]
        assert seqs == list(range(4, 15))
        printed = io.BytesIO()
        await tail(config, TailOptions(since=13), printed)
        (last,) = [json.loads(line) for line in printed.getvalue().splitlines()]
        assert last["record"]["id"] == last["id"] == _rid(106)
    finally:
        await a.close()
        await b.close()


async def test_a_dead_instances_committed_records_are_published_by_a_live_one(
    tmp_path, pg_url, monkeypatch
):
    """A committed its record and died before the rename, and never comes back: once it
    has been silent for a few lease_ttls, B publishes the record and appends its line to
    A's segments; B's own staged work is left alone."""
    from ingestor.pipeline.journal_upkeep import take_over_lost_instances
    from tests.test_fleet_store import crash

    out = tmp_path / "out"
    a, sink_a = await _instance(pg_url, "db-1.a", out, lease_ttl=0.3)
    b, sink_b = await _instance(pg_url, "db-2.b", out, lease_ttl=0.3)
    try:
        await a.commit_poll(PollCommit(FeedState(feed_id="f"), _items("f", 2, "h1:80", NOW)))
        mine = (await a.claim_articles([("h1:80", 2)], NOW, NOW + 600)).items
        await _settle(a, sink_a, mine[0], 0)
        monkeypatch.setattr(sink_a, "publish", lambda: sink_a.abandon())
        await _settle(a, sink_a, mine[1], 1)
        monkeypatch.undo()
        await crash(a)
        assert len(record_files(out)) == 1
        pending = sink_b.put(b'{"id": "x", "content_hash": "sha256:x"}\n', "2023/11/14/x.json")
        # Nothing is taken over while A may still be alive; then, bounded, until it is.
        taken: list[str] = []
        for _ in range(100):
            taken = await take_over_lost_instances(b, sink_b)
            if taken:
                break
            await asyncio.sleep(0.1)
        assert taken == ["db-1-a"]
        assert sorted(r["id"] for r in record_files(out).values()) == sorted([_rid(0), _rid(1)])
        assert [line["seq"] for line in check_journal(out)] == [1, 2]
        assert [line["id"] for line in journal_lines(out, "db-1-a")] == [_rid(0), _rid(1)]
        assert (out / ".staging" / pending.staging_name).exists()
        # Once settled, A is forgotten: nothing is taken over twice.
        assert await take_over_lost_instances(b, sink_b) == []
        # A's restart finds its work done and writes nothing twice.
        a2 = PostgresStateStore(pg_url, instance_id="db-1.a")
        await a2.open()
        sink_a2 = FileSink(
            out, journal=JournalWriter(out, a2.journal_writer), writer=a2.journal_writer
        )
        report = await reconcile_journal(a2, sink_a2)
        await a2.close()
        assert (report.staged_published, report.lines_appended) == (0, 0)
        assert [line["seq"] for line in check_journal(out)] == [1, 2]
    finally:
        await b.close()
