"""robots.txt: fetched once per host, cached, obeyed for article pages (RFC 9309)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

# (status, body) of GET /robots.txt; status 0 means the host could not be reached.
RobotsGetter = Callable[[str], Awaitable[tuple[int, bytes]]]

_OK_TTL = 3600.0
_ERROR_TTL = 600.0
_MAX_HOSTS = 10_000


def robots_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/robots.txt"


class _Unavailable(RobotFileParser):
    """The disallow-all of a robots.txt that could not be had (5xx, unreachable): the
    site may well allow us once it answers again."""


def parse_robots(status: int, body: bytes) -> RobotFileParser:
    """RFC 9309: 2xx is parsed; 4xx means no rules; 5xx or unreachable means disallow all."""
    parser = RobotFileParser() if 200 <= status < 500 else _Unavailable()
    if 200 <= status < 300:
        parser.parse(body.decode("utf-8", "replace").splitlines())
    elif 400 <= status < 500:
        parser.allow_all = True
    else:
        parser.disallow_all = True
    return parser


class RobotsCache:
    def __init__(self, getter: RobotsGetter, user_agent: str) -> None:
        self._getter = getter
        self._agent = user_agent.split("/", 1)[0]
        self._cache: OrderedDict[str, tuple[float, RobotFileParser]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[RobotFileParser]] = {}

    async def allowed(self, url: str) -> bool:
        parser = await self._parser_for(robots_url(url))
        return parser.can_fetch(self._agent, url)

    def unavailable(self, url: str) -> bool:
        """Whether the cached rules for this URL's host are those of an unavailable
        robots.txt (a temporary disallow, unlike a real Disallow rule)."""
        cached = self._cache.get(robots_url(url))
        return cached is not None and isinstance(cached[1], _Unavailable)

    async def crawl_delay(self, url: str) -> float | None:
        """The host's Crawl-delay for our agent (or `*`), in seconds, if it sets one."""
        parser = await self._parser_for(robots_url(url))
        try:
            delay = parser.crawl_delay(self._agent)
        except (TypeError, ValueError):
            return None
        return float(delay) if delay is not None else None

    async def sitemaps(self, url: str) -> list[str]:
        """The `Sitemap:` lines of the host's robots.txt, in its order."""
        parser = await self._parser_for(robots_url(url))
        return list(parser.site_maps() or [])

    async def _parser_for(self, robots: str) -> RobotFileParser:
        cached = self._cache.get(robots)
        if cached is not None and cached[0] > time.monotonic():
            self._cache.move_to_end(robots)
            return cached[1]
        pending = self._inflight.get(robots)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[RobotFileParser] = asyncio.get_running_loop().create_future()
        self._inflight[robots] = future
        try:
            status, body = await self._getter(robots)
            parser = parse_robots(status, body)
            ttl = _OK_TTL if 200 <= status < 500 else _ERROR_TTL
            self._cache[robots] = (time.monotonic() + ttl, parser)
            while len(self._cache) > _MAX_HOSTS:
                self._cache.popitem(last=False)
            future.set_result(parser)
            return parser
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[robots]
