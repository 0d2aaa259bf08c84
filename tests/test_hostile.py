"""The hostile internet: one pass of the real `ingestor run --once` over a farm of broken,
malicious and abusive feeds and pages, beside a good feed. Nothing breaks, nothing leaks,
memory stays bounded, and every failure is a clear per-feed error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import jsonschema
import pytest
from aiohttp import web

from ingestor.core.record import record_schema
from tests.conftest import article_html, distinct_story, ingestor_cli, read_records, rss
from tests.journal_checks import check_journal
from tests.test_daemon import Farm, descendants, start_daemon, wait_for, write_config
from tests.test_feeds import BILLION_LAUGHS, quadratic_blowup, xxe

TRAVERSAL_TITLE = "../../etc/x\x00\r\nEvil\u202eTitle\u2066"
HUGE_TITLE = "Huge " + "title " * 20_000


class Internal:
    """A server on 127.0.0.2, outside allowed_networks: it must never see a request."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        return web.Response(text="root:x:0:0:internal secret")


class Hostile:
    def __init__(self, internal: str) -> None:
        self.internal = internal
        self.base = ""
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", self.handle)

    def feeds(self) -> dict[str, tuple[bytes, str]]:
        b, i = self.base, self.internal
        good = [
            {"title": "Good one", "link": f"{b}/a/good1.html", "guid": "g1"},
            {"title": "Good two", "link": f"{b}/a/good2.html", "guid": "g2"},
            {
                "title": TRAVERSAL_TITLE.replace("\x00", "&#0;"),
                "link": f"{b}/a/good3.html",
                "guid": "../../etc/passwd",
            },
            {"title": HUGE_TITLE, "link": f"{b}/a/good4.html", "guid": "g4"},
            {"title": "Internal", "link": f"{i}/secret", "guid": "i1", "description": "bait one"},
            {
                "title": "Internal via redirect",
                "link": f"{b}/redirect-internal",
                "guid": "i2",
                "description": "bait two",
            },
            {"title": "A PDF", "link": f"{b}/doc.pdf", "guid": "p1", "description": "pdf"},
            {"title": "Endless", "link": f"{b}/endless.html", "guid": "e1"},
            {
                "title": "Slow to extract",
                "link": f"{b}/slow.html",
                "guid": "s1",
                "description": "the slow page",
            },
            {"title": "Deeply nested", "link": f"{b}/nested.html", "guid": "n1"},
        ]
        malformed = (
            b'<?xml version="1.0"?><rss version="2.0"><channel><title>Broken & bad</title>'
            b"<item><title>Recovered \x01\x02 item</title><link>"
            + b.encode()
            + b"/a/mal1.html</link><guid>m1</guid></item><stray><item><title>NUL\x00here"
            b"</title><link>" + b.encode() + b"/a/mal2.html</link><guid>m2</guid></item>"
            b"<item><title>Truncat"
        )
        latin = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            "<title>Latin</title><item><title>Élysée à Noël</title><link>"
            f"{b}/a/latin.html</link><guid>l1</guid></item></channel></rss>"
        )
        utf8 = (
            '<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel>'
            "<title>Utf8</title><item><title>Ça déménage à Zürich</title><link>"
            f"{b}/a/utf8.html</link><guid>u1</guid></item></channel></rss>"
        )
        bad_json = json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": [1],
                "items": [
                    {"id": {}, "url": 5, "title": None},
                    {"id": "ok", "url": f"{b}/a/json1.html", "title": "Json survivor", "tags": "x"},
                    7,
                ],
            }
        )
        many = (
            "<?xml version='1.0'?><rss version='2.0'><channel><title>Many</title>"
            + "".join(f"<item><guid>t{n}</guid><title>t{n}</title></item>" for n in range(100_000))
            + "</channel></rss>"
        )
        return {
            "/good.xml": (rss(good), "application/rss+xml"),
            "/malformed.xml": (malformed, "application/rss+xml"),
            "/laughs.xml": (BILLION_LAUGHS, "application/rss+xml"),
            "/quadratic.xml": (quadratic_blowup(), "application/rss+xml"),
            "/xxe-file.xml": (xxe("file:///etc/passwd"), "application/rss+xml"),
            "/xxe-url.xml": (xxe(f"{i}/xxe"), "application/rss+xml"),
            "/latin.xml": (latin.encode("latin-1"), "application/rss+xml; charset=utf-8"),
            "/utf8.xml": (utf8.encode("utf-8"), "text/xml; charset=iso-8859-1"),
            "/badtypes.json": (bad_json.encode(), "application/feed+json"),
            "/many.xml": (many.encode(), "application/rss+xml"),
        }

    def build(self) -> None:
        self.static = self.feeds()
        pages = {
            f"/a/{name}.html": article_html(f"Page {name}", distinct_story(n))
            for n, name in enumerate(
                ["good1", "good2", "good3", "good4", "mal1", "mal2", "latin", "utf8", "json1"]
            )
        }
        self.static.update({k: (v.encode(), "text/html") for k, v in pages.items()})
        # 100,000 elements of link lists: trafilatura needs many seconds for this page.
        links = "".join(
            f"<li><a href='/x/{n}'>Related story number {n}</a></li>" for n in range(30_000)
        )
        self.static["/slow.html"] = (
            f"<html><body><ul>{links}</ul><p>{'word ' * 50}</p></body></html>".encode(),
            "text/html",
        )
        self.static["/nested.html"] = (
            (
                "<html><body>" + "<div>" * 100_000 + "deep" + "</div>" * 100_000 + "</body></html>"
            ).encode(),
            "text/html",
        )
        self.static["/doc.pdf"] = (b"%PDF-1.7\n" + bytes(5000), "application/pdf")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in self.static:
            body, media = self.static[path]
            return web.Response(body=body, headers={"Content-Type": media})
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        if path == "/redirect-internal":
            raise web.HTTPFound(f"{self.internal}/secret")
        if path in ("/loop-a.xml", "/loop-b.xml"):
            raise web.HTTPFound("/loop-b.xml" if path == "/loop-a.xml" else "/loop-a.xml")
        response = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        write = _STREAMED.get(path)
        if path == "/bomb.xml":
            response.headers["Content-Encoding"] = "gzip"
        if path == "/endless.html":
            response.headers["Content-Type"] = "text/html"
        await response.prepare(request)
        if write is not None:
            with contextlib.suppress(ConnectionError):
                await write(response)
        return response


async def _huge(response: web.StreamResponse) -> None:  # 60 MB
    await response.write(b"<?xml version='1.0'?><rss version='2.0'><channel>")
    chunk = b"<item><title>x</title></item>" * 2000
    for _ in range(60_000_000 // len(chunk)):
        await response.write(chunk)


async def _bomb(response: web.StreamResponse) -> None:  # 1 GB of zeros, about 1 MB gzipped
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    for _ in range(1024):
        if data := compressor.compress(zeros):
            await response.write(data)


async def _trickle(response: web.StreamResponse) -> None:
    for byte in b"<?xml version='1.0'?><rss version='2.0'>":
        await response.write(bytes([byte]))
        await asyncio.sleep(2)


async def _endless(response: web.StreamResponse) -> None:
    # "Endless" to the client: 640 MB, far past any cap, until it hangs up.
    for _ in range(10_000):
        await response.write(b"<p>" + b"endless " * 8000 + b"</p>")


_STREAMED = {
    "/huge.xml": _huge,
    "/bomb.xml": _bomb,
    "/trickle.xml": _trickle,
    "/endless.html": _endless,
}


FEEDS = [
    "good.xml",
    "malformed.xml",
    "huge.xml",
    "bomb.xml",
    "laughs.xml",
    "quadratic.xml",
    "xxe-file.xml",
    "xxe-url.xml",
    "loop-a.xml",
    "trickle.xml",
    "latin.xml",
    "utf8.xml",
    "badtypes.json",
    "many.xml",
]


class RSSMonitor:
    """Peak RSS of a process and its children, sampled from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_main = 0
        self.peak_child = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_main = max(self.peak_main, _rss(self.pid))
            for child in descendants(self.pid):
                self.peak_child = max(self.peak_child, _rss(child))
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * 4096
    except (OSError, IndexError):
        return 0


async def test_hostile_farm_breaks_nothing_and_leaks_nothing(tmp_path, serve):
    internal = Internal()
    internal_base = await serve(internal.app, host="127.0.0.2")
    hostile = Hostile(internal_base)
    hostile.base = await serve(hostile.app)
    hostile.build()
    feeds = "".join(
        f"  - url: {hostile.base}/{name}\n"
        + ("    fetch_articles: false\n    min_text_length: 1\n" if name == "many.xml" else "")
        for name in FEEDS
    )
    config = tmp_path / "ingestor.yaml"
    config.write_text(
        "output:\n  dir: out\nstate:\n  path: state/ingestor.db\n"
        "http:\n  allowed_networks: ['127.0.0.1/32']\n  retries: 0\n  total_timeout: 4s\n"
        "  max_article_bytes: 2MiB\n"
        "extraction:\n  workers: 2\n  timeout: 3s\n"
        "pipeline:\n  article_concurrency: 8\n  queue_size: 16\n"
        f"feeds:\n{feeds}"
    )
    started = time.monotonic()
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "ingestor", "run", "--config", str(config), "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    monitor = RSSMonitor(process.pid)
    try:
        _stdout, stderr = await asyncio.to_thread(process.communicate, timeout=240)
    finally:
        monitor.stop()
        if process.poll() is None:
            process.kill()
    elapsed = time.monotonic() - started
    assert process.returncode == 0, stderr[-3000:]
    assert monitor.peak_main < 300 * 2**20, f"main process peaked at {monitor.peak_main >> 20} MB"
    assert monitor.peak_child < 600 * 2**20, f"a worker peaked at {monitor.peak_child >> 20} MB"
    assert elapsed < 200

    # The SSRF target was never contacted: not directly, not by redirect, not through XXE.
    assert internal.hits == []

    out = tmp_path / "out"
    files = [p for p in out.rglob("*") if p.is_file()]
    for path in files:
        relative = path.relative_to(out).as_posix()
        record = r"\d{4}/\d{2}/\d{2}/[0-9a-f]{24}\.json"
        segment = r"journal/(\d{16}\.jsonl(\.open)?|OWNER)"
        assert re.fullmatch(f"{record}|{segment}", relative), relative
    check_journal(out)
    assert not (tmp_path / "etc").exists()
    records = {r["title"]: r for r in read_records(out)}
    for record in records.values():
        jsonschema.validate(record, record_schema())
        for key in ("title", "text", "summary"):
            value = record[key] or ""
            assert not re.search("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", value)
        assert "internal secret" not in json.dumps(record)

    # The good feed came through whole, hostile text cleaned.
    for title in ("Good one", "Good two"):
        assert records[title]["extraction_method"] == "trafilatura"
        assert records[title]["language"] == "en"
    assert "../../etc/x EvilTitle" in records
    huge = next(r for t, r in records.items() if t.startswith("Huge"))
    assert len(huge["title"]) <= 1000
    for title in (
        "Internal",
        "Internal via redirect",
        "A PDF",
        "Endless",
        "Slow to extract",
        "Deeply nested",
    ):
        # The page was refused or useless: the record has the feed's own text.
        assert records[title]["extraction_method"] in (
            "none",
            "feed_content",
            "feed_summary",
        ), title
    assert records["Internal"]["summary"] == "bait one"
    assert records["Internal"]["text"] == "bait one"
    # Malformed XML: what feedparser recovered; wrong charsets decoded right.
    assert "Recovered item" in records
    assert "Élysée à Noël" in records and "Ça déménage à Zürich" in records
    assert "Json survivor" in records
    # 100,000 tiny items: the first 5,000 read, none of them written (no text).
    assert not any(t.startswith("t") and t[1:].isdigit() for t in records)

    status = subprocess.run(
        [sys.executable, "-m", "ingestor", "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = {row["url"].rsplit("/", 1)[1]: row for row in json.loads(status.stdout)}
    expected = {
        "huge.xml": "exceeds the cap",
        "bomb.xml": "exceeds the cap of 10485760 bytes (decoded)",
        "laughs.xml": "declares XML entities",
        "quadratic.xml": "declares XML entities",
        "xxe-file.xml": "declares XML entities",
        "xxe-url.xml": "declares XML entities",
        "loop-a.xml": "redirect loop",
        "trickle.xml": "timed out",
    }
    for name, cause in expected.items():
        row = rows[name]
        assert row["consecutive_failures"] == 1, (name, row)
        assert cause in row["last_error"] and name in row["last_error"], (name, row)
    for name in ("good.xml", "malformed.xml", "latin.xml", "utf8.xml", "badtypes.json", "many.xml"):
        assert rows[name]["consecutive_failures"] == 0, (name, rows[name])
    assert "only the first 5000 were read" in stderr
    assert "time limit" in stderr  # the slow page's worker was replaced
    assert "Traceback" not in stderr


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


async def _healthz(port: int) -> tuple[int, str]:
    import aiohttp

    url = f"http://127.0.0.1:{port}/healthz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_disk_full_is_a_clear_error_and_recovers_when_space_returns(tmp_path, serve):
    out = tmp_path / "out"
    if not _mount_tmpfs(out, "512k"):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        filler = out / "filler.bin"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:  # fill the file system to the last byte
                os.write(fd, bytes(4096))
        os.close(fd)
        farm = Farm(feeds=1, items=4)
        farm.base = await serve(farm.app)
        config = tmp_path / "ingestor.yaml"
        log = tmp_path / "daemon.log"
        write_config(config, farm.feed_urls(), extra="metrics:\n  enabled: true\n  port: 0\n")
        daemon = await start_daemon(config, log)
        try:
            assert await wait_for(lambda: "disk full" in log.read_text(), 40), log.read_text()
            # /healthz says the daemon cannot do its job while records cannot be written.
            port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", log.read_text()).group(1))
            status, text = await _healthz(port)
            assert status == 503 and "record writes failing" in text, text
            # Retried (every 10 s, all article work paused meanwhile), never dropped.
            assert await wait_for(lambda: log.read_text().count("disk full") >= 2, 30)
            # Nothing is marked done and nothing corrupt is left behind.
            assert list(out.rglob("*.json")) == []
            assert daemon.returncode is None
            line = next(x for x in log.read_text().splitlines() if "disk full" in x)
            assert "cannot write record" in line and "retried" in line
            os.unlink(filler)  # space returns
            assert await wait_for(lambda: len(read_records(out)) == 4, 40), log.read_text()
            assert await _healthz(port) == (200, "ok\n")
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
        assert sorted(r["title"] for r in read_records(out)) == [f"Story 0-{i}" for i in range(4)]
        assert [p.name for p in (out / ".staging").iterdir()] == []
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


async def test_run_once_on_a_full_disk_ends_and_keeps_the_articles_queued(tmp_path, serve):
    out = tmp_path / "out"
    if not _mount_tmpfs(out, "512k"):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        fd = os.open(out / "filler.bin", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(4096))
        os.close(fd)
        farm = Farm(feeds=1, items=3)
        farm.base = await serve(farm.app)
        config = tmp_path / "ingestor.yaml"
        write_config(config, farm.feed_urls())
        config.write_text(
            config.read_text().replace("pipeline:\n", "pipeline:\n  once_max_wait: 3s\n")
        )
        started = time.monotonic()
        run = await ingestor_cli("run", "--config", str(config), "--once", timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert time.monotonic() - started < 60
        assert "disk full" in run.stderr
        assert "still queued for the next run: 3" in run.stdout, run.stdout
        assert list(out.rglob("*.json")) == []
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


async def test_locked_state_is_a_clear_error_at_start(tmp_path, serve):
    farm = Farm(feeds=1, items=1)
    farm.base = await serve(farm.app)
    config = tmp_path / "ingestor.yaml"
    log = tmp_path / "daemon.log"
    write_config(config, farm.feed_urls())
    daemon = await start_daemon(config, log)
    try:
        assert await wait_for(lambda: "ingestor running" in log.read_text(), 30)
        second = await ingestor_cli("run", "--config", str(config), "--once", timeout=60)
        assert second.returncode == 1
        assert "in use by another ingestor process" in second.stderr
        assert f"pid {daemon.pid}" in second.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0
