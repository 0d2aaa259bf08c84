"""What a response (or a failed request) means: Retry-After, freshness, binary bodies, and
the FetchError each aiohttp exception stands for (pure functions and a table)."""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC

import aiohttp

from ingestor.errors import (
    BlockedAddressError,
    ConnectError,
    FetchError,
    FetchTimeoutError,
    RedirectError,
    TooLargeError,
)
from ingestor.http.netguard import GUARD_MARKER

_CHUNK = 64 * 1024

# A Retry-After further away than this is taken as this (README: a day).
MAX_RETRY_AFTER = 86400.0


_BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x7fELF")


_MAX_AGE = re.compile(r"(?:^|,)\s*(s-maxage|max-age)\s*=\s*\"?(\d+)", re.IGNORECASE)


def parse_retry_after(value: str | None, now: float, date: str | None = None) -> float | None:
    """Retry-After as seconds or an HTTP-date; returns the wall-clock time to wait for.

    An HTTP-date is read against the response's own Date header when it has one (the
    server's clock, not ours, says how long the wait is), rounded up to whole seconds; a
    wait is at most MAX_RETRY_AFTER."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return now + min(float(value), MAX_RETRY_AFTER)
    moment = _http_date(value)
    if moment is None:
        return None
    server_now = _http_date(date) if date else None
    wait = moment - (server_now if server_now is not None else now)
    return now + min(float(math.ceil(max(wait, 0.0))), MAX_RETRY_AFTER)


def _http_date(value: str) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # "-0000" and two-digit years: the RFC says GMT
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_freshness(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the response stays fresh (Cache-Control max-age, else Expires)."""
    cache_control = headers.get("Cache-Control", "")
    if cache_control:
        if re.search(r"no-cache|no-store", cache_control, re.IGNORECASE):
            return 0.0
        ages = {name.lower(): int(v) for name, v in _MAX_AGE.findall(cache_control)}
        if "max-age" in ages or "s-maxage" in ages:
            return float(ages.get("max-age", ages.get("s-maxage", 0)))
    expires = headers.get("Expires")
    if expires:
        try:
            moment = email.utils.parsedate_to_datetime(expires)
        except (TypeError, ValueError, IndexError):
            return 0.0
        return max(0.0, moment.timestamp() - now)
    return None


def looks_binary(body: bytes) -> bool:
    head = body[:512]
    return head.startswith(_BINARY_MAGIC) or b"\x00" in head


# aiohttp's exceptions and the FetchError each one means, most specific first.
_ERROR_TABLE: tuple[tuple[type[BaseException], Callable[[str, BaseException], FetchError]], ...] = (
    (aiohttp.ClientConnectorError, lambda url, exc: _connect_error(url, exc)),
    (aiohttp.TooManyRedirects, lambda url, exc: RedirectError(url, "too many redirects")),
    (aiohttp.InvalidURL, lambda url, exc: FetchError(url, "invalid URL")),
    (
        aiohttp.ClientPayloadError,
        lambda url, exc: ConnectError(url, f"broken response body: {_first_line(exc)}"),
    ),
    (
        aiohttp.ClientResponseError,
        lambda url, exc: FetchError(url, f"bad response: {_first_line(exc)}"),
    ),
    (
        aiohttp.ClientError,
        lambda url, exc: ConnectError(url, f"connection failed: {_first_line(exc)}"),
    ),
    (OSError, lambda url, exc: ConnectError(url, f"connection failed: {_first_line(exc)}")),
)


def translate_error(
    url: str, exc: BaseException, total_timeout: float, read_timeout: float | None = None
) -> FetchError | None:
    """The FetchError an exception from aiohttp (or the socket) means; None if it is none
    of theirs (a bug, which must not be disguised as a network error)."""
    if isinstance(exc, aiohttp.SocketTimeoutError) and read_timeout:
        wait = min(read_timeout, total_timeout)
        return FetchTimeoutError(url, f"timed out: the server sent nothing for {wait:g}s")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return FetchTimeoutError(url, "timed out while connecting")
    if isinstance(exc, TimeoutError):
        return FetchTimeoutError(url, f"timed out (total {total_timeout:g}s)")
    for kind, make in _ERROR_TABLE:
        if isinstance(exc, kind):
            return make(url, exc)
    return None


def _connect_error(url: str, exc: BaseException) -> FetchError:
    if GUARD_MARKER in str(exc):
        return BlockedAddressError(url, _guard_reason(str(exc)))
    os_error = getattr(exc, "os_error", None)
    return ConnectError(url, f"cannot connect: {getattr(os_error, 'strerror', None) or exc}")


def _guard_reason(text: str) -> str:
    start = text.find(GUARD_MARKER)
    end = text.find("allowed_networks", start)
    return text[start : end + len("allowed_networks")] if end > start else GUARD_MARKER


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


async def read_capped(response: aiohttp.ClientResponse, url: str, max_bytes: int) -> bytes:
    """The body, cut off (TooLargeError) once it grows past `max_bytes`, decoded."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise TooLargeError(url, f"body of {declared} bytes exceeds the cap of {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    # iter_chunked yields decompressed bytes, so the cap bounds inflated size too.
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise TooLargeError(url, f"body exceeds the cap of {max_bytes} bytes (decoded)")
        chunks.append(chunk)
    return b"".join(chunks)
