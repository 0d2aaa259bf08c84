from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from ingestor.config.load import load_config
from ingestor.config.values import parse_duration, parse_size
from ingestor.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

GOOD = """
output:
  dir: ./out
state:
  path: ./state/ingestor.db
http:
  allowed_networks: ["127.0.0.0/8"]
  max_article_bytes: 2MiB
schedule:
  interval: 10m
feeds:
  - url: https://example.org/feed.xml
    name: example
    interval: 1h
    tags: [news]
  - url: https://example.com/${FEED_PATH}
    fetch_articles: false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ingestor.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_loads_with_defaults_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FEED_PATH", "atom.xml")
    config = load_config(write(tmp_path, GOOD))
    assert config.output.dir == tmp_path / "out"  # relative to the config file
    assert config.state.path == tmp_path / "state" / "ingestor.db"
    assert config.http.allowed_networks == (ipaddress.ip_network("127.0.0.0/8"),)
    assert config.http.max_article_bytes == 2 * 1024 * 1024
    assert config.http.max_feed_bytes == 10 * 1024 * 1024
    assert config.schedule.interval == 600
    assert config.feeds[0].interval == 3600 and config.feeds[0].tags == ("news",)
    assert config.feeds[1].url == "https://example.com/atom.xml"
    assert config.feeds[1].fetch_articles is False


def test_every_problem_is_one_line_naming_file_and_key(tmp_path):
    text = """
output:
  dir: ./out
  colour: blue
state:
  path: ./s.db
schedule:
  interval: soon
http:
  allowed_networks: ["not-a-network"]
feeds:
  - url: https://a.example/feed
  - url: ftp://b.example/feed
  - url: https://c.example/feed
    interval: -5
  - name: no url
  - url: https://a.example/feed
extra: 1
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    expected = [
        "output.colour: unknown key",
        "schedule.interval: 'soon' is not a duration",
        "http.allowed_networks: 'not-a-network' is not a CIDR",
        "feeds[1].url: 'ftp://b.example/feed' is not an http(s) URL",
        "feeds[2].interval:",
        "feeds[3].url: required key is missing",
        "feeds[4].url: duplicate of feeds[0].url",
        "extra: unknown key",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert all(p.startswith(str(path) + ": ") for p in problems)
    assert all("\n" not in p for p in problems)


def test_missing_env_var_and_bad_yaml(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=r"output.dir: environment variable \$\{NOPE_NOT_SET"):
        load_config(write(tmp_path, "output:\n  dir: ${NOPE_NOT_SET}\nstate:\n  path: s.db\n"))
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        load_config(write(tmp_path, "output:\n  dir: [unclosed\nstate: {}\n"))
    with pytest.raises(ConfigError, match="state: required section is missing"):
        load_config(write(tmp_path, "output:\n  dir: out\n"))


@pytest.mark.parametrize(
    ("text", "seconds"), [("15m", 900), ("1h30m", 5400), ("500ms", 0.5), (30, 30), ("2d", 172800)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "m", "10 parsecs", True, "-1s"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_sizes():
    assert parse_size("10MiB") == 10 * 1024 * 1024
    assert parse_size("500kB") == 500_000
    assert parse_size(123) == 123
    with pytest.raises(ValueError):
        parse_size("lots")


def test_example_config_is_valid():
    config = load_config(REPO / "config" / "ingestor.example.yaml")
    assert config.feeds


def test_check_config_command_exit_codes(tmp_path):
    good = write(tmp_path, GOOD.replace("${FEED_PATH}", "x.xml"))
    run = subprocess.run(
        [sys.executable, "-m", "ingestor", "check-config", "--config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("output:\n  dir: o\nstate:\n  path: s\nfeeds:\n  - url: nope\n")
    run = subprocess.run(
        [sys.executable, "-m", "ingestor", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert f"{bad}: feeds[0].url: 'nope' is not an http(s) URL" in run.stderr


def test_the_example_file_documents_every_setting_declared():
    """Settings are declared once (ingestor/config/model.py); the example file must show
    each of them, with its default, under its section."""
    from ingestor.config.model import FeedConfig as Feed
    from ingestor.config.model import RequestOptions, parsers, sections

    text = (REPO / "config" / "ingestor.example.yaml").read_text()
    blocks: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            current = line.split(":", 1)[0]
        blocks[current] = blocks.get(current, "") + line + "\n"
    missing = [
        f"{name}.{key}"
        for name, cls in sections().items()
        for key in parsers(cls)
        if f"  {key}:" not in blocks.get(name, "")
    ]
    missing += [
        f"feeds[].{key}"
        for key in [*parsers(Feed), *parsers(RequestOptions)]
        if f" {key}:" not in blocks.get("feeds", "")
    ]
    assert missing == []


def test_state_is_a_path_or_a_postgresql_url_not_both(tmp_path, monkeypatch):
    both = "output:\n  dir: out\nstate:\n  path: s.db\n  url: postgresql://u@db:5432/ingest\n"
    with pytest.raises(ConfigError, match=r"state: give exactly one of .*both are set"):
        load_config(write(tmp_path, both))
    with pytest.raises(ConfigError, match=r"state: give exactly one of state.path"):
        load_config(write(tmp_path, "output:\n  dir: out\nstate:\n  lease_ttl: 30s\n"))
    with pytest.raises(ConfigError, match=r"state.url: expected a postgresql://"):
        load_config(write(tmp_path, "output:\n  dir: out\nstate:\n  url: mysql://u@h/db\n"))
    monkeypatch.setenv("PGPASS_FOR_TEST", "s3cret")
    config = load_config(
        write(
            tmp_path,
            "output:\n  dir: out\nstate:\n"
            "  url: postgresql://ingest:${PGPASS_FOR_TEST}@db:5432/ingest\n  lease_ttl: 45s\n",
        )
    )
    assert config.state.url == "postgresql://ingest:s3cret@db:5432/ingest"
    assert config.state.path is None and config.state.lease_ttl == 45.0
    # The password reaches neither repr (logs) nor the place status and logs name.
    assert "s3cret" not in repr(config) and "s3cret" not in config.state.where
    assert config.state.where == "postgresql://ingest:***@db:5432/ingest"


def test_the_fleet_example_and_its_compose_file_agree(monkeypatch):
    import yaml

    monkeypatch.setenv("INGEST_DB_PASSWORD", "pw")
    config = load_config(REPO / "config" / "fleet.example.yaml")
    assert config.state.url == "postgresql://ingest:pw@db:5432/ingest" and config.feeds
    compose = yaml.safe_load((REPO / "config" / "compose.yaml").read_text())
    replicas = compose["services"]["ingestor"]
    assert replicas["deploy"]["replicas"] == 3
    assert "INGEST_DB_PASSWORD" in replicas["environment"]
    # The output volume is the one the config writes to, shared by every replica.
    assert f"output:{config.output.dir}" in replicas["volumes"]


def test_the_extraction_engine_and_second_opinion_settings(tmp_path):
    text = "output:\n  dir: out\nstate:\n  path: s.db\nextraction:\n  engine: resiliparse\n"
    assert load_config(write(tmp_path, text)).extraction.engine == "resiliparse"
    assert load_config(write(tmp_path, text)).extraction.second_opinion is True
    off = text + "  second_opinion: false\n"
    assert load_config(write(tmp_path, off)).extraction.second_opinion is False
    with pytest.raises(ConfigError, match=r"extraction.second_opinion: "):
        load_config(write(tmp_path, text + "  second_opinion: sometimes\n"))
    with pytest.raises(ConfigError, match=r"extraction.engine: must be one of"):
        load_config(write(tmp_path, text.replace("resiliparse", "boilerpipe")))


def test_a_key_given_twice_is_one_line_naming_it_and_both_lines(tmp_path):
    """YAML keys are unique: PyYAML kept the last one silently (issue 38's papercut)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "output:\n  dir: ./out\nstate:\n  path: ./s.db\nfeeds:\n"
        "  - url: https://example.org/a.xml\n    interval: 1h\n    interval: 5m\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    (problem,) = refused.value.problems
    assert problem == f"{path}: line 8: key 'interval' given twice (first on line 7); say it once"
    # A merge key (<<) may stand beside the keys it merges.
    path.write_text(
        "defaults: &d {interval: 1h}\noutput: {dir: ./out}\nstate: {path: ./s.db}\n"
        "feeds:\n  - {<<: *d, url: https://example.org/a.xml}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as unknown:
        load_config(path)  # the top-level `defaults` is no setting: refused by name
    assert "given twice" not in " ".join(unknown.value.problems)


def test_check_config_counts_in_words_and_warns_of_no_feeds(tmp_path):
    path = tmp_path / "c.yaml"
    base = "output: {dir: ./out}\nstate: {path: ./s.db}\n"
    path.write_text(base + "feeds:\n  - url: https://example.org/a.xml\n", encoding="utf-8")
    one = subprocess.run(
        [sys.executable, "-m", "ingestor", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0 and one.stdout.strip().endswith("ok (1 feed)"), one.stdout
    path.write_text(base + "feeds: []\n", encoding="utf-8")
    none = subprocess.run(
        [sys.executable, "-m", "ingestor", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert none.returncode == 0 and "ok (0 feeds)" in none.stdout
    assert none.stderr.strip() == (
        f"warning: {path}: no feeds configured (feeds: is empty): the daemon would poll nothing"
    )


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path):
    """`ingestor status | head -1` ended in a BrokenPipeError traceback (exit 1)."""
    path = tmp_path / "c.yaml"
    # Loopback, never allowed: every poll is refused at once (no name to look up).
    feeds = "".join(f"  - url: http://127.0.0.1:9/{n}.xml\n" for n in range(300))
    path.write_text(
        f"output: {{dir: {tmp_path}/out}}\nstate: {{path: {tmp_path}/s.db}}\nfeeds:\n{feeds}",
        encoding="utf-8",
    )
    first = subprocess.run(
        [sys.executable, "-m", "ingestor", "run", "--once", "--config", str(path)],
        capture_output=True,
        timeout=120,
    )
    assert first.returncode == 0
    piped = subprocess.run(
        f"{sys.executable} -m ingestor status --config {path} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        executable="/bin/bash",
    )
    assert piped.stdout.count("\n") == 1
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
