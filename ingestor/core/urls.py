"""URL canonicalization and the record id derived from it (pure functions)."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ingestor.config.model import DEFAULT_TRACKING_PARAMS

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters that are safe to leave unescaped in a path; everything else is percent-encoded
# in one upper-case form so that two spellings of one path compare equal.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_DOT_SEGMENTS = re.compile(r"/\.(?=/|$)")


class TrackingParams:
    """A compiled set of tracking-parameter patterns (exact names and fnmatch globs)."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_TRACKING_PARAMS) -> None:
        self.exact = frozenset(p.lower() for p in patterns if not _is_glob(p))
        self.globs = tuple(p.lower() for p in patterns if _is_glob(p))

    def matches(self, name: str) -> bool:
        lowered = name.lower()
        return lowered in self.exact or any(fnmatch.fnmatchcase(lowered, g) for g in self.globs)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


_DEFAULT_TRACKING = TrackingParams()


def _normalize_host(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    if not host or host.startswith("["):
        return host
    try:
        # IDNs in one form: punycode (ASCII), which is what DNS and HTTP use.
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _normalize_path(path: str) -> str:
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if len(segments) > 1:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    path = "/".join(segments)
    if not path.startswith("/"):
        path = "/" + path
    return quote(unquote(path), safe=_PATH_SAFE)


def canonicalize_url(url: str, tracking: TrackingParams | None = None) -> str:
    """Return the canonical form used for deduplication; never raises.

    Lower-case scheme and host, IDN host as punycode, default port and fragment dropped,
    dot segments resolved, percent-encoding unified, tracking parameters removed and the
    remaining query parameters sorted. Input that is not a URL comes back stripped.
    """
    tracking = tracking or _DEFAULT_TRACKING
    text = "".join(ch for ch in url.strip() if ch >= " " and ch != "\x7f")
    try:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        host = _normalize_host(parts.hostname or "")
        port = parts.port
    except ValueError:
        return text
    if not host:
        return text
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    # Credentials (user:pass@) identify nobody's article: they are left out of netloc.
    netloc = host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{host}:{port}"
    query_pairs = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not tracking.matches(k)
    ]
    query_pairs.sort()
    query = urlencode(query_pairs, quote_via=quote, safe="-._~")
    return urlunsplit((scheme, netloc, _normalize_path(parts.path), query, ""))


def record_id(canonical_url: str) -> str:
    """A stable, file-name-safe id: the same canonical URL gives the same id on every run."""
    return hashlib.sha256(canonical_url.encode("utf-8")).hexdigest()[:24]


def same_site(a: str, b: str) -> bool:
    """True when two URLs share a registrable-looking host (same host or one a subdomain)."""
    try:
        host_a = (urlsplit(a).hostname or "").lower().removeprefix("www.")
        host_b = (urlsplit(b).hostname or "").lower().removeprefix("www.")
    except ValueError:
        return False
    if not host_a or not host_b:
        return False
    return host_a == host_b or host_a.endswith("." + host_b) or host_b.endswith("." + host_a)


@lru_cache(maxsize=65_536)
def host_key(url: str) -> str:
    """The politeness key of a URL: host and port, lower-case (cached: a poll asks for it
    three times, and a daemon polls the same URLs all day)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return f"{host}:{port}"


def page_canonical(final_url: str, rel_canonical: str | None, tracking: TrackingParams) -> str:
    """A page's rel=canonical when it names the same site (a canonical link to another
    site is not trusted), else the URL the page was finally fetched from."""
    if (
        rel_canonical
        and rel_canonical.startswith(("http://", "https://"))
        and same_site(rel_canonical, final_url)
    ):
        return canonicalize_url(rel_canonical, tracking)
    return canonicalize_url(final_url, tracking)
