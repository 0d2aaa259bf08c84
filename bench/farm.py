"""A local feed farm for the benchmark: several 127.x hosts in one server process.

Article pages are 30-200 KB (menus, scripts, related lists, comments around the body),
every response waits 5-40 ms, feeds come as RSS, Atom and JSON Feed, and some entries are
duplicates (the same URL in two feeds, or a syndicated copy under another URL).
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import json
import multiprocessing
import random
import time
from dataclasses import dataclass

from aiohttp import web

from bench.corpus import Story, padded_page, stories, synthetic_story


@dataclass(frozen=True)
class FarmSpec:
    hosts: int = 4
    feeds: int = 12
    items: int = 20
    poll_feeds: int = 0
    latency: tuple[float, float] = (0.005, 0.040)
    port: int = 0
    # This share of pages and of feeds answers 429 or 503 once, with Retry-After 1-5 s
    # (as seconds or as an HTTP date), as real sites under load do.
    fault_rate: float = 0.0


def is_faulty(path: str, rate: float) -> bool:
    return rate > 0 and random.Random(f"fault:{path}").random() < rate


def fault_response(path: str) -> web.Response:
    rng = random.Random(f"kind:{path}")
    seconds = rng.randint(1, 5)
    status = rng.choice((429, 503))
    if rng.random() < 0.5:
        value = str(seconds)
    else:
        value = email.utils.formatdate(time.time() + seconds + 1, usegmt=True)
    return web.Response(status=status, headers={"Retry-After": value})


def host_address(index: int) -> str:
    return f"127.0.{10 + index // 250}.{1 + index % 250}"


def _variant(story: Story, n: int) -> Story:
    # Every article needs a body of its own, or near-duplicate detection rightly folds them.
    return synthetic_story(n, story)


class FarmContent:
    """Deterministic pages and feeds, also rebuilt by the benchmark for the baselines."""

    def __init__(self, spec: FarmSpec, port: int) -> None:
        self.spec = spec
        self.port = port
        self.corpus = [s for s in stories() if s.lang == "en"]
        self.pages: dict[str, bytes] = {}
        self.feeds: dict[str, tuple[bytes, str]] = {}
        self._build()

    def base(self, host: int) -> str:
        return f"http://{host_address(host % self.spec.hosts)}:{self.port}"

    def article_url(self, feed: int, item: int) -> str:
        return f"{self.base(feed + item)}/a/{feed}/{item}.html"

    def _build(self) -> None:
        rng = random.Random(42)
        spec = self.spec
        for feed in range(spec.feeds):
            entries = []
            for item in range(spec.items):
                url = self.article_url(feed, item)
                n = feed * 10_000 + item
                story = _variant(self.corpus[n % len(self.corpus)], n)
                roll = rng.random()
                if roll < 0.05 and feed > 0:
                    # The same article through another feed (URL-level duplicate).
                    url = self.article_url(feed - 1, item)
                elif roll < 0.10 and feed > 0:
                    # A syndicated copy: another URL, the previous feed's story, one extra
                    # paragraph (near duplicate).
                    source = _variant(self.corpus[(n - 10_000) % len(self.corpus)], n - 10_000)
                    story = Story(
                        story.name,
                        source.lang,
                        source.title,
                        (*source.paragraphs, "Distributed by the wire service."),
                    )
                path = url.split(":", 2)[2].split("/", 1)[1]
                if f"/{path}" not in self.pages:
                    size = rng.randint(30_000, 200_000)
                    self.pages[f"/{path}"] = padded_page(story, size, n).encode("utf-8")
                entries.append((url, story))
            kind = ("rss", "atom", "json")[feed % 3]
            self.feeds[f"/feeds/{feed}.{kind}"] = _render_feed(kind, feed, entries)
        for n in range(spec.poll_feeds):
            self.feeds[f"/poll/{n}.xml"] = (_tiny_rss(n), "application/rss+xml")

    def feed_urls(self) -> list[str]:
        return [
            f"{self.base(i)}/feeds/{i}.{('rss', 'atom', 'json')[i % 3]}"
            for i in range(self.spec.feeds)
        ]

    def poll_urls(self, unchanged: bool) -> list[str]:
        prefix = "poll-same" if unchanged else "poll"
        return [f"{self.base(n)}/{prefix}/{n}.xml" for n in range(self.spec.poll_feeds)]


def _render_feed(kind: str, feed: int, entries: list[tuple[str, Story]]) -> tuple[bytes, str]:
    date = "2024-03-0{d}T{h:02d}:00:00Z"
    if kind == "json":
        items = [
            {
                "id": f"{feed}-{i}",
                "url": url,
                "title": s.title,
                "summary": s.paragraphs[0][:200],
                "date_published": date.format(d=1 + i % 9, h=i % 24),
            }
            for i, (url, s) in enumerate(entries)
        ]
        body = json.dumps(
            {"version": "https://jsonfeed.org/version/1.1", "title": f"Feed {feed}", "items": items}
        )
        return body.encode(), "application/feed+json"
    if kind == "atom":
        body = "".join(
            f"<entry><id>urn:{feed}:{i}</id><title>{html.escape(s.title)}</title>"
            f"<link href='{html.escape(url)}'/><updated>{date.format(d=1 + i % 9, h=i % 24)}"
            f"</updated><summary>{html.escape(s.paragraphs[0][:200])}</summary></entry>"
            for i, (url, s) in enumerate(entries)
        )
        return (
            f"<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/"
            f"Atom'><title>Feed {feed}</title><id>urn:feed:{feed}</id>"
            f"<updated>2024-03-01T00:00:00Z</updated>{body}</feed>"
        ).encode(), ("application/atom+xml")
    body = "".join(
        f"<item><guid>{feed}-{i}</guid><title>{html.escape(s.title)}</title>"
        f"<link>{html.escape(url)}</link><pubDate>Fri, 0{1 + i % 9} Mar 2024 "
        f"{i % 24:02d}:00:00 GMT</pubDate><description>{html.escape(s.paragraphs[0][:200])}"
        f"</description></item>"
        for i, (url, s) in enumerate(entries)
    )
    return (
        f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
        f"<title>Feed {feed}</title><link>http://example.org/</link>{body}"
        f"</channel></rss>"
    ).encode(), "application/rss+xml"


def _tiny_rss(n: int) -> bytes:
    return (
        f"<?xml version='1.0'?><rss version='2.0'><channel><title>Poll {n}</title>"
        f"<link>http://example.org/{n}</link><description>quiet feed</description>"
        f"</channel></rss>"
    ).encode()


def _serve(spec: FarmSpec, port: int, ready: multiprocessing.synchronize.Event) -> None:
    content = FarmContent(spec, port)
    latency = spec.latency
    faulted: set[str] = set()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if latency[1] and not path.startswith("/poll"):
            await asyncio.sleep(random.uniform(*latency))
        known = path in content.feeds or path in content.pages
        if known and path not in faulted and is_faulty(path, spec.fault_rate):
            faulted.add(path)
            return fault_response(path)
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        if path.startswith("/poll-same/"):
            body, media = content.feeds[path.replace("/poll-same/", "/poll/")]
            return web.Response(body=body, content_type=media)  # no validators: same body
        if path.startswith("/poll/"):
            etag = f'"p{path}"'
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            body, media = content.feeds[path]
            return web.Response(body=body, content_type=media, headers={"ETag": etag})
        if path in content.feeds:
            etag = f'"f{path}"'
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            body, media = content.feeds[path]
            return web.Response(body=body, content_type=media, headers={"ETag": etag})
        if path in content.pages:
            return web.Response(body=content.pages[path], content_type="text/html", charset="utf-8")
        return web.Response(status=404)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host in range(spec.hosts):
            await web.TCPSite(runner, host_address(host), port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class FarmServer:
    """The farm in its own process, so that its CPU is not counted as the ingestor's."""

    def __init__(self, spec: FarmSpec) -> None:
        self.spec = spec
        self.port = spec.port or _free_port()
        self._process: multiprocessing.Process | None = None

    def __enter__(self) -> FarmContent:
        ready = multiprocessing.get_context("fork").Event()
        self._process = multiprocessing.get_context("fork").Process(
            target=_serve, args=(self.spec, self.port, ready), daemon=True
        )
        self._process.start()
        if not ready.wait(120):
            raise RuntimeError("the feed farm did not start")
        return FarmContent(self.spec, self.port)

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host_address(0), 0))
        return sock.getsockname()[1]
