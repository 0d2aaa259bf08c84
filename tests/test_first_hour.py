"""A new user's first hour (issue 26): signals, one-line errors, polling that does what the
configuration says. Each test goes through the real `ingestor` command where the point is
the command."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from tests.conftest import article_html, distinct_story, read_records


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
