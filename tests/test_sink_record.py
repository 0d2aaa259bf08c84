from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.core.cleaning import clean_line, clean_text
from ingestor.core.record import Record, record_schema
from ingestor.errors import SinkError
from ingestor.sink.files import FileSink


def make_record(**overrides) -> Record:
    values = dict(
        id="0123456789abcdef01234567",
        url="https://e.com/a",
        canonical_url="https://e.com/a",
        feed_url="https://e.com/feed",
        feed_name="E",
        title="Title",
        authors=["A"],
        published_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        fetched_at=datetime(2024, 1, 3, tzinfo=UTC),
        language="en",
        language_confidence=0.99,
        text="One.\n\nTwo.",
        summary=None,
        content_hash="sha256:" + "0" * 64,
        duplicate_of=None,
    )
    values.update(overrides)
    return Record(**values)


def test_record_validates_against_the_shipped_schema():
    data = json.loads(make_record().to_json())
    jsonschema.validate(data, record_schema())
    assert data["schema_version"] == 1
    assert data["published_at"] == "2024-01-02T03:04:05Z"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "language": "english"}, record_schema())


def _write(sink: FileSink, record, location: str) -> None:
    staged = sink.put(record.file_bytes(), location)
    sink.sync()
    sink.queue(staged, None)
    sink.publish()


async def test_atomic_write_layout_and_no_temp_files_left(tmp_path):
    sink = FileSink(tmp_path)
    record = make_record()
    location = sink.location_for(record.id, datetime(2024, 5, 6, tzinfo=UTC))
    assert location == f"2024/05/06/{record.id}.json"
    staged = sink.put(record.file_bytes(), location)
    assert not (tmp_path / location).exists()  # not under its name before the commit
    assert not list(tmp_path.rglob("*.json"))  # and no consumer's glob sees it
    sink.sync()
    sink.queue(staged, None)
    sink.publish()
    _write(sink, record, location)  # a redo rewrites the same file
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [location]
    assert json.loads((tmp_path / location).read_text())["id"] == record.id


def test_location_never_comes_from_feed_text(tmp_path):
    with pytest.raises(ValueError):
        FileSink(tmp_path).location_for("../../etc/passwd", datetime.now(UTC))


async def test_unwritable_output_is_a_clear_error(tmp_path):
    # A path under a regular file cannot be created, even by root.
    (tmp_path / "file").write_text("x")
    sink = FileSink(tmp_path / "file" / "out")
    with pytest.raises(SinkError, match=r"output directory .*/file/out is not writable"):
        sink.check_writable()


async def test_disk_full_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno

    sink = FileSink(tmp_path)
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(SinkError, match="disk full"):
        sink.put(make_record().file_bytes(), "2024/01/01/0123456789abcdef01234567.json")
    monkeypatch.setattr(os, "write", real_write)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_text_cleaning_removes_controls_and_bidi():
    assert clean_line("a\x00b\r\nc\u202ed") == "ab cd"
    assert clean_text("p1\r\n\r\n\r\np2\x07") == "p1\n\np2"
    assert len(clean_line("x" * 5000, 1000)) == 1000


@settings(max_examples=100, deadline=None)
@given(title=st.text(max_size=300), text=st.text(max_size=1000), url=st.text(max_size=100))
def test_any_text_gives_valid_json_without_controls(title, text, url):
    record = make_record(
        title=clean_line(title, 1000),
        text=clean_text(text),
        url=url or "x",
        summary=clean_text(text) or None,
    )
    data = json.loads(record.to_json())
    jsonschema.validate(data, record_schema())
    for field in ("title", "text"):
        assert not any(ord(c) < 32 and c != "\n" for c in data[field])
        assert "\u202e" not in data[field]


async def test_prepare_clears_what_a_crash_left_in_staging(tmp_path):
    sink = FileSink(tmp_path)
    sink.prepare()
    (tmp_path / ".staging" / ".abc.1234.tmp").write_bytes(b'{"half": ')
    (tmp_path / "2024").mkdir()
    sink.prepare()
    assert list((tmp_path / ".staging").iterdir()) == []
    assert (tmp_path / "2024").is_dir()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_files_put_together_are_fsynced_together_before_the_commit(tmp_path, monkeypatch):
    sink = FileSink(tmp_path)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    before = _open_fds()
    one = sink.put(make_record().file_bytes(), "2024/01/01/0123456789abcdef01234567.json")
    two = sink.put(make_record().file_bytes(), "2024/01/01/89abcdef012345670123456.json")
    # Written, not yet durable: no fsync inside the transaction, one per file at sync.
    assert synced == [] and _open_fds() == before + 2
    sink.sync()
    assert len(synced) == 3  # the two files, then the staging directory
    assert _open_fds() == before
    for staged in (one, two):
        assert (sink.staging / staged.staging_name).read_bytes() == make_record().file_bytes()


def test_a_failed_fsync_fails_the_group_and_names_the_record(tmp_path, monkeypatch):
    sink = FileSink(tmp_path)
    before = _open_fds()
    sink.put(make_record().file_bytes(), "2024/01/01/0123456789abcdef01234567.json")
    dropped = sink.put(make_record().file_bytes(), "2024/01/01/89abcdef012345670123456.json")
    sink.discard(dropped)  # its change rolled back: its descriptor goes with it
    assert not (sink.staging / dropped.staging_name).exists()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SinkError, match=r"0123456789abcdef01234567\.json: disk full"):
        sink.sync()
    assert _open_fds() == before  # nothing left open after the failure
