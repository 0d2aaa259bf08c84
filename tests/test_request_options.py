"""Per-feed request options (headers, user_agent, proxy, timeout, basic auth) and the
reasons a site refuses us, through the real `ingestor` command on loopback servers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from tests.conftest import article_html, distinct_story, rss

SECRET = "pa55-w0rd-never-logged"
TOKEN = "tok-3c9d-never-logged"


def ingestor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def write_config(path: Path, feeds: str) -> None:
    path.write_text(
        "output:\n  dir: out\nstate:\n  path: state/ingestor.db\n"
        "http:\n  allowed_networks: ['127.0.0.0/8']\n  retries: 0\n"
        "extraction:\n  workers: 1\n"
        f"feeds:\n{feeds}"
    )


class PrivateSite:
    """A members-only feed: basic auth, an API key header and a browser user agent, or
    401/403; its article page is on the same host, an external one on another host."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.base = ""
        self.other = ""
        self.app = web.Application()
        self.app.router.add_get("/feed.xml", self.feed)
        self.app.router.add_get("/a/1.html", self.page)
        self.app.router.add_get("/robots.txt", self.robots)

    async def robots(self, _request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n")

    def _allowed(self, request: web.Request) -> web.Response | None:
        self.seen.append(dict(request.headers))
        expected = base64.b64encode(f"reader:{SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="m"'})
        if request.headers.get("X-Api-Key") != TOKEN:
            return web.Response(status=403)
        if "Mozilla" not in request.headers.get("User-Agent", ""):
            return web.Response(status=403)
        return None

    async def feed(self, request: web.Request) -> web.Response:
        refused = self._allowed(request)
        if refused is not None:
            return refused
        items = [
            {"title": "Members story", "link": f"{self.base}/a/1.html", "guid": "m1"},
            {"title": "Elsewhere story", "link": f"{self.other}/b/1.html", "guid": "m2"},
        ]
        return web.Response(body=rss(items), content_type="application/rss+xml")

    async def page(self, request: web.Request) -> web.Response:
        refused = self._allowed(request)
        if refused is not None:
            return refused
        html = article_html("Members story", distinct_story(501))
        return web.Response(text=html, content_type="text/html")


class OtherSite:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self.any)

    async def any(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path, **request.headers})
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        html = article_html("Elsewhere story", distinct_story(502))
        return web.Response(text=html, content_type="text/html")


async def test_per_feed_credentials_headers_and_user_agent_reach_only_the_feeds_host(
    tmp_path, serve
):
    site, other = PrivateSite(), OtherSite()
    site.base = await serve(site.app, host="127.0.0.21")
    site.other = await serve(other.app, host="127.0.0.22")
    config = tmp_path / "ingestor.yaml"
    write_config(
        config,
        f"  - url: {site.base}/feed.xml\n"
        "    user_agent: 'Mozilla/5.0 (compatible; MembersReader)'\n"
        "    headers: {X-Api-Key: '${API_KEY}'}\n"
        "    timeout: 20s\n"
        "    auth: {username: reader, password: '${FEED_PASSWORD}'}\n",
    )
    env = {"FEED_PASSWORD": SECRET, "API_KEY": TOKEN}
    check = await asyncio.to_thread(ingestor, "check-config", "--config", str(config), env=env)
    assert check.returncode == 0, check.stderr
    run = await asyncio.to_thread(
        ingestor, "run", "--config", str(config), "--once", "--log-level", "DEBUG", env=env
    )
    assert run.returncode == 0, run.stderr
    assert "articles written: 2" in run.stdout, run.stdout + run.stderr
    records = {
        r["title"]: r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "out").rglob("*.json"))
    }
    assert records["Members story"]["extraction_method"] == "trafilatura"
    assert records["Elsewhere story"]["extraction_method"] == "trafilatura"
    # The other host got the feed's user agent, but never its credentials or its key.
    assert other.seen and all("Authorization" not in h and "X-Api-Key" not in h for h in other.seen)
    # robots.txt is read with the daemon's own agent, whose rules it obeys.
    assert all("MembersReader" in h["User-Agent"] for h in other.seen if h["path"] != "/robots.txt")
    status = await asyncio.to_thread(ingestor, "status", "--config", str(config), env=env)
    for text in (run.stdout, run.stderr, status.stdout, status.stderr, check.stdout):
        assert SECRET not in text and TOKEN not in text


async def test_refusals_are_explained_in_the_log_and_in_status(tmp_path, serve):
    site = PrivateSite()

    async def challenge(_request: web.Request) -> web.Response:
        page = (
            "<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
            "<body><noscript>Enable JavaScript and cookies to continue</noscript></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def home(_request: web.Request) -> web.Response:
        page = (
            "<html><head><title>The Quay Gazette</title>"
            '<link rel="alternate" type="application/rss+xml" href="/news/rss.xml">'
            "</head><body>News</body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    site.app.router.add_get("/challenge", challenge)
    site.app.router.add_get("/", home)
    site.base = await serve(site.app, host="127.0.0.23")
    config = tmp_path / "ingestor.yaml"
    write_config(
        config,
        f"  - url: {site.base}/feed.xml\n"  # no credentials: 401
        f"  - url: {site.base}/feed.xml?ua\n"  # credentials and key, default agent: 403
        "    auth: {username: reader, password: '" + SECRET + "'}\n"
        "    headers: {X-Api-Key: '" + TOKEN + "'}\n"
        f"  - url: {site.base}/challenge\n"
        f"  - url: {site.base}/\n",
    )
    run = await asyncio.to_thread(ingestor, "run", "--config", str(config), "--once")
    assert run.returncode == 0, run.stderr
    status = await asyncio.to_thread(ingestor, "status", "--config", str(config), "--json")
    errors = {row["url"].rsplit("/", 1)[1]: row["last_error"] for row in json.loads(status.stdout)}
    assert "HTTP 401: the site wants credentials" in errors["feed.xml"]
    assert "HTTP 403: the site refuses this client; a per-feed user_agent" in errors["feed.xml?ua"]
    assert "HTML page (page title 'Just a moment...'), not a feed: a bot" in errors["challenge"]
    assert errors[""].endswith("the page names its feed: /news/rss.xml")
    for line in ("HTTP 401", "HTTP 403", "Just a moment"):
        assert line in run.stderr
    assert SECRET not in run.stderr + status.stdout and TOKEN not in run.stderr + status.stdout
    assert "Traceback" not in run.stderr


def test_check_config_names_bad_request_options_without_echoing_secrets(tmp_path):
    config = tmp_path / "ingestor.yaml"
    write_config(
        config,
        "  - url: https://members.example/feed.xml\n"
        "    headers: {'Bad Header': x, If-None-Match: y}\n"
        "    auth: {username: reader, password: 12345678}\n"
        "    proxy: socks5://proxy.example:1080\n"
        "    timeout: soon\n",
    )
    result = ingestor("check-config", "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any("feeds[0].headers: 'Bad Header' is not a valid header name" in x for x in lines)
    assert any("feeds[0].auth: password: expected a non-empty string" in x for x in lines)
    assert any("feeds[0].proxy: expected an http:// or https:// proxy URL" in x for x in lines)
    assert any("feeds[0].timeout: 'soon' is not a duration" in x for x in lines)
    assert "12345678" not in result.stderr
