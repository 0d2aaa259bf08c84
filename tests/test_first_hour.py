"""A new user's first hour (issue 26): signals, one-line errors, polling that does what the
configuration says. Each test goes through the real `ingestor` command where the point is
the command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from ingestor.analyze.language import detect_language
from ingestor.config.model import FeedConfig, ScheduleConfig
from ingestor.core import schedule
from ingestor.core.schedule import base_interval
from ingestor.core.state import FeedState, PollCommit
from ingestor.errors import ParseError
from ingestor.parse.feeds import parse_feed
from ingestor.store.sqlite import SQLiteStateStore
from tests.conftest import LOREM_EN, article_html, distinct_story, read_records


class SlowPages:
    """A feed of `count` stories whose pages answer after `delay` seconds."""

    def __init__(self, count: int, delay: float) -> None:
        self.count = count
        self.delay = delay
        self.started = 0
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self.handle)
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        if path == "/feed.xml":
            items = "".join(
                f"<item><title>Story {n}</title><link>{self.base}/a/{n}.html</link>"
                f"<guid>s{n}</guid></item>"
                for n in range(self.count)
            )
            body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>S</title>{items}'
            return web.Response(
                body=(body + "</channel></rss>").encode(), content_type="application/rss+xml"
            )
        self.started += 1
        await asyncio.sleep(self.delay)
        n = int(path.rsplit("/", 1)[1].split(".")[0])
        return web.Response(
            text=article_html(f"Story {n}", distinct_story(60 + n)), content_type="text/html"
        )


def config_file(tmp_path: Path, feed_url: str, extra: str = "") -> Path:
    path = tmp_path / "ingestor.yaml"
    path.write_text(
        f"output: {{dir: {tmp_path / 'out'}}}\n"
        f"state: {{path: {tmp_path / 'state' / 'db'}}}\n"
        "http: {allowed_networks: [127.0.0.1/32], retries: 0}\n"
        f"{extra}"
        f"feeds:\n  - url: {feed_url}\n",
        encoding="utf-8",
    )
    return path


async def run_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingestor",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_run_once_stopped_by_sigterm_finishes_in_flight_work_and_exits_0(tmp_path, serve):
    site = SlowPages(count=8, delay=1.5)
    site.base = await serve(site.app)
    config = config_file(tmp_path, f"{site.base}/feed.xml", "pipeline: {shutdown_grace: 10s}\n")
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = site.started
        process = await run_cli("run", "--once", "--config", str(config))
        deadline = time.monotonic() + 60
        while site.started == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        started = time.monotonic()
        process.send_signal(sig)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        took = time.monotonic() - started
        out = stdout.decode()
        assert process.returncode == 0, (sig, stderr.decode()[-2000:])
        assert f"stopped by {sig.name}" in out, out
        assert "still queued for the next run" in out, out
        assert took < 10, took  # the pages in flight (1.5 s) finished; nothing new began
        if sig is signal.SIGTERM:
            assert 1 <= len(read_records(tmp_path / "out")) < 8
    # The next run finishes what the stopped ones left.
    process = await run_cli("run", "--once", "--config", str(config))
    stdout, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0
    assert len(read_records(tmp_path / "out")) == 8


# --- one line, not a traceback ---


def cli(
    *args: str,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def one_line(run: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert "Traceback" not in run.stderr, run.stderr
    assert len(lines) == 1, run.stderr
    return lines[0]


def minimal_config(tmp_path: Path, extra: str = "", state: str | None = None) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"output: {{dir: {tmp_path / 'out'}}}\n"
        f"state: {{path: {state or tmp_path / 'state' / 'db'}}}\n"
        f"{extra}feeds: []\n",
        encoding="utf-8",
    )
    return path


def test_a_metrics_port_in_use_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = minimal_config(tmp_path, f"metrics: {{enabled: true, port: {port}}}\n")
        run = cli("run", "--config", str(config))
    assert run.returncode == 1
    line = one_line(run)
    assert f"metrics.port {port} on 127.0.0.1" in line and "in use" in line, line


def test_an_unresolvable_metrics_host_is_one_line_and_exit_1(tmp_path):
    config = minimal_config(tmp_path, "metrics: {enabled: true, host: no-such-host.invalid}\n")
    run = cli("run", "--config", str(config))
    assert run.returncode == 1
    assert "metrics.host 'no-such-host.invalid'" in one_line(run)


def test_a_state_path_under_a_file_or_on_a_read_only_disk_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    config = minimal_config(tmp_path, state=str(tmp_path / "afile" / "s.db"))
    run = cli("run", "--once", "--config", str(config))
    assert run.returncode == 1
    assert f"{tmp_path / 'afile'} is a file, not a directory" in one_line(run)

    readonly = tmp_path / "ro"
    readonly.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(readonly)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        config = minimal_config(tmp_path, state=str(readonly / "s.db"))
        run = cli("run", "--once", "--config", str(config))
        assert run.returncode == 1
        line = one_line(run)
        assert "state.path" in line and "Read-only file system" in line, line
    finally:
        subprocess.run(["umount", "-l", str(readonly)], capture_output=True)


def test_a_config_that_is_not_utf8_is_a_configuration_error(tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes(b"output: {dir: out}\nstate: {path: s.db}\n# caf\xe9 news\nfeeds: []\n")
    run = cli("check-config", "--config", str(config))
    assert run.returncode == 2
    line = one_line(run)
    assert "line 3: not UTF-8" in line and "0xe9" in line, line


def test_durations_that_are_not_finite_are_refused(tmp_path):
    for value in (".nan", ".inf", "-.inf"):
        config = minimal_config(tmp_path, f"schedule: {{interval: {value}}}\n")
        run = cli("check-config", "--config", str(config))
        assert run.returncode == 2, (value, run.stdout)
        assert "schedule.interval" in one_line(run)


# --- polling that does what the configuration says ---


def test_adaptive_polling_stretches_an_interval_at_most_four_times():
    quiet = FeedState(feed_id="f", recent_entry_times=tuple(range(0, 10 * 86400 * 7, 86400 * 7)))
    feed = FeedConfig(url="https://e.com/feed")
    one_minute = ScheduleConfig(interval=60)
    assert base_interval(feed, quiet, one_minute) == 240
    # An explicit max_interval still wins.
    assert base_interval(feed, quiet, ScheduleConfig(interval=60, max_interval=3600)) == 3600
    why = schedule.due_reason(feed, quiet, one_minute, 0.0)
    assert why.startswith("adaptive: the feed publishes about every 7d") and "4m" in why, why


# --- truthful output ---


def test_json_that_is_no_json_feed_is_called_json():
    for body in (b'[{"title": "x"}]', b"\xef\xbb\xbf[1, 2]"):
        with pytest.raises(ParseError) as caught:
            parse_feed(body, "https://e.com/feed.json", "application/feed+json")
        message = str(caught.value)
        assert "JSON, but not a JSON Feed: the top level is an array" in message, message
        assert "SAX" not in message
    # XML served as JSON still parses as the feed it is.
    xml = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><item>'
    xml += b"<title>A</title><link>https://e.com/a</link></item></channel></rss>"
    assert len(parse_feed(xml, "https://e.com/f", "application/json").entries) == 1


def test_status_shows_articles_due_now_as_now(tmp_path):
    from tests.test_store_contract import _items

    config = minimal_config(tmp_path)

    async def queue() -> None:
        store = SQLiteStateStore(tmp_path / "state" / "db")
        await store.open()
        try:
            await store.commit_poll(PollCommit(FeedState(feed_id="f"), _items("f", 2, now=0)))
        finally:
            await store.close()

    asyncio.run(queue())
    run = cli("status", "--config", str(config), "--hosts", "--json")
    assert run.returncode == 0, run.stderr
    (host,) = json.loads(run.stdout)
    assert host["due_now"] is True and not host["due"].startswith("1970"), host
    text = cli("status", "--config", str(config), "--hosts").stdout
    assert "queued  next now" in text, text


def test_a_long_title_weighs_its_share_not_the_whole_article():
    title = ("Chính phủ công bố biện pháp mới để hỗ trợ người dân vùng lũ lụt miền Trung. " * 14)[
        :1000
    ]
    body = " ".join(LOREM_EN * 3)
    assert detect_language(title, body).language == "en"
    # A normal headline still counts whole, and decides a short text.
    assert detect_language("Chính phủ công bố biện pháp mới", "OK").language == "vi"


def test_import_opml_says_which_outlines_it_left_out(tmp_path):
    opml = tmp_path / "subs.opml"
    opml.write_text(
        '<?xml version="1.0"?>\n<opml version="2.0"><head><title>s</title></head><body>\n'
        '<outline text="News">\n'
        '  <outline text="Good" type="rss" xmlUrl="https://news.example/feed.xml"/>\n'
        '  <outline text="Archive" type="rss" xmlUrl="ftp://files.example/feed.xml"/>\n'
        '  <outline text="Just a note"/>\n'
        '  <outline text="A site" htmlUrl="https://site.example/"/>\n'
        "</outline>\n</body></opml>\n",
        encoding="utf-8",
    )
    run = cli("import-opml", str(opml))
    assert run.returncode == 0, run.stderr
    assert "https://news.example/feed.xml" in run.stdout and "ftp://" not in run.stdout
    # An outline with only a website address becomes a site entry (its feeds discovered).
    assert "  - site: https://site.example/\n    name: A site\n" in run.stdout
    lines = run.stderr.splitlines()
    assert len(lines) == 2, run.stderr
    assert "line 5: outline 'Archive': ftp://files.example/feed.xml is not http(s)" in lines[0]
    assert "line 6: outline 'Just a note': no xmlUrl" in lines[1]


# --- docs that work as written ---


def test_the_readmes_minimum_config_passes_check_config_as_printed(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    minimum = readme.split("The minimum:", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "ingestor.yaml"
    config.write_text(minimum, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("NEWS_API_KEY", "FEED_PASSWORD")}
    run = cli("check-config", "--config", str(config), env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    # A secret from an unset variable is one problem, said once.
    config.write_text(
        minimum + '    auth: {username: reader, password: "${FEED_PASSWORD}"}\n', encoding="utf-8"
    )
    run = cli("check-config", "--config", str(config), env=env)
    assert run.returncode == 2
    assert "${FEED_PASSWORD} is not set" in one_line(run)


# --- updates in every format; a daemon that starts at once ---


async def test_an_rss_item_whose_pubdate_moves_forward_is_an_update(tmp_path, serve, worker_pool):
    from ingestor.config.model import DedupConfig
    from tests.conftest import make_config, rss
    from tests.test_pipeline import run_pass

    state = {"pubDate": "Mon, 04 Nov 2024 08:00:00 GMT", "story": 70, "title": "Budget"}

    async def feed(_request: web.Request) -> web.Response:
        item = {"title": state["title"], "link": f"{base}/a/budget.html", "guid": "b1"}
        body = rss([{**item, "pubDate": state["pubDate"]}])
        return web.Response(body=body, content_type="application/rss+xml")

    async def page(_request: web.Request) -> web.Response:
        html = article_html("Budget", distinct_story(int(state["story"])))
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/feed.xml", feed)
    app.router.add_get("/a/budget.html", page)
    base = await serve(app)
    config = make_config(tmp_path, [f"{base}/feed.xml"], dedup=DedupConfig(updates=True))
    await run_pass(config, worker_pool)
    (first,) = read_records(tmp_path / "out")
    # The page is edited and the item's pubDate moved forward (RSS 2.0 has no <updated>).
    state.update(pubDate="Mon, 04 Nov 2024 15:00:00 GMT", story=71)
    _summary, pipeline = await run_pass(config, worker_pool)
    (record,) = read_records(tmp_path / "out")
    assert record["id"] == first["id"] and record["text"] != first["text"]
    assert record["updated_at"] is not None
    assert pipeline.metrics.count("articles_updated") == 1
    # Edited again, the date left as it was: the item's text changed, so it is checked.
    state.update(story=72, title="Budget: the council's final vote")
    _summary, pipeline = await run_pass(config, worker_pool)
    (again,) = read_records(tmp_path / "out")
    assert again["text"] != record["text"] and again["text"].startswith(distinct_story(72)[0])
    assert pipeline.metrics.count("articles_updated") == 1


async def test_the_daemon_polls_new_feeds_at_once_and_says_so(tmp_path, serve):
    site = SlowPages(count=1, delay=0.0)
    site.base = await serve(site.app)
    config = config_file(tmp_path, f"{site.base}/feed.xml", "schedule: {interval: 1h}\n")
    process = await run_cli("run", "--config", str(config))
    started = time.monotonic()
    try:
        while not read_records(tmp_path / "out") and time.monotonic() - started < 30:
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
    finally:
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert read_records(tmp_path / "out"), stderr.decode()[-2000:]
    assert took < 10, took  # not a random point in the first minute
    log = stderr.decode()
    assert "first polls: 1 of 1 feeds due now (1 new)" in log, log
    assert "1 new entries queued" in log, log


async def test_the_total_timeout_bounds_the_whole_fetch(serve):
    from ingestor.errors import FetchTimeoutError
    from ingestor.http.fetcher import Fetcher
    from tests.conftest import loopback_http

    async def silent(_request: web.Request) -> web.Response:
        await asyncio.sleep(20)  # accepts the connection, never answers in time
        return web.Response(text="late")

    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        await asyncio.sleep(0.8)
        raise web.HTTPFound(f"/hop/{n + 1}")

    app = web.Application()
    app.router.add_get("/silent", silent)
    app.router.add_get("/hop/{n}", hop)
    base = await serve(app)
    config = loopback_http(total_timeout=2.0, retries=2)
    async with Fetcher(config) as fetcher:
        for path in ("/silent", "/hop/1"):
            started = time.monotonic()
            with pytest.raises(FetchTimeoutError) as caught:
                await fetcher.fetch(f"{base}{path}", max_bytes=1 << 20)
            took = time.monotonic() - started
            # Not resent after running out, and redirect hops share the one budget.
            assert 1.9 <= took < 3.0, (path, took)
            assert "timed out (total 2s)" in str(caught.value), caught.value


async def test_a_date_from_the_page_keeps_its_time(tmp_path, serve, worker_pool):
    from tests.conftest import make_config
    from tests.test_pipeline import Site, run_pass

    site = Site()
    site.base = await serve(site.app)
    head = '<meta property="article:published_time" content="2024-11-04T07:15:00Z">'
    site.pages["/a/dated.html"] = article_html(
        "Harbour dredging starts", distinct_story(80), extra_head=head
    )
    site.items.append({"title": "Harbour dredging starts", "link": "BASE/a/dated.html"})
    config = make_config(tmp_path, [f"{site.base}/feed.xml"])
    await run_pass(config, worker_pool)
    (record,) = read_records(tmp_path / "out")
    assert record["published_at"] == "2024-11-04T07:15:00Z"


async def test_a_daemon_killed_with_9_leaves_no_leaked_semaphore_warning(tmp_path, serve):
    site = SlowPages(count=2, delay=0.0)
    site.base = await serve(site.app)
    config = config_file(tmp_path, f"{site.base}/feed.xml")
    process = await run_cli("run", "--config", str(config))
    try:
        deadline = time.monotonic() + 30
        while len(read_records(tmp_path / "out")) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(read_records(tmp_path / "out")) == 2  # the worker pool has run
    finally:
        process.kill()
    # The stream closes when the last process holding it (the resource tracker) exits.
    _stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert "leaked" not in stderr.decode(), stderr.decode()[-2000:]
