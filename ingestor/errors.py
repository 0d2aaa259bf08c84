"""The exception hierarchy: every error a user sees is one line that names the place.

    IngestorError                  url, reason, kind (a metrics label)
    ├── ConfigError                one line per problem (exit code 2)
    ├── StateError                 the state store is unusable (exit code 1)
    ├── SinkError                  a record cannot be written (disk full)
    ├── WorkerError                a worker process failed a task (time limit, crash)
    ├── ParseError                 a feed body has nothing usable in it
    └── FetchError                 a fetch failed; `transient`: a retry may succeed
        ├── HTTPStatusError        an error status (401/403/451 explained)
        │   ├── GoneError          410: the feed is disabled until its config changes
        │   └── RateLimitedError   429/503 with Retry-After   ─┐
        ├── RetryLater             come back at `not_before` ◄─┘ (also HostBackoffError)
        │   └── HostBackoffError   not sent: the host asked us to wait
        ├── ConnectError, FetchTimeoutError,
        │   RobotsUnavailableError                           (transient)
        └── TooLargeError, BlockedAddressError, RedirectError,
            RobotsDisallowedError, UnsupportedContentError   (permanent)

The fetcher translates aiohttp's exceptions into these by a table (http/fetcher.py).
"""

from __future__ import annotations


class IngestorError(Exception):
    """Base of every error this package raises on purpose: `url` where it happened (if
    any), `reason` without the URL, `kind` for metrics and logs."""

    kind = "error"

    def __init__(self, message: str = "", *, url: str | None = None) -> None:
        self.url = url
        self.reason = message
        super().__init__(f"{url}: {message}" if url else message)


class ConfigError(IngestorError):
    """A configuration file is wrong; `problems` holds one line per problem."""

    kind = "config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StateError(IngestorError):
    """The state store cannot be opened or used (fatal: exit code 1)."""

    kind = "state"


class ServiceError(IngestorError):
    """Something the daemon serves cannot start (the metrics endpoint): fatal, exit 1."""

    kind = "service"


class SinkError(IngestorError):
    """The output sink cannot write a record (disk full, not writable)."""

    kind = "sink"


class FetchError(IngestorError):
    """A fetch failed. `url` is what was asked for; `transient` says a retry may succeed."""

    transient = False
    kind = "fetch"
    # The requests of this fetch (retries and redirect hops included) that the server
    # answered with an error, reset or let time out: what `status` counts.
    failed_requests = 1
    # Its retries were cut short: the host was told to wait (another request's 429) until
    # then. The retry is owed then, as the fetch would have made it.
    cut_short_until: float | None = None

    def __init__(self, url: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message, url=url)
        self.url: str = url
        self.status = status


class RetryLater(FetchError):
    """Not now: the server or its host asked us to come back at `not_before`."""

    kind = "retry_later"
    not_before: float = 0.0


# What a refusal most often means, and what the user can do about it.
_STATUS_HINTS = {
    401: "the site wants credentials (set auth: for this feed)",
    403: "the site refuses this client; a per-feed user_agent (or headers) may help",
    407: "the proxy wants credentials",
    451: "unavailable for legal reasons (often a regional block; a proxy may help)",
}


class HTTPStatusError(FetchError):
    """The server answered with an error status."""

    kind = "http_status"

    def __init__(self, url: str, status: int, message: str = "") -> None:
        text = f"HTTP {status}" + (f" {message}" if message else "")
        if status in _STATUS_HINTS:
            text = f"HTTP {status}: {_STATUS_HINTS[status]}"
        super().__init__(url, text, status=status)
        self.transient = status >= 500 or status in (408, 425)


class GoneError(HTTPStatusError):
    """410 Gone: the feed is disabled until its configuration changes."""

    kind = "gone"


class RateLimitedError(HTTPStatusError, RetryLater):
    """429/503 with Retry-After: the host must not be asked again before `not_before`."""

    kind = "rate_limited"

    def __init__(self, url: str, status: int, not_before: float) -> None:
        super().__init__(url, status, "rate limited (Retry-After)")
        self.not_before = not_before
        self.transient = False


class HostBackoffError(RetryLater):
    """A request was not sent because the host asked us to wait (Retry-After)."""

    kind = "host_backoff"

    failed_requests = 0

    def __init__(self, url: str, not_before: float) -> None:
        super().__init__(url, "host asked to wait (Retry-After), request not sent")
        self.not_before = not_before


class ConnectError(FetchError):
    """Connection refused, reset or DNS failure."""

    kind = "connect"
    transient = True


class FetchTimeoutError(FetchError):
    """Connect, read or total timeout."""

    kind = "timeout"
    transient = True


class TooLargeError(FetchError):
    """The body (raw or decompressed) went past its size cap."""

    kind = "too_large"


class BlockedAddressError(FetchError):
    """The URL resolves to an address the SSRF guard refuses, or has a forbidden scheme."""

    kind = "blocked_address"
    failed_requests = 0  # refused here: no request was sent


class RedirectError(FetchError):
    """Too many redirects, a redirect loop, or a redirect without a usable Location."""

    kind = "redirect"


class RobotsDisallowedError(FetchError):
    """robots.txt of the host disallows this URL for our User-Agent."""

    kind = "robots"
    failed_requests = 0  # refused here: no request was sent


class RobotsUnavailableError(FetchError):
    """robots.txt could not be had (5xx, unreachable): disallowed for now, retried later."""

    kind = "robots_unavailable"
    transient = True


class UnsupportedContentError(FetchError):
    """The response is not a document we can use (PDF, image, binary)."""

    kind = "unsupported_content"


class ParseError(IngestorError):
    """A feed body has nothing usable in it."""

    kind = "parse"

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message, url=url)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Raised in worker processes: pickle with the constructor's own arguments.
        return (type(self), (self.url, self.reason))


class WorkerError(IngestorError):
    """A task failed in its worker: time limit, crash, or an unexpected exception."""

    kind = "worker"
