from __future__ import annotations

import sqlite3

import pytest

from ingestor.errors import StateError
from ingestor.store.sqlite import SQLiteStateStore


async def unseen(store, feed_id, keys):
    return set(keys) - set(await store.entry_versions(feed_id, keys))


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStateStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


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
