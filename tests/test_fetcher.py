"""The fetcher against real aiohttp servers on loopback (no mocks of aiohttp)."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import itertools
import time
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import brotli
import pytest
from aiohttp import web

from ingestor.errors import (
    BlockedAddressError,
    FetchTimeoutError,
    GoneError,
    HostBackoffError,
    HTTPStatusError,
    RateLimitedError,
    RedirectError,
    RobotsDisallowedError,
    TooLargeError,
    UnsupportedContentError,
)
from ingestor.http.fetcher import Fetcher
from ingestor.http.netguard import AddressPolicy
from ingestor.http.responses import parse_freshness, parse_retry_after
from ingestor.parse.decoding import decode_document
from tests.conftest import loopback_http


def respond(**kwargs):
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(**kwargs)

    return handler


def counting_app() -> tuple[web.Application, dict[str, int]]:
    hits: dict[str, int] = {}
    app = web.Application()

    @web.middleware
    async def count(request: web.Request, handler):
        hits[request.path] = hits.get(request.path, 0) + 1
        return await handler(request)

    app.middlewares.append(count)
    return app, hits


async def test_conditional_get_sends_validators_and_reports_304(serve):
    app, hits = counting_app()
    seen_headers: list[dict[str, str]] = []

    async def feed(request: web.Request) -> web.Response:
        seen_headers.append(dict(request.headers))
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304)
        return web.Response(
            body=b"<rss/>",
            headers={
                "ETag": '"v1"',
                "Last-Modified": "Sun, 03 Dec 2023 10:00:00 GMT",
                "Cache-Control": "public, max-age=300",
            },
        )

    app.router.add_get("/feed", feed)
    base = await serve(app)
    async with Fetcher(loopback_http()) as fetcher:
        first = await fetcher.fetch_feed(f"{base}/feed")
        second = await fetcher.fetch_feed(f"{base}/feed", first.etag, first.last_modified)
    assert first.status == 200 and first.body == b"<rss/>"
    assert first.etag == '"v1"' and first.last_modified.startswith("Sun, 03 Dec 2023")
    assert first.max_age == 300
    assert second.not_modified and second.body == b""
    assert seen_headers[1]["If-None-Match"] == '"v1"'
    assert seen_headers[1]["If-Modified-Since"] == "Sun, 03 Dec 2023 10:00:00 GMT"
    assert seen_headers[0]["User-Agent"].startswith("ingestor/")
    assert hits["/feed"] == 2


async def test_permanent_and_temporary_redirects(serve):
    app, _hits = counting_app()

    async def moved(_r: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/v2")

    async def v2(_r: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/v3")

    async def v3(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def found(_r: web.Request) -> web.Response:
        raise web.HTTPFound("/v3")

    app.router.add_get("/old", moved)
    app.router.add_get("/v2", v2)
    app.router.add_get("/v3", v3)
    app.router.add_get("/tmp", found)
    base = await serve(app)
    async with Fetcher(loopback_http()) as fetcher:
        chain = await fetcher.fetch_feed(f"{base}/old")
        temporary = await fetcher.fetch_feed(f"{base}/tmp")
    # 301 then 307: the permanent move is to /v2, not to where the temporary hop led.
    assert chain.final_url == f"{base}/v3"
    assert chain.permanent_url == f"{base}/v2"
    assert temporary.final_url == f"{base}/v3" and temporary.permanent_url is None


async def test_redirect_loop_and_too_many_hops_are_errors(serve):
    app, hits = counting_app()

    async def a(_r: web.Request) -> web.Response:
        raise web.HTTPFound("/b")

    async def b(_r: web.Request) -> web.Response:
        raise web.HTTPFound("/a")

    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/hop/{n + 1}")

    app.router.add_get("/a", a)
    app.router.add_get("/b", b)
    app.router.add_get("/hop/{n}", hop)
    base = await serve(app)
    async with Fetcher(loopback_http()) as fetcher:
        with pytest.raises(RedirectError, match="redirect loop"):
            await asyncio.wait_for(fetcher.fetch_feed(f"{base}/a"), 5)
        with pytest.raises(RedirectError, match="more than 5 redirects"):
            await asyncio.wait_for(fetcher.fetch_feed(f"{base}/hop/0"), 5)
    assert hits["/a"] == 1 and hits["/b"] == 1
    assert sum(v for k, v in hits.items() if k.startswith("/hop/")) == 6


async def test_retry_after_blocks_every_request_to_that_host(serve):
    app, hits = counting_app()

    async def limited(_r: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "30"})

    async def other(_r: web.Request) -> web.Response:
        return web.Response(text="fine")

    app.router.add_get("/feed", limited)
    app.router.add_get("/article", other)
    base = await serve(app)
    other_host = await serve(app, host="127.0.0.2")
    http = loopback_http(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    async with Fetcher(http) as fetcher:
        with pytest.raises(RateLimitedError) as info:
            await fetcher.fetch_feed(f"{base}/feed")
        assert info.value.not_before >= time.time() + 25
        with pytest.raises(HostBackoffError):
            await fetcher.fetch_article(f"{base}/article", respect_robots=False)
        with pytest.raises(HostBackoffError):
            await fetcher.fetch_feed(f"{base}/feed")
        # Another host is not affected.
        assert (await fetcher.fetch_feed(f"{other_host}/article")).body == b"fine"
    assert hits["/feed"] == 1
    assert hits["/article"] == 1  # only the request to the other host


def test_retry_after_formats():
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == now + 120
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(minutes=5), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(now + 300)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("99999999", now) == now + 86400  # capped at a day


def test_freshness_from_cache_control_and_expires():
    now = 1_700_000_000.0
    assert parse_freshness({"Cache-Control": "public, max-age=600"}, now) == 600
    assert parse_freshness({"Cache-Control": "no-cache"}, now) == 0
    expires = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    assert parse_freshness({"Expires": expires}, now) == pytest.approx(90)
    assert parse_freshness({}, now) is None


async def test_transient_errors_are_retried_then_succeed(serve):
    app, hits = counting_app()

    async def flaky(_r: web.Request) -> web.Response:
        if hits["/flaky"] < 3:
            return web.Response(status=502)
        return web.Response(text="at last")

    app.router.add_get("/flaky", flaky)
    base = await serve(app)
    async with Fetcher(loopback_http(retries=2, retry_base_delay=0.01)) as fetcher:
        result = await fetcher.fetch_feed(f"{base}/flaky")
    assert result.body == b"at last" and hits["/flaky"] == 3


async def test_404_is_not_retried_and_410_is_gone(serve):
    app, hits = counting_app()
    app.router.add_get("/missing", respond(status=404))
    app.router.add_get("/gone", respond(status=410))
    base = await serve(app)
    async with Fetcher(loopback_http(retries=3, retry_base_delay=0.01)) as fetcher:
        with pytest.raises(HTTPStatusError) as missing:
            await fetcher.fetch_feed(f"{base}/missing")
        with pytest.raises(GoneError):
            await fetcher.fetch_feed(f"{base}/gone")
    assert missing.value.status == 404 and "HTTP 404" in str(missing.value)
    assert f"{base}/missing" in str(missing.value)
    assert hits["/missing"] == 1 and hits["/gone"] == 1


async def test_per_host_concurrency_cap_and_minimum_delay(serve):
    app, _hits = counting_app()
    active = {"now": 0, "max": 0}
    starts: list[float] = []

    async def slow(_r: web.Request) -> web.Response:
        starts.append(time.monotonic())
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.1)
        active["now"] -= 1
        return web.Response(text="x")

    app.router.add_get("/slow/{n}", slow)
    base = await serve(app)
    async with Fetcher(loopback_http(per_host_connections=2)) as fetcher:
        await asyncio.gather(*(fetcher.fetch_feed(f"{base}/slow/{n}") for n in range(8)))
    assert active["max"] == 2

    starts.clear()
    async with Fetcher(loopback_http(per_host_connections=4, per_host_delay=0.15)) as fetcher:
        await asyncio.gather(*(fetcher.fetch_feed(f"{base}/slow/{n}") for n in range(4)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.13


async def test_body_cap_with_and_without_content_length(serve):
    app, _hits = counting_app()
    big = b"<rss>" + b"x" * (3 * 1024 * 1024) + b"</rss>"

    async def declared(_r: web.Request) -> web.Response:
        return web.Response(body=big)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"y" * 65536)
        return response

    app.router.add_get("/declared", declared)
    app.router.add_get("/chunked", chunked)
    base = await serve(app)
    async with Fetcher(loopback_http(max_feed_bytes=1024 * 1024)) as fetcher:
        with pytest.raises(TooLargeError, match="cap of 1048576"):
            await fetcher.fetch_feed(f"{base}/declared")
        with pytest.raises(TooLargeError):
            await fetcher.fetch_feed(f"{base}/chunked")


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def test_gzip_bomb_is_stopped_at_the_decompressed_cap(serve):
    app, _hits = counting_app()
    produced = {"inflated": 0}

    async def bomb(request: web.Request) -> web.StreamResponse:
        # 1 GiB of zeros, gzip-compressed on the fly (about 1 MB on the wire).
        response = web.StreamResponse(
            headers={"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"}
        )
        await response.prepare(request)
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(1024 * 1024)
        try:
            for _ in range(1024):
                produced["inflated"] += len(zeros)
                chunk = compressor.compress(zeros)
                if chunk:
                    await response.write(chunk)
            await response.write(compressor.flush())
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    app.router.add_get("/bomb", bomb)
    base = await serve(app)
    before = _rss_bytes()
    async with Fetcher(loopback_http(max_feed_bytes=5 * 1024 * 1024)) as fetcher:
        with pytest.raises(TooLargeError, match="decoded"):
            await fetcher.fetch_feed(f"{base}/bomb")
    grown = _rss_bytes() - before
    assert grown < 100 * 1024 * 1024, f"memory grew by {grown / 1e6:.0f} MB"


async def test_brotli_and_deflate_bodies_are_decoded(serve):
    app, _hits = counting_app()
    text = "<rss><channel><title>Über</title></channel></rss>".encode()

    async def br(_r: web.Request) -> web.Response:
        return web.Response(body=brotli.compress(text), headers={"Content-Encoding": "br"})

    async def gz(_r: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(text), headers={"Content-Encoding": "gzip"})

    app.router.add_get("/br", br)
    app.router.add_get("/gz", gz)
    base = await serve(app)
    async with Fetcher(loopback_http()) as fetcher:
        assert (await fetcher.fetch_feed(f"{base}/br")).body == text
        assert (await fetcher.fetch_feed(f"{base}/gz")).body == text


async def test_trickling_server_is_cut_off_by_the_total_timeout(serve):
    app, _hits = counting_app()

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(60):
                await response.write(b"<")
                await asyncio.sleep(0.25)
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    app.router.add_get("/trickle", trickle)
    base = await serve(app)
    started = time.monotonic()
    async with Fetcher(loopback_http(total_timeout=1.5, read_timeout=30)) as fetcher:
        with pytest.raises(FetchTimeoutError, match="timed out"):
            await fetcher.fetch_feed(f"{base}/trickle")
    assert time.monotonic() - started < 5


async def test_ssrf_guard_blocks_loopback_outside_allowed_networks(serve):
    inside, inside_hits = counting_app()
    target, target_hits = counting_app()

    async def secret(_r: web.Request) -> web.Response:
        return web.Response(text="internal secret")

    target.router.add_get("/secret", secret)
    target_base = await serve(target, host="127.0.0.2")

    async def bounce(_r: web.Request) -> web.Response:
        raise web.HTTPFound(f"{target_base}/secret")

    inside.router.add_get("/bounce", bounce)
    inside_base = await serve(inside, host="127.0.0.1")
    port = target_base.rsplit(":", 1)[1]
    async with Fetcher(loopback_http()) as fetcher:  # allows 127.0.0.1/32 only
        with pytest.raises(BlockedAddressError, match="SSRF guard"):
            await fetcher.fetch_article(f"{target_base}/secret", respect_robots=False)
        with pytest.raises(BlockedAddressError):
            await fetcher.fetch_article(f"{inside_base}/bounce", respect_robots=False)
        with pytest.raises(BlockedAddressError):
            await fetcher.fetch_article(
                f"http://[::ffff:127.0.0.2]:{port}/secret", respect_robots=False
            )
        with pytest.raises(BlockedAddressError, match="scheme"):
            await fetcher.fetch_article("file:///etc/passwd", respect_robots=False)
    assert target_hits == {}
    assert inside_hits["/bounce"] == 1


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("127.9.9.9", False),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
    ],
)
def test_address_policy(address, allowed):
    assert AddressPolicy().allows(address) is allowed


def test_address_policy_allowed_networks():
    policy = AddressPolicy([ipaddress.ip_network("10.0.0.0/8")])
    assert policy.allows("10.2.3.4") and policy.allows("::ffff:10.2.3.4")
    assert not policy.allows("192.168.0.1")


async def test_robots_txt_is_cached_and_obeyed_for_articles(serve):
    app, hits = counting_app()
    app.router.add_get("/robots.txt", respond(text="User-agent: *\nDisallow: /private/\n"))
    app.router.add_get("/private/a", respond(text="<html>no</html>", content_type="text/html"))
    app.router.add_get("/public/{n}", respond(text="<html>yes</html>", content_type="text/html"))
    base = await serve(app)
    async with Fetcher(loopback_http()) as fetcher:
        with pytest.raises(RobotsDisallowedError):
            await fetcher.fetch_article(f"{base}/private/a")
        for n in range(3):
            await fetcher.fetch_article(f"{base}/public/{n}")
        # A feed URL is fetched as configured, whatever robots.txt says.
        await fetcher.fetch_feed(f"{base}/private/a")
    assert hits["/robots.txt"] == 1
    assert hits["/private/a"] == 1


async def test_non_html_articles_are_skipped(serve):
    app, _hits = counting_app()
    app.router.add_get("/doc.pdf", respond(body=b"%PDF-1.7 ...", content_type="application/pdf"))
    app.router.add_get(
        "/blob", respond(body=b"\x89PNG\r\n\x1a\n\x00\x00", content_type="text/html")
    )
    base = await serve(app)
    async with Fetcher(loopback_http()) as fetcher:
        with pytest.raises(UnsupportedContentError, match="application/pdf"):
            await fetcher.fetch_article(f"{base}/doc.pdf", respect_robots=False)
        with pytest.raises(UnsupportedContentError):
            await fetcher.fetch_article(f"{base}/blob", respect_robots=False)


def test_charset_detection_order():
    text = "Élysée, déjà vu, naïve café"
    assert decode_document(text.encode("cp1252"), "windows-1252")[0] == text
    meta = f'<meta charset="iso-8859-1"><p>{text}</p>'.encode("latin-1")
    assert text in decode_document(meta, None)[0]
    # Declared latin-1 but really UTF-8 (the common lie), and the reverse.
    assert decode_document(text.encode("utf-8"), "iso-8859-1")[0] == text
    assert decode_document(text.encode("latin-1"), "utf-8")[0] == text
    russian = "Привет, как дела? Это тестовая строка на русском языке."
    assert decode_document(russian.encode("cp1251"), None)[0] == russian
    bom = "\ufeff".encode() + text.encode("utf-8")
    assert decode_document(bom, None)[0].lstrip("\ufeff") == text


async def test_robots_crawl_delay_spaces_requests_to_that_host(serve):
    app, _hits = counting_app()
    starts: list[float] = []

    async def page(_r: web.Request) -> web.Response:
        starts.append(time.monotonic())
        return web.Response(text="<html>ok</html>", content_type="text/html")

    # urllib.robotparser reads whole seconds only.
    app.router.add_get("/robots.txt", respond(text="User-agent: *\nCrawl-delay: 1\n"))
    app.router.add_get("/p/{n}", page)
    base = await serve(app)
    async with Fetcher(loopback_http(per_host_connections=4)) as fetcher:
        await asyncio.gather(*(fetcher.fetch_article(f"{base}/p/{n}") for n in range(3)))
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert len(gaps) == 2 and min(gaps) >= 0.95, gaps
