"""All HTTP goes through here: one shared aiohttp session, polite and size-capped.

fetch(url) = for each attempt (transient errors retried with backoff and jitter):
               for each redirect hop (at most max_redirects, loops detected):
                 wait for a host slot (concurrency cap, min delay, Retry-After)
                 GET without following redirects; the socket factory refuses internal
                 addresses; the body is streamed and cut at its (decompressed) size cap
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDictProxy

from ingestor.config.model import HTTPConfig, RequestOptions
from ingestor.core.retrieved import RetrievedFeed, split_content_type
from ingestor.core.urls import host_key
from ingestor.errors import (
    BlockedAddressError,
    FetchError,
    FetchTimeoutError,
    GoneError,
    HostBackoffError,
    HTTPStatusError,
    RateLimitedError,
    RedirectError,
    RetryLater,
    RobotsDisallowedError,
    RobotsUnavailableError,
    TooLargeError,
    UnsupportedContentError,
)
from ingestor.http.netguard import AddressPolicy
from ingestor.http.politeness import HostLimiter
from ingestor.http.responses import (
    looks_binary,
    parse_freshness,
    parse_retry_after,
    read_capped,
    translate_error,
)
from ingestor.http.robots import RobotsCache

log = logging.getLogger(__name__)

_REDIRECTS = (301, 302, 303, 307, 308)
_PERMANENT = (301, 308)
_ROBOTS_MAX_BYTES = 512 * 1024
# A Crawl-delay above this is taken as this: a site asking for minutes between requests
# would otherwise stall every article on it for hours.
_MAX_CRAWL_DELAY = 30.0
_HTML_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "application/xml", "text/xml")
_NO_OPTIONS = RequestOptions()


@dataclass(frozen=True)
class FetchResult:
    url: str
    final_url: str
    status: int
    body: bytes = b""
    media_type: str = ""  # lower case, without parameters
    charset: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    permanent_url: str | None = None
    max_age: float | None = None
    failed_requests: int = 0  # error answers before this one (retries within the fetch)

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def retrieved(self) -> RetrievedFeed:
        """What a parser needs: the bytes, where they came from, what HTTP said they are."""
        return RetrievedFeed(self.body, self.final_url, self.media_type, self.charset)


class Fetcher:
    """Fetches feeds and article pages. Use as `async with Fetcher(config.http) as f:`."""

    def __init__(self, config: HTTPConfig, *, limiter: HostLimiter | None = None) -> None:
        self.config = config
        self.policy = AddressPolicy(config.allowed_networks)
        self.limiter = limiter or HostLimiter(config.per_host_connections, config.per_host_delay)
        self.robots = RobotsCache(self._get_robots, config.user_agent)
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()

    async def __aenter__(self) -> Fetcher:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections,
            limit_per_host=max(self.config.per_host_connections, 1) * 2,
            ttl_dns_cache=300,
            socket_factory=self.policy.socket_factory,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={
                "User-Agent": self.config.user_agent,
                "Accept-Encoding": "gzip, deflate, br",
            },
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- public API ---

    async def fetch_feed(
        self,
        url: str,
        etag: str | None = None,
        last_modified: str | None = None,
        options: RequestOptions | None = None,
    ) -> FetchResult:
        headers = {
            "Accept": "application/rss+xml, application/atom+xml, application/feed+json, "
            "application/json, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5",
        }
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        return await self.fetch(
            url, max_bytes=self.config.max_feed_bytes, headers=headers, options=options
        )

    async def fetch_article(
        self, url: str, respect_robots: bool = True, options: RequestOptions | None = None
    ) -> FetchResult:
        _check_scheme(url)
        if respect_robots:
            if not await self.robots.allowed(url):
                if self.robots.unavailable(url):
                    raise RobotsUnavailableError(
                        url,
                        "robots.txt is unavailable (server error or unreachable): "
                        "the host counts as disallowed for now, retried later",
                    )
                raise RobotsDisallowedError(url, "disallowed by robots.txt")
            crawl_delay = await self.robots.crawl_delay(url)
            if crawl_delay:
                self.limiter.set_host_delay(host_key(url), min(crawl_delay, _MAX_CRAWL_DELAY))
        result = await self.fetch(
            url,
            max_bytes=self.config.max_article_bytes,
            headers={"Accept": "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"},
            options=options,
            total_timeout=self.config.article_timeout,
        )
        media = result.media_type
        if (media and not media.startswith(_HTML_TYPES)) or looks_binary(result.body):
            what = media or "binary content"
            raise UnsupportedContentError(url, f"not an HTML page ({what}), skipped")
        return result

    async def fetch(
        self,
        url: str,
        *,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
        options: RequestOptions | None = None,
        total_timeout: float | None = None,
    ) -> FetchResult:
        """GET with redirects, retries and caps; raises a FetchError subclass on failure.
        `total_timeout` bounds each request (http.total_timeout when None); a feed's own
        `timeout` wins over both."""
        attempts = self.config.retries + 1
        options = options or _NO_OPTIONS
        budget = _Budget(options.timeout or total_timeout or self.config.total_timeout)
        failed = 0
        previous: FetchError | None = None
        for attempt in range(attempts):
            try:
                result = await self._follow_redirects(
                    url, _Ask(max_bytes, dict(headers or {}), options, budget)
                )
                return replace(result, failed_requests=failed)
            except HostBackoffError as waiting:
                if previous is None:
                    raise
                previous.cut_short_until = waiting.not_before
                raise previous from None
            except FetchError as exc:
                previous = exc
                failed += exc.failed_requests
                exc.failed_requests = failed
                # A request that ran out its whole time is not sent again at once: a
                # trickling server would hold the slot `retries` times over. The caller
                # retries it later (the frontier's backoff, the feed's next poll). Nor is
                # one whose host has since asked to wait (another feed's 429): the answer
                # this fetch got is its failure, not the wait that stopped its retry.
                timed_out = isinstance(exc, FetchTimeoutError)
                if not exc.transient or timed_out or attempt == attempts - 1:
                    raise
                delay = self.config.retry_base_delay * (2**attempt)
                delay *= self._rng.uniform(0.5, 1.5)
                host_wait = self.limiter.not_before(host_key(url))
                if host_wait > time.time() + delay:
                    exc.cut_short_until = host_wait
                    raise
                log.debug("retrying %s in %.2fs after: %s", url, delay, exc)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # --- internals ---

    async def _follow_redirects(self, url: str, ask: _Ask) -> FetchResult:
        current = url
        visited = {url}
        permanent_url: str | None = None
        still_permanent = True
        for _hop in range(self.config.max_redirects + 1):
            _check_scheme(current)
            if host_key(current) != host_key(url):
                # A feed's own headers and credentials never follow it to another host.
                ask = replace(ask, options=replace(ask.options, headers=(), auth=None))
            status, response_headers, body = await self._request(current, ask)
            if status in _REDIRECTS:
                location = response_headers.get("Location")
                if not location:
                    raise RedirectError(current, f"HTTP {status} without a Location header")
                target = urljoin(current, location.strip())
                if target in visited:
                    raise RedirectError(url, f"redirect loop at {target}")
                visited.add(target)
                if still_permanent and status in _PERMANENT:
                    permanent_url = target
                else:
                    still_permanent = False
                current = target
                continue
            return self._result(url, current, status, response_headers, body, permanent_url)
        raise RedirectError(url, f"more than {self.config.max_redirects} redirects")

    def _result(
        self,
        url: str,
        final_url: str,
        status: int,
        headers: CIMultiDictProxy[str],
        body: bytes,
        permanent_url: str | None,
    ) -> FetchResult:
        media_type, charset = split_content_type(headers.get("Content-Type"))
        return FetchResult(
            url=url,
            final_url=final_url,
            status=status,
            body=body,
            media_type=media_type,
            charset=charset,
            etag=headers.get("ETag"),
            last_modified=headers.get("Last-Modified"),
            permanent_url=permanent_url,
            max_age=parse_freshness(headers, time.time()),
        )

    async def _request(self, url: str, ask: _Ask) -> tuple[int, CIMultiDictProxy[str], bytes]:
        if self._session is None:
            raise RuntimeError("Fetcher is not open")
        max_bytes, headers, options, budget = ask.max_bytes, ask.headers, ask.options, ask.budget
        sent = {**dict(options.headers), **headers}
        if options.user_agent:
            sent["User-Agent"] = options.user_agent
        auth = options.auth
        total = budget.total
        async with self.limiter.slot(host_key(url), url), budget.spending() as left:
            if left <= 0:
                raise FetchTimeoutError(url, f"timed out (total {total:g}s)")
            timeout = aiohttp.ClientTimeout(
                total=left,
                connect=min(self.config.connect_timeout, left),
                sock_read=min(self.config.read_timeout, left),
            )
            try:
                async with self._session.get(
                    url,
                    headers=sent,
                    allow_redirects=False,
                    timeout=timeout,
                    proxy=options.proxy or self.config.proxy,
                    auth=aiohttp.BasicAuth(auth.username, auth.password) if auth else None,
                ) as response:
                    self._check_status(url, response)
                    if response.status in _REDIRECTS or response.status == 304:
                        return response.status, response.headers, b""
                    body = await read_capped(response, url, max_bytes)
                    return response.status, response.headers, body
            except FetchError:
                raise
            except Exception as exc:
                translated = translate_error(url, exc, total, self.config.read_timeout)
                if translated is None:
                    raise
                raise translated from None

    def _check_status(self, url: str, response: aiohttp.ClientResponse) -> None:
        status = response.status
        if status in (429, 503):
            not_before = parse_retry_after(
                response.headers.get("Retry-After"), time.time(), response.headers.get("Date")
            )
            if not_before is not None:
                self.limiter.defer_host(host_key(url), not_before)
                raise RateLimitedError(url, status, not_before)
        if status == 410:
            raise GoneError(url, status, "Gone")
        if status >= 400:
            raise HTTPStatusError(url, status, response.reason or "")

    async def _get_robots(self, url: str) -> tuple[int, bytes]:
        try:
            result = await self.fetch(url, max_bytes=_ROBOTS_MAX_BYTES)
        except (BlockedAddressError, RetryLater):
            # The article itself would be refused, or must wait, for the same reason: a
            # robots.txt answered 429/503 with Retry-After pauses the host like a page.
            raise
        except HTTPStatusError as exc:
            return exc.status or 0, b""
        except TooLargeError:
            return 200, b""
        except FetchError as exc:
            log.info("robots.txt unreachable, treating host as disallowed for now: %s", exc)
            return 0, b""
        return result.status, result.body


@dataclass(frozen=True)
class _Ask:
    """What every request of one fetch carries: its caps, headers, options and time."""

    max_bytes: int
    headers: dict[str, str]
    options: RequestOptions
    budget: _Budget


class _Budget:
    """The total timeout of one fetch, spent across its redirect hops and retries: the
    time spent in requests counts (not the wait for a host slot, nor the pause between
    retries), so a total of 60 s is never 90."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.left = total

    @contextlib.asynccontextmanager
    async def spending(self) -> AsyncIterator[float]:
        started = time.monotonic()
        try:
            yield self.left
        finally:
            self.left -= time.monotonic() - started


def _check_scheme(url: str) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        raise FetchError(url, "invalid URL") from None
    if scheme not in ("http", "https"):
        raise BlockedAddressError(url, f"scheme {scheme or '(none)'!r} is not http or https")
