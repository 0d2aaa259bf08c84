"""The change journal: segment files, publication order, reconciliation after a crash at
each step of an article's commit, retention, and `ingestor tail`."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ingestor.core.journal import (
    JournalEntry,
    parse_line,
    parse_segment_name,
    segment_file_name,
    staged_verdict,
    upkeep_interval,
    writer_name,
)
from ingestor.core.settle_steps import settle_steps
from ingestor.core.state import (
    ArticleCommit,
    ArticleLookup,
    CommitItem,
    FeedState,
    PollCommit,
    Settlement,
)
from ingestor.errors import SinkError
from ingestor.pipeline.journal_upkeep import apply_retention, reconcile_journal
from ingestor.service.tail import TailOptions, tail
from ingestor.sink.files import FileSink
from ingestor.sink.journal_files import JournalWriter
from ingestor.store.sqlite import SQLiteStateStore
from tests.conftest import make_config
from tests.journal_checks import check_journal, journal_lines, record_files
from tests.test_store_contract import _items

NOW = 1_700_000_000.0


def _rid(n: int) -> str:
    return hashlib.sha256(f"r{n}".encode()).hexdigest()[:24]


def _entry(seq: int, op: str = "create", n: int = 0, at: float = NOW) -> JournalEntry:
    rid = _rid(n)
    return JournalEntry(seq, op, rid, f"2023/11/14/{rid}.json", f"sha256:{n}", at)  # type: ignore[arg-type]


def test_segment_names_are_told_apart_and_never_match_the_record_glob():
    closed = segment_file_name(101, "", is_open=False)
    opened = segment_file_name(101, "host-a", is_open=True)
    assert (closed, opened) == ("0000000000000101.jsonl", "0000000000000101.host-a.jsonl.open")
    named = parse_segment_name(opened)
    assert named == replace(parse_segment_name(closed), writer="host-a", is_open=True)
    assert parse_segment_name("0000000000000101.json") is None
    assert not Path(closed).match("*.json") and not Path(opened).match("*.json")
    assert writer_name("db-1.example:4242") == "db-1-example-4242"


def test_a_line_round_trips_and_validates():
    entry = _entry(7, "update", 3, NOW + 0.123)
    line = entry.to_line()
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert json.loads(line)["at"] == "2023-11-14T22:13:20.123Z"
    assert parse_line(line) == replace(entry, at=round(NOW + 0.123, 3))
    with pytest.raises(ValueError, match="unknown op"):
        parse_line(b'{"seq":1,"op":"rename","id":"x","path":"p","at":"2023-11-14T22:13:20.000Z"}')


def test_staged_files_are_published_only_when_the_state_committed_that_version():
    committed = _entry(5, "update", 1)
    assert staged_verdict("sha256:1", committed, None) == "publish"
    assert staged_verdict("sha256:1", committed, "sha256:0") == "publish"  # the older version
    assert staged_verdict("sha256:1", committed, "sha256:1") == "discard"  # in place already
    assert staged_verdict("sha256:2", committed, None) == "discard"  # never committed
    assert staged_verdict("sha256:1", None, None) == "discard"
    assert staged_verdict("sha256:1", replace(committed, op="delete"), None) == "discard"


def test_upkeep_runs_often_enough_for_retention_and_segment_age():
    assert upkeep_interval(None, 86400) == 600
    assert upkeep_interval(90 * 86400, 86400) == 600
    assert upkeep_interval(20.0, 86400) == 1.0
    assert upkeep_interval(None, 8.0) == 2.0


def test_segments_rotate_by_size_and_age_and_a_crash_leaves_no_half_line(tmp_path):
    line_size = len(_entry(1, n=1).to_line())
    writer = JournalWriter(tmp_path, max_bytes=3 * line_size, max_age=100)
    assert writer.recover() == 0
    for seq in range(1, 7):
        writer.append([_entry(seq, n=seq)], now=NOW)
    names = sorted(p.name for p in (tmp_path / "journal").iterdir())
    # ~230-byte lines, closed at 600 bytes: 3 per segment; the last still open.
    assert names == ["0000000000000001.jsonl", "0000000000000004.jsonl.open"]
    writer.append([_entry(7, n=7)], now=NOW + 101)  # the open one is old now
    names = sorted(p.name for p in (tmp_path / "journal").iterdir())
    assert names[-2:] == ["0000000000000004.jsonl", "0000000000000007.jsonl.open"]
    closed = (tmp_path / "journal" / "0000000000000001.jsonl").read_bytes()
    writer.append([_entry(3, n=3)])  # already there: not written twice
    # A crash in the middle of a line: the next start cuts it and goes on in that segment.
    with open(tmp_path / "journal" / "0000000000000007.jsonl.open", "ab") as handle:
        handle.write(_entry(8, n=8).to_line()[:40])
    again = JournalWriter(tmp_path, max_bytes=3 * line_size)
    assert again.recover() == 7
    again.append([_entry(8, n=8)], now=NOW + 102)
    assert (tmp_path / "journal" / "0000000000000001.jsonl").read_bytes() == closed
    names = sorted(p.name for p in (tmp_path / "journal").iterdir())
    assert names[-1] == "0000000000000007.jsonl.open"
    assert [line["seq"] for line in journal_lines(tmp_path)] == list(range(1, 9))


# --- a real SQLite store and file sink, crashed at each step ---


async def _settle(store, sink, item, n: int, version: int = 0, op: str = "create"):
    rid = _rid(n)
    content_hash = f"sha256:{n}.{version}"
    body = json.dumps({"id": rid, "content_hash": content_hash, "text": f"v{version}"}).encode()

    def decide(prep):
        key = item.entry.key
        record = CommitItem(
            rid, f"http://h/a/{n}", content_hash, "f", key, "s", None, [], NOW, op=op
        )
        commit = ArticleCommit(item.item_id, "f", item.entry.key, NOW, record=record)
        return Settlement(commit, "written", output=(body + b"\n", prep.location))

    lookup = ArticleLookup(rid, f"http://h/a/{n}", f"2023/11/14/{rid}.json", NOW)
    return await store.settle_article(settle_steps(lookup, decide), sink)


@pytest.fixture
async def setup(tmp_path):
    out = tmp_path / "out"
    store = SQLiteStateStore(tmp_path / "state.db")
    await store.open()
    sink = FileSink(out, journal=JournalWriter(out))
    sink.prepare()
    await reconcile_journal(store, sink)
    await store.commit_poll(PollCommit(FeedState(feed_id="f"), _items("f", 6)))
    items = (await store.claim_articles([("h:80", 6)], NOW, NOW + 60)).items
    yield store, sink, items, out
    await store.close()


async def _restart(store, out) -> FileSink:
    """What the next start does: a new sink over the same directory, reconciled."""
    sink = FileSink(out, journal=JournalWriter(out))
    sink.prepare()
    await reconcile_journal(store, sink)
    return sink


async def test_each_crash_point_of_a_commit_is_reconciled_at_start(setup, monkeypatch):
    store, sink, items, out = setup
    await _settle(store, sink, items[0], 0)
    await _settle(store, sink, items[1], 1)
    assert [line["op"] for line in check_journal(out)] == ["create", "create"]

    # 1. Killed after the commit, before the rename: the state knows it, the tree does not.
    monkeypatch.setattr(sink, "publish", lambda: sink.abandon())
    await _settle(store, sink, items[2], 2)
    # 2. Killed before the commit: a staged file the state never committed.
    sink.put(b'{"id": "%s", "content_hash": "sha256:x"}\n' % _rid(3).encode(), "2023/11/14/x.json")
    monkeypatch.undo()
    # 3. Killed after the rename, before the journal line.
    journal, sink.journal = sink.journal, None
    await _settle(store, sink, items[4], 4)
    sink.journal = journal
    staged = sorted(p.name for p in (out / ".staging").iterdir())
    assert len(staged) == 2 and _rid(4) not in "".join(staged)
    assert sorted(record_files(out)) == sorted(f"2023/11/14/{_rid(n)}.json" for n in (0, 1, 4))
    with pytest.raises(AssertionError):
        check_journal(out)  # the half-done state a kill -9 leaves, before the next start

    sink = await _restart(store, out)
    lines = check_journal(out)
    assert [(line["seq"], line["id"]) for line in lines] == [
        (1, _rid(0)),
        (2, _rid(1)),
        (3, _rid(2)),
        (4, _rid(4)),
    ]
    assert list((out / ".staging").iterdir()) == []
    assert await store.record_by_canonical("http://h/a/3") is None
    # An update's line follows its rename, and later work goes on from seq 5.
    await _settle(store, sink, items[3], 0, version=1, op="update")
    lines = check_journal(out)
    assert (lines[-1]["seq"], lines[-1]["op"], lines[-1]["id"]) == (5, "update", _rid(0))
    assert json.loads((out / lines[-1]["path"]).read_bytes())["text"] == "v1"


async def test_retention_deletes_old_records_with_delete_lines_and_keeps_dedup(setup, monkeypatch):
    store, sink, items, out = setup
    for n in range(3):
        await _settle(store, sink, items[n], n)
    # Killed after the retention commit, before the files went: the next start removes them.
    monkeypatch.setattr(sink, "publish", lambda: sink.abandon())
    assert await store.expire_records(NOW + 1, NOW + 100, 2, sink) == 2
    monkeypatch.undo()
    assert len(record_files(out)) == 3
    sink = await _restart(store, out)
    lines = check_journal(out)
    assert [line["op"] for line in lines] == ["create"] * 3 + ["delete"] * 2
    assert sorted(record_files(out)) == [f"2023/11/14/{_rid(2)}.json"]
    # Through the upkeep function, with the journal's old segments.
    assert await apply_retention(store, sink, 10.0, NOW + 100) == 1
    lines = check_journal(out)
    assert [line["op"] for line in lines][-1] == "delete" and record_files(out) == {}
    # The deleted records' identity stays: the same URL is not written again.
    known = await store.record_by_canonical(f"http://h/a/{0}")
    assert known is not None and known.done and known.deleted


async def test_a_failed_publish_is_retried_before_later_lines(setup, monkeypatch):
    store, sink, items, out = setup
    real_replace = os.replace
    failing = {"on": True}

    def flaky(src, dst):
        if failing["on"] and str(dst).endswith(".json"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    await _settle(store, sink, items[0], 0)
    assert record_files(out) == {} and journal_lines(out) == [] and sink.publish_errors == 1
    failing["on"] = False
    await _settle(store, sink, items[1], 1)
    assert [line["id"] for line in check_journal(out)] == [_rid(0), _rid(1)]


# --- ingestor tail ---


def _config(tmp_path: Path):
    return make_config(tmp_path, ["http://127.0.0.1:9/feed.xml"])


async def test_tail_reads_in_order_resumes_from_a_cursor_and_says_when_empty(tmp_path):
    config = _config(tmp_path)
    out = config.output.dir
    err = io.StringIO()
    buffer = io.BytesIO()
    assert await tail(config, TailOptions(), buffer, err) == 0
    assert buffer.getvalue() == b"" and "does not exist" in err.getvalue()
    writer = JournalWriter(out, max_bytes=500)
    writer.recover()
    err = io.StringIO()
    assert await tail(config, TailOptions(), buffer, err) == 0
    assert "is empty" in err.getvalue()
    for seq in range(1, 6):
        writer.append([_entry(seq, n=seq)])
    (out / _entry(1, n=1).path).parent.mkdir(parents=True)
    (out / _entry(1, n=1).path).write_text('{"id": "x", "title": "one"}')
    buffer = io.BytesIO()
    cursor = tmp_path / "cursor"
    await tail(config, TailOptions(since=0, cursor=cursor), buffer)
    printed = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [p["seq"] for p in printed] == [1, 2, 3, 4, 5]
    assert printed[0]["record"] == {"id": "x", "title": "one"}
    assert printed[1]["record"] is None  # its file is gone (or never was, here)
    assert cursor.read_text() == "5\n"
    writer.append([_entry(6, n=6)])
    buffer = io.BytesIO()
    await tail(config, TailOptions(since=0, cursor=cursor, paths_only=True), buffer)
    assert [json.loads(line) for line in buffer.getvalue().splitlines()] == [
        _entry(6, n=6).to_dict()
    ]
    buffer = io.BytesIO()
    await tail(config, TailOptions(since=4, paths_only=True), buffer)
    assert [json.loads(line)["seq"] for line in buffer.getvalue().splitlines()] == [5, 6]
    cursor.write_text("five\n")
    with pytest.raises(Exception, match="is not a journal seq"):
        await tail(config, TailOptions(cursor=cursor), io.BytesIO())


async def test_tail_follow_sees_new_lines_across_rotation_and_stops_on_sigint(tmp_path):
    config = _config(tmp_path)
    (tmp_path / "ingestor.yaml").write_text(
        f"output:\n  dir: {config.output.dir}\nstate:\n  path: {tmp_path}/state.db\n"
        "feeds:\n  - url: http://127.0.0.1:9/feed.xml\n"
    )
    writer = JournalWriter(config.output.dir, max_bytes=500)
    writer.recover()
    writer.append([_entry(1, n=1)])
    cursor = tmp_path / "cursor"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingestor", "tail", "--config", str(tmp_path / "ingestor.yaml"),
        "--follow", "--paths", "--cursor", str(cursor),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    seen = [json.loads(await asyncio.wait_for(process.stdout.readline(), 20))["seq"]]
    for seq in range(2, 8):  # several segments: the writer closes them at 500 bytes
        writer.append([_entry(seq, n=seq)])
        seen.append(json.loads(await asyncio.wait_for(process.stdout.readline(), 20))["seq"])
    assert seen == list(range(1, 8))
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 20) == 0
    assert cursor.read_text() == "7\n"


async def test_tail_exits_quietly_when_its_reader_goes_away(tmp_path):
    config = _config(tmp_path)
    (tmp_path / "ingestor.yaml").write_text(
        f"output:\n  dir: {config.output.dir}\nstate:\n  path: {tmp_path}/state.db\n"
        "feeds:\n  - url: http://127.0.0.1:9/feed.xml\n"
    )
    writer = JournalWriter(config.output.dir)
    writer.recover()
    writer.append([_entry(seq, n=seq) for seq in range(1, 3001)])
    command = (
        f"{sys.executable} -m ingestor tail --config {tmp_path}/ingestor.yaml --paths --follow"
        " | head -n 2"
    )
    process = await asyncio.create_subprocess_shell(
        command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert len(stdout.splitlines()) == 2
    assert b"Traceback" not in stderr and b"Broken pipe" not in stderr, stderr


async def test_a_failed_journal_append_keeps_its_lines_first(setup, monkeypatch):
    store, sink, items, out = setup
    real_append = sink.journal.append
    calls = {"n": 0}

    def append_failing_once(entries, now=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise SinkError("cannot append to journal j: No space left on device")
        return real_append(entries, now)

    monkeypatch.setattr(sink.journal, "append", append_failing_once)
    await _settle(store, sink, items[0], 0)
    assert journal_lines(out) == [] and len(record_files(out)) == 1
    await _settle(store, sink, items[1], 1)
    assert [line["seq"] for line in check_journal(out)] == [1, 2]


def test_a_failed_append_leaves_no_half_line(tmp_path, monkeypatch):
    writer = JournalWriter(tmp_path)
    writer.recover()
    writer.append([_entry(1, n=1)])
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(SinkError, match="No space left"):
        writer.append([_entry(2, n=2)])
    monkeypatch.undo()
    writer.append([_entry(2, n=2)])
    assert [line["seq"] for line in journal_lines(tmp_path)] == [1, 2]


async def test_tail_says_when_retention_removed_lines_it_waited_for(tmp_path):
    config = _config(tmp_path)
    writer = JournalWriter(config.output.dir)
    writer.recover()
    writer.append([_entry(seq, n=seq) for seq in range(5, 8)])  # 1-4 went with retention
    printed, err = io.BytesIO(), io.StringIO()
    assert await tail(config, TailOptions(since=2, paths_only=True), printed, err) == 0
    assert [json.loads(line)["seq"] for line in printed.getvalue().splitlines()] == [5, 6, 7]
    assert "journal lines 3-4 were removed by retention: going on from 5" in err.getvalue()
