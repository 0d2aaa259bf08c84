"""One journal per output directory, whatever the state (issue 25): a state that did not
write the output directory's journal (a new one after the old was moved aside, another
configuration's) is refused at start with one line that says what to do, and the journal
and the record files stay as they were. The real `ingestor` command, as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ingestor.core.journal import OWNER_FILE
from tests.conftest import article_html, distinct_story, ingestor_cli
from tests.journal_checks import check_journal, record_files
from tests.test_pipeline import Site


def write_config(path: Path, output: Path, state: Path, feed_url: str) -> Path:
    path.write_text(
        f"output: {{dir: {output}}}\n"
        f"state: {{path: {state}}}\n"
        "http: {allowed_networks: [127.0.0.1/32], retries: 0}\n"
        f"feeds:\n  - url: {feed_url}\n",
        encoding="utf-8",
    )
    return path


async def site_with_stories(serve, count: int) -> Site:
    site = Site()
    site.base = await serve(site.app)
    add_stories(site, 0, count)
    return site


def add_stories(site: Site, start: int, count: int) -> None:
    for n in range(start, start + count):
        site.pages[f"/a/{n}.html"] = article_html(f"Story {n}", distinct_story(40 + n))
        site.items.append({"title": f"Story {n}", "link": f"BASE/a/{n}.html", "guid": f"g{n}"})


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


async def test_a_new_state_on_an_old_output_is_refused_and_the_old_state_goes_on(tmp_path, serve):
    site = await site_with_stories(serve, 3)
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "a.yaml", out, tmp_path / "state" / "a.db", f"{site.base}/feed.xml"
    )
    first = await ingestor_cli("run", "--once", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert [line["seq"] for line in check_journal(out)] == [1, 2, 3]
    before = snapshot(out)

    # The README's advice for an unusable state: move it aside. A new state starts empty.
    shutil.move(tmp_path / "state", tmp_path / "state.aside")
    add_stories(site, 3, 1)
    refused = await ingestor_cli("run", "--once", "--config", str(config))
    assert refused.returncode == 1
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"output.dir {out}" in message and "another state" in message, message
    assert "output.dir of its own" in message and "move" in message
    assert snapshot(out) == before  # nothing rewritten, no line added

    # Another configuration's state on the same output directory: refused alike.
    other = write_config(
        tmp_path / "b.yaml", out, tmp_path / "other" / "b.db", f"{site.base}/feed.xml"
    )
    assert (await ingestor_cli("run", "--once", "--config", str(other))).returncode == 1
    assert snapshot(out) == before

    # The state that wrote it, restored, goes on with the next seq.
    shutil.rmtree(tmp_path / "state")
    shutil.move(tmp_path / "state.aside", tmp_path / "state")
    again = await ingestor_cli("run", "--once", "--config", str(config))
    assert again.returncode == 0, again.stderr
    lines = check_journal(out)
    assert [line["seq"] for line in lines] == [1, 2, 3, 4]
    assert len(record_files(out)) == 4


async def test_a_journal_written_before_owners_is_claimed_only_by_its_own_state(tmp_path, serve):
    site = await site_with_stories(serve, 2)
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "a.yaml", out, tmp_path / "state" / "a.db", f"{site.base}/feed.xml"
    )
    assert (await ingestor_cli("run", "--once", "--config", str(config))).returncode == 0
    owner = (out / "journal" / OWNER_FILE).read_text()
    # An output directory from before the owner file: its own state claims it...
    (out / "journal" / OWNER_FILE).unlink()
    assert (await ingestor_cli("run", "--once", "--config", str(config))).returncode == 0
    assert (out / "journal" / OWNER_FILE).read_text() == owner
    # ...and a state that never wrote its lines does not.
    (out / "journal" / OWNER_FILE).unlink()
    stranger = write_config(
        tmp_path / "b.yaml", out, tmp_path / "other" / "b.db", f"{site.base}/feed.xml"
    )
    refused = await ingestor_cli("run", "--once", "--config", str(stranger))
    assert refused.returncode == 1 and "last seq 2" in refused.stderr
    assert not (out / "journal" / OWNER_FILE).exists()


def test_the_demo_twice_into_one_directory_keeps_one_true_journal(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, "-m", "ingestor", "demo", "--output", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert run.returncode == 0, run.stderr
    # Each demo serves the corpus on a new port: new URLs, new records, every one with
    # its line, numbered on from the first run's.
    lines = check_journal(out)
    files = record_files(out)
    assert len(files) == 12
    assert [line["seq"] for line in lines] == list(range(1, 13))
    assert all(p.endswith(".json") for p in files)
