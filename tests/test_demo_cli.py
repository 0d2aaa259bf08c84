"""The README's first command and the CLI, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

from ingestor.core.record import record_schema
from tests.conftest import read_records
from tests.journal_checks import check_journal
from tests.test_extract_language import NOISE, seed_paragraphs

FRENCH_TITLE = (
    "Irak/Syrie : des bases US essuient des tires de missiles et de drones de la Résistance"
)


def ingestor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args], capture_output=True, text=True, timeout=timeout
    )


def test_demo_ingests_the_offline_corpus(tmp_path):
    out = tmp_path / "records"
    run = ingestor("demo", "--output", str(out))
    assert run.returncode == 0, run.stderr
    assert "articles written: 6" in run.stdout
    assert "duplicates: 2" in run.stdout
    assert "errors: 0" in run.stdout
    assert str(out) in run.stdout
    records = read_records(out)
    assert len(records) == 6
    for record in records:
        jsonschema.validate(record, record_schema())
    assert {r["language"] for r in records} == {"fr", "en", "de", "es", "ja"}
    (french,) = [r for r in records if r["language"] == "fr"]
    assert french["title"] == FRENCH_TITLE
    assert french["text"].split("\n\n") == seed_paragraphs()
    for noise in NOISE:
        assert noise not in french["text"]
    assert french["extraction_method"] == "trafilatura"
    # The sidebar's "Sign up for our newsletter." is no part of any article (it ended
    # the Japanese record's text).
    for record in records:
        assert "newsletter" not in record["text"].lower(), record["text"][-200:]
    wind = [r for r in records if "wind farm" in r["title"].lower()]
    assert len(wind) == 2
    assert sorted(str(r["duplicate_kind"]) for r in wind) == ["None", "near"]
    marked = next(r for r in wind if r["duplicate_of"])
    assert marked["duplicate_of"] == next(r["id"] for r in wind if not r["duplicate_of"])
    files = [p for p in out.rglob("*") if p.is_file() and p.parent.name != "journal"]
    assert all(p.suffix == ".json" and p.stem in {r["id"] for r in records} for p in files)
    # The journal names each record once, in order.
    lines = check_journal(out)
    assert sorted(line["id"] for line in lines) == sorted(r["id"] for r in records)


def test_every_command_has_help():
    for command in ("run", "demo", "check-config", "import-opml", "status", "tail"):
        run = ingestor(command, "--help")
        assert run.returncode == 0 and "exit codes" in run.stdout, command


def test_run_once_status_and_fatal_errors(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "output:\n  dir: out\nstate:\n  path: state/s.db\n"
        "http:\n  retries: 0\n  connect_timeout: 2s\n"
        "feeds:\n  - url: http://127.0.0.1:9/feed.xml\n    name: nothing-here\n"
    )
    run = ingestor("run", "--config", str(config), "--once")
    assert run.returncode == 0, run.stderr  # a failing feed does not fail the pass
    assert "failed" in run.stdout and "127.0.0.1:9" in run.stdout
    status = ingestor("status", "--config", str(config), "--json")
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert row["name"] == "nothing-here" and row["consecutive_failures"] == 1
    assert "SSRF guard" in row["last_error"] or "connect" in row["last_error"]
    table = ingestor("status", "--config", str(config))
    assert "FAILING" in table.stdout and "nothing-here" in table.stdout

    (tmp_path / "state" / "s.db").write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        Path(str(tmp_path / "state" / "s.db") + suffix).unlink(missing_ok=True)
    run = ingestor("run", "--config", str(config), "--once")
    assert run.returncode == 1
    assert "state database" in run.stderr and "aside" in run.stderr

    (tmp_path / "blocker").write_text("x")
    config.write_text("output:\n  dir: blocker/out\nstate:\n  path: state2/s.db\n")
    run = ingestor("run", "--config", str(config), "--once")
    assert run.returncode == 1 and "not writable" in run.stderr
    bad = ingestor("run", "--config", str(tmp_path / "missing.yaml"), "--once")
    assert bad.returncode == 2 and "cannot read" in bad.stderr


OPML = """<?xml version="1.0"?>
<opml version="2.0"><head><title>subs</title></head><body>
  <outline text="News">
    <outline type="rss" text="Example" xmlUrl="https://example.org/feed.xml"/>
    <outline type="rss" text="Other" xmlUrl="https://other.example/rss"/>
  </outline>
  <outline type="rss" text="Bad" xmlUrl="javascript:alert(1)"/>
</body></opml>
"""


def test_import_opml_prints_and_appends(tmp_path):
    opml = tmp_path / "subs.opml"
    opml.write_text(OPML)
    run = ingestor("import-opml", str(opml))
    assert run.returncode == 0, run.stderr
    assert "- url: https://example.org/feed.xml" in run.stdout
    assert "javascript" not in run.stdout and "News" in run.stdout
    config = tmp_path / "c.yaml"
    config.write_text(
        "# mine\noutput:\n  dir: out\nstate:\n  path: s.db\nfeeds:\n"
        "  - url: https://example.org/feed.xml\n"
    )
    run = ingestor("import-opml", str(opml), "--append-to", str(config))
    assert run.returncode == 0, run.stderr
    assert "appended 1 feeds" in run.stdout
    text = config.read_text()
    assert text.startswith("# mine") and "https://other.example/rss" in text
    check = ingestor("check-config", "--config", str(config))
    assert check.returncode == 0 and "(2 feeds)" in check.stdout
