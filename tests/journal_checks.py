"""The change journal's invariants, checked against an output directory (tests only)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema

from ingestor.core.journal import OWNER_FILE, journal_schema, parse_segment_name


def journal_lines(out: Path, writer: str | None = None, live: bool = False) -> list[dict]:
    """Every line of every segment (of one writer when given), in seq order.

    `live`: the daemon is running. A segment may then be renamed (closed) or removed
    (retention) between the listing and the read: the directory is read again. The open
    segment's last line may be half-appended: like `ingestor tail`, only complete lines
    count. A stopped daemon's journal must hold no half line at all."""
    for _attempt in range(20):
        try:
            return _read_lines(out, writer, live)
        except FileNotFoundError:
            if not live:
                raise
    raise AssertionError("the journal kept changing under the reader")


def _read_lines(out: Path, writer: str | None, live: bool) -> list[dict]:
    lines = []
    directory = out / "journal"
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if path.name == OWNER_FILE or path.name.startswith(f".{OWNER_FILE}."):
            # The owner file, or its replacement being staged (left behind when a kill -9
            # came between writing it and renaming it: harmless, not a segment).
            continue
        name = parse_segment_name(path.name)
        if name is None:
            raise AssertionError(f"unexpected file in the journal: {path.name}")
        if writer is not None and name.writer != writer:
            continue
        data = path.read_bytes()
        if live and name.is_open:
            data = data[: data.rfind(b"\n") + 1]
        assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in a half line"
        lines.extend(json.loads(line) for line in data.splitlines())
    return sorted(lines, key=lambda line: line["seq"])


def record_files(out: Path) -> dict[str, dict]:
    """What a consumer's glob sees: path relative to out -> the record."""
    return {
        path.relative_to(out).as_posix(): json.loads(path.read_bytes())
        for path in out.rglob("*.json")
    }


def check_journal(out: Path, seen: dict[int, dict] | None = None) -> list[dict]:
    """The invariants of the journal against the tree; returns the lines. `seen`: lines
    read earlier (retention may have removed their segments since), seq -> line."""
    lines = journal_lines(out)
    schema = journal_schema()
    for line in lines:
        jsonschema.validate(line, schema)
    seqs = [line["seq"] for line in lines]
    first = seqs[0] if seqs else 1
    assert seqs == list(range(first, first + len(seqs))), "seq is not gap-free and increasing"
    if seen is not None:
        for line in lines:
            assert seen.setdefault(line["seq"], line) == line, "a journal line changed"
        lines = [seen[seq] for seq in sorted(seen)]
    files = record_files(out)
    creates = Counter(line["path"] for line in lines if line["op"] == "create")
    last: dict[str, dict] = {}
    for line in lines:
        if line["op"] == "update":
            assert line["path"] in last, f"update of {line['path']} before its create"
        last[line["path"]] = line
    for path, record in files.items():
        assert creates[path] == 1, f"{path}: {creates[path]} create lines"
        assert last[path]["op"] != "delete", f"{path}: deleted in the journal, still there"
        # The file is the version of its last line (an update's line follows its rename).
        assert record["content_hash"] == last[path]["content_hash"], path
        assert record["id"] == last[path]["id"]
    for path, line in last.items():
        if line["op"] != "delete":
            assert path in files, f"line {line['seq']} names {path}, which does not exist"
    return lines
