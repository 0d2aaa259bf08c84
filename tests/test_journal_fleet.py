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


async def _instance(pg_url: str, name: str, out) -> tuple[PostgresStateStore, FileSink]:
    store = PostgresStateStore(pg_url, instance_id=name)
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
