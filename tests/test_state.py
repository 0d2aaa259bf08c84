from __future__ import annotations

import sqlite3

import pytest

from ingestor.core.state import CommitItem, DedupQuery, FeedState
from ingestor.errors import StateError
from ingestor.store.sqlite import SQLiteStateStore


async def unseen(store, feed_id, keys):
    return set(keys) - set(await store.entry_updated_times(feed_id, keys))


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStateStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


async def test_feed_state_round_trips_across_restarts(tmp_path):
    path = tmp_path / "state.db"
    first = SQLiteStateStore(path)
    await first.open()
    state = FeedState(
        feed_id="https://e.com/feed",
        etag='"x"',
        skip_hours=(1, 2),
        next_due=123.5,
        effective_url="https://e.com/new",
    )
    await first.save_feed(state)
    await first.close()
    second = SQLiteStateStore(path)
    await second.open()
    assert (await second.load_feeds())["https://e.com/feed"] == state
    await second.close()


async def test_seen_entries_and_record_lifecycle(store):
    assert await unseen(store, "f", ["a", "b"]) == {"a", "b"}
    await store.mark_entries_seen("f", ["a"], 1.0)
    assert await unseen(store, "f", ["a", "b"]) == {"b"}
    assert await unseen(store, "other-feed", ["a"]) == {"a"}

    location = await store.reserve_record("r1", "https://e.com/1", "2024/01/01/r1.json", 1.0)
    # A redo on another day keeps the first reservation (same file, no duplicate).
    assert await store.reserve_record("r1", "https://e.com/1", "2024/01/02/r1.json", 2.0) == (
        location
    )
    ref = await store.record_by_canonical("https://e.com/1")
    assert ref is not None and not ref.done
    await store.commit_record(
        CommitItem(
            "r1",
            "https://e.com/1",
            "sha256:h",
            "f",
            "b",
            "s1",
            b"\x01\x00\x00\x00" * 4,
            [11, 22],
            5.0,
        )
    )
    assert (await store.record_by_canonical("https://e.com/1")).done
    assert await store.duplicate_candidates(DedupQuery("sha256:h", "s1", [22], 0.0), "r2") == (
        "r1",
        [],
    )
    assert await store.duplicate_candidates(DedupQuery("sha256:h", "s1", [], 0.0), "r1") == (
        None,
        [],
    )
    assert await unseen(store, "f", ["b"]) == set()
    _exact, near = await store.duplicate_candidates(
        DedupQuery("sha256:x", "s1", [22, 99], 0.0), "r2"
    )
    assert [c.record_id for c in near] == ["r1"]
    assert await store.duplicate_candidates(DedupQuery("sha256:x", "other", [22], 0.0), "r2") == (
        None,
        [],
    )
    # Outside the time window:
    assert await store.duplicate_candidates(DedupQuery("sha256:x", "s1", [22], 10.0), "r2") == (
        None,
        [],
    )


async def test_prune_forgets_old_keys_and_fingerprints(store):
    await store.mark_entries_seen("f", ["old"], 1.0)
    await store.mark_entries_seen("f", ["new"], 1000.0)
    await store.reserve_record("r1", "u1", "l1", 1.0)
    await store.commit_record(CommitItem("r1", "u1", "h", "f", "k", "s", b"\0" * 8, [5], 1.0))
    removed = await store.prune(1000.0, seen_max_age=500.0, fingerprint_window=500.0)
    assert removed >= 2
    assert await unseen(store, "f", ["old", "new"]) == {"old"}
    assert await store.duplicate_candidates(DedupQuery("h2", "s", [5], 0.0), "x") == (None, [])


async def test_second_process_on_the_same_state_is_refused(tmp_path, store):
    other = SQLiteStateStore(tmp_path / "state.db")
    with pytest.raises(StateError, match="in use by another ingestor process"):
        await other.open()
    reader = SQLiteStateStore(tmp_path / "state.db", read_only=True)
    await reader.open()  # `ingestor status` beside a running daemon
    await reader.close()


async def test_corrupt_database_says_how_to_recover(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StateError, match=r"move the file .* aside"):
        await SQLiteStateStore(path).open()


async def test_schema_is_indexed_for_lsh_lookups(store):
    plan = store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT record_id FROM lsh_bands WHERE band_key IN (1, 2)"
    ).fetchall()
    assert any(
        ("USING" in str(row) and "PRIMARY KEY" in str(row).upper()) or "INDEX" in str(row).upper()
        for row in plan
    ), plan
    assert isinstance(store.conn, sqlite3.Connection)
