"""Small generated worlds on loopback, for tests/test_generated_worlds.py: a few hosts
(127.0.0.2 and up), feeds in three formats, article pages, and for every feed and page a
schedule of answers, one per request: what real servers do on a bad day (500, 429 and 503
with Retry-After in seconds or as an HTTP date, a reset, a trickle, silence, a body over
the cap, malformed XML, 301 to another host with relative links, 410, a soft 404, a PDF).

A `World` is plain data (hypothesis draws it); `WorldServer` serves it and writes down
every request and answer, so that the promises can be checked against what the servers
really did; `check_promises` checks them against the output, the journal and `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import article_html, distinct_story

# Answers that are failures served (what `status` must count).
FAILURES = {"500", "429s", "503d", "reset", "silent", "trickle", "huge", "malformed", "gone"}
PAGE_FAILURES = {"500", "429s", "503d", "reset", "silent", "trickle", "huge", "404", "pdf"}
# Answers that ask the client to wait, and for how long (seconds).
WAITS = {"429s": 2, "503d": 2}
FEED_ANSWERS = ("ok", "500", "429s", "503d", "reset", "silent", "trickle", "huge", "malformed")
PAGE_ANSWERS = (
    "ok", "500", "429s", "503d", "reset", "silent", "trickle", "huge", "404", "soft404", "pdf",
    "redirect",
)  # fmt: skip
INTERNAL_HOST = "127.0.0.250"


@dataclass(frozen=True)
class Page:
    host: int
    schedule: tuple[str, ...] = ()  # the first requests' answers
    rest: str = "ok"  # every later request's answer


@dataclass(frozen=True)
class Feed:
    host: int
    fmt: str  # rss | atom | json
    pages: tuple[int, ...]
    schedule: tuple[str, ...] = ()
    rest: str = "ok"
    relative: bool = False  # items link relative to the site (the channel link)
    moved_to: int | None = None  # answers 301 to this host's copy, for good
    gone: bool = False  # answers 410 from the first request on
    internal_item: bool = False  # one item links an internal address (never fetched)


@dataclass(frozen=True)
class World:
    hosts: int
    feeds: tuple[Feed, ...]
    pages: tuple[Page, ...]
    retries: int = 1
    updated_page: int | None = None  # the second run: this page's body and date change
    added_page: bool = False  # the second run: a new item in the first feed
    kill_second_run: bool = False  # the second run is killed -9 at its first page request
    daemon: bool = False  # then the daemon runs a while, and is stopped by SIGTERM

    def settings(self) -> dict[str, Any]:
        return {
            "http": {
                "retries": self.retries,
                "retry_base_delay": "0.05s",
                "total_timeout": "2s",
                "article_timeout": "2s",
                "connect_timeout": "1s",
                "read_timeout": "2s",
                "per_host_connections": 1,
                "max_feed_bytes": 256 * 1024,
                "max_article_bytes": 512 * 1024,
                "allowed_networks": ["127.0.0.0/25"],
            },
            "pipeline": {
                "once_max_wait": "4s",
                "article_retry_delay": "0.5s",
                "max_article_attempts": 3,
                "shutdown_grace": "1s",
            },
            "dedup": {"updates": True},
            "extraction": {"workers": 1},
            # The daemon polls every few seconds (errors back off from the interval).
            "schedule": {
                "interval": "3s",
                "min_interval": "1s",
                "max_error_backoff": "6s",
                "tick": "0.2s",
            },
        }

    def pass_bound(self) -> float:
        """The README's bound on a pass, for these settings: the feeds' polls end within
        once_max_wait (plus a request's total_timeout), the articles within once_max_wait
        more (plus one article_timeout per attempt of a page in flight), and start-up and
        the work itself on top (generous: the machine may be busy)."""
        once, total, article, attempts = 4.0, 2.0, 2.0, 3
        return 2 * once + 2 * total + attempts * article + 30.0


@dataclass
class Request:
    at: float
    host: int
    path: str
    answer: str
    ended: float = 0.0


@dataclass
class WorldServer:
    world: World
    base_port: int = 0
    requests: list[Request] = field(default_factory=list)
    internal_hits: int = 0
    listed: set[int] = field(default_factory=set)  # pages in a feed body served whole
    # Each page's record before the second run's changes (set by the test).
    written_before_change: dict[int, dict] = field(default_factory=dict)
    version: int = 1  # the second run's changes are version 2
    first_page_request: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    _servers: list[TestServer] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)
    _bases: list[str] = field(default_factory=list)

    # --- addresses ---

    def base(self, host: int) -> str:
        return self._bases[host]

    def feed_url(self, n: int) -> str:
        feed = self.world.feeds[n]
        return f"{self.base(feed.host)}/feeds/{n}.{'json' if feed.fmt == 'json' else 'xml'}"

    def page_url(self, n: int) -> str:
        return f"{self.base(self.world.pages[n].host)}/news/{n}.html"

    def page_paths(self, n: int) -> set[str]:
        return {f"/news/{n}.html", f"/real/{n}.html"}

    def pages_of(self, n: int) -> tuple[int, ...]:
        extra = (
            (len(self.world.pages),)
            if n == 0 and self.version > 1 and self.world.added_page
            else ()
        )
        return self.world.feeds[n].pages + extra

    # --- lifecycle ---

    async def start(self) -> None:
        first = None
        for n in range(self.world.hosts):
            app = web.Application()
            app.router.add_get("/{path:.*}", self._handler(n))
            server = TestServer(app, host=f"127.0.0.{2 + n}", port=first or 0)
            await server.start_server()
            first = first or server.port
            self._servers.append(server)
            self._bases.append(f"http://127.0.0.{2 + n}:{server.port}")
        internal = web.Application()
        internal.router.add_get("/{path:.*}", self._internal)
        server = TestServer(internal, host=INTERNAL_HOST, port=first)
        await server.start_server()
        self._servers.append(server)

    async def close(self) -> None:
        self.closing.set()
        for server in self._servers:
            await server.close()

    async def _internal(self, request: web.Request) -> web.Response:
        self.internal_hits += 1
        return web.Response(text="secret")

    # --- answers ---

    def _handler(self, host: int):
        async def handle(request: web.Request) -> web.StreamResponse:
            path = request.path
            if path == "/robots.txt":
                return web.Response(text="User-agent: *\nAllow: /\n")
            resource, kind = self._resource(host, path)
            if resource is None:
                return web.Response(status=404)
            count = self._counts.get(resource, 0)
            self._counts[resource] = count + 1
            answer = self._answer(resource, count)
            entry = Request(time.time(), host, path, answer)
            self.requests.append(entry)
            if kind == "page":
                self.first_page_request.set()
            try:
                return await self._respond(request, resource, kind, answer)
            finally:
                entry.ended = time.time()

        return handle

    def _resource(self, host: int, path: str) -> tuple[str | None, str]:
        """'feed:N', 'moved:N' or 'page:N' for the path on this host, else None."""
        parts = path.strip("/").split("/")
        if len(parts) != 2:
            return None, ""
        folder, name = parts
        stem = name.split(".")[0]
        if not stem.isdigit():
            return None, ""
        n = int(stem)
        if folder == "feeds" and n < len(self.world.feeds) and self.world.feeds[n].host == host:
            return f"feed:{n}", "feed"
        if folder == "moved" and n < len(self.world.feeds) and self.world.feeds[n].moved_to == host:
            return f"moved:{n}", "feed"
        pages = len(self.world.pages) + (1 if self.world.added_page else 0)
        if folder in ("news", "real") and n < pages and self._page_host(n) == host:
            return (f"page:{n}" if folder == "news" else f"real:{n}"), "page"
        return None, ""

    def _page_host(self, n: int) -> int:
        return self.world.pages[n].host if n < len(self.world.pages) else 0

    def _answer(self, resource: str, count: int) -> str:
        kind, n = resource.split(":")
        index = int(n)
        if kind == "real":
            return "ok"
        if kind == "moved":
            return self._scheduled(
                self.world.feeds[index].schedule, self.world.feeds[index].rest, count
            )
        if kind == "feed":
            feed = self.world.feeds[index]
            if feed.gone:
                return "gone"
            if feed.moved_to is not None:
                return "moved"
            return self._scheduled(feed.schedule, feed.rest, count)
        if index >= len(self.world.pages):
            return "ok"
        page = self.world.pages[index]
        return self._scheduled(page.schedule, page.rest, count)

    @staticmethod
    def _scheduled(schedule: tuple[str, ...], rest: str, count: int) -> str:
        return schedule[count] if count < len(schedule) else rest

    async def _respond(
        self, request: web.Request, resource: str, kind: str, answer: str
    ) -> web.StreamResponse:
        n = int(resource.split(":")[1])
        if answer == "silent":
            await self._until_closing(10.0)
            return web.Response(status=504)
        if answer in ("reset", "trickle", "huge"):
            return await self._stream(request, answer)
        refusal = self._refusal(answer, n)
        if refusal is not None:
            return refusal
        if answer == "pdf":
            return web.Response(body=b"%PDF-1.4\n" + bytes(range(256)) * 16)
        if answer == "soft404":
            html = (
                "<html><head><title>Page not found</title></head><body><h1>Sorry</h1>"
                "<p>That page has moved or never existed. Try the search.</p></body></html>"
            )
            return web.Response(text=html, content_type="text/html")
        if kind == "feed":
            return self._feed(request, n, malformed=answer == "malformed")
        return web.Response(text=self._page_html(n), content_type="text/html")

    def _refusal(self, answer: str, n: int) -> web.Response | None:
        """An answer without a body worth the name: an error status or a redirect."""
        if answer == "500":
            return web.Response(status=500)
        if answer == "gone":
            return web.Response(status=410)
        if answer == "404":
            return web.Response(status=404, text="<html><title>Not found</title></html>")
        if answer == "429s":
            return web.Response(status=429, headers={"Retry-After": str(WAITS["429s"])})
        if answer == "503d":
            now = time.time()
            headers = {
                "Retry-After": email.utils.formatdate(int(now) + 1 + WAITS["503d"], usegmt=True),
                "Date": email.utils.formatdate(now, usegmt=True),
            }
            return web.Response(status=503, headers=headers)
        if answer == "moved":
            feed = self.world.feeds[n]
            assert feed.moved_to is not None
            target = f"{self.base(feed.moved_to)}/moved/{n}.xml"
            return web.Response(status=301, headers={"Location": target})
        if answer == "redirect":
            target = f"{self.base(self._page_host(n))}/real/{n}.html"
            return web.Response(status=302, headers={"Location": target})
        return None

    async def _until_closing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), seconds)

    async def _stream(self, request: web.Request, answer: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        if answer == "reset":
            response.content_length = 10_000
        await response.prepare(request)
        try:
            if answer == "reset":
                await response.write(b"<html>" + b" " * 2000)
                assert request.transport is not None
                request.transport.abort()
                return response
            if answer == "huge":
                chunk = b"<p>" + b"x" * 65_530 + b"</p>"
                for _ in range(20):  # 1.3 MB, over both caps
                    await response.write(chunk)
                return response
            for _ in range(24):  # a byte every half second, for 12 s at most
                if self.closing.is_set():
                    break
                await response.write(b" ")
                await asyncio.sleep(0.5)
        except (ConnectionError, RuntimeError):
            pass  # the client gave up (what it should do)
        return response

    # --- documents ---

    def page_title(self, n: int) -> str:
        return f"Story {n} from the harbour" + (" (updated)" if self._updated(n) else "")

    def _updated(self, n: int) -> bool:
        return self.version > 1 and self.world.updated_page == n

    def page_seed(self, n: int) -> int:
        return 1000 + n + (500 if self._updated(n) else 0)

    def _page_html(self, n: int) -> str:
        return article_html(self.page_title(n), distinct_story(self.page_seed(n)))

    def page_date(self, n: int) -> float:
        return 1_700_000_000.0 + n * 3600 + (86400.0 if self._updated(n) else 0.0)

    def item_link(self, feed_n: int, page_n: int) -> str:
        feed = self.world.feeds[feed_n]
        if feed.relative and self._page_host(page_n) == feed.host:
            return f"/news/{page_n}.html"  # the site's: its channel link names it
        return f"{self.base(self._page_host(page_n))}/news/{page_n}.html"

    def _feed(self, request: web.Request, n: int, malformed: bool) -> web.Response:
        feed = self.world.feeds[n]
        body = self._feed_body(n, feed)
        if malformed:
            # What a feed URL serves on a bad day: a maintenance page, or JSON cut short.
            body = (
                body[: len(body) // 2]
                if feed.fmt == "json"
                else b"<html><body><h1>Down for maintenance</h1></body></html>"
            )
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if not malformed and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        if not malformed:
            self.listed.update(self.pages_of(n))
        media = "application/feed+json" if feed.fmt == "json" else "application/xml"
        return web.Response(body=body, headers={"ETag": etag, "Content-Type": media})

    def _feed_body(self, n: int, feed: Feed) -> bytes:
        site = self.base(feed.host)
        items = [
            (p, self.page_title(p), self.item_link(n, p), self.page_date(p))
            for p in self.pages_of(n)
        ]
        if feed.internal_item:
            items.append(
                (-1, "Internal memo", f"http://{INTERNAL_HOST}/internal/memo", 1_700_000_000.0)
            )
        if feed.fmt == "json":
            data = {
                "version": "https://jsonfeed.org/version/1.1",
                "title": f"Feed {n}",
                "home_page_url": site + "/",
                "items": [
                    {
                        "id": f"item-{p}",
                        "url": link,
                        "title": title,
                        "date_published": _iso(1_700_000_000.0 + max(p, 0) * 3600),
                        "date_modified": _iso(date),
                        "summary": f"Summary of {title}",
                    }
                    for p, title, link, date in items
                ],
            }
            return json.dumps(data).encode()
        if feed.fmt == "atom":
            entries = "".join(
                f"<entry><id>urn:item:{p}</id><title>{title}</title><link href='{link}'/>"
                f"<updated>{_iso(date)}</updated><summary>Summary of {title}</summary></entry>"
                for p, title, link, date in items
            )
            return (
                f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
                f"<title>Feed {n}</title><link href='{site}/'/><id>urn:feed:{n}</id>"
                f"<updated>{_iso(1_700_000_000)}</updated>{entries}</feed>"
            ).encode()
        rows = "".join(
            f"<item><title>{title}</title><link>{link}</link>"
            f"<guid isPermaLink='false'>item-{p}</guid>"
            f"<pubDate>{email.utils.formatdate(date, usegmt=True)}</pubDate>"
            f"<description>Summary of {title}</description></item>"
            for p, title, link, date in items
        )
        return (
            f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Feed {n}</title><link>{site}/</link>{rows}</channel></rss>"
        ).encode()


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def write_config(world_server: WorldServer, root: Path) -> Path:
    import yaml

    config = {
        "output": {"dir": str(root / "out")},
        "state": {"path": str(root / "state" / "state.db")},
        **world_server.world.settings(),
        "feeds": [{"url": world_server.feed_url(n)} for n in range(len(world_server.world.feeds))],
    }
    path = root / "ingestor.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
