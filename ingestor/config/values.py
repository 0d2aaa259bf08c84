"""Value parsers for configuration settings: each returns the parsed value or raises
ValueError with a reason that never repeats a secret."""

from __future__ import annotations

import ipaddress
import math
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

# --- value parsers: each returns the parsed value or raises ValueError with a reason ---

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: Any) -> float:
    """'15m', '1h30m', '500ms', '2d' or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 15m, 2h, 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 2h, 1d)")
    else:
        raise ValueError("expected a duration like 30s, 15m, 2h, 1d")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 2h, 1d)")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_size(value: Any) -> int:
    """'10MiB', '500kB' or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 10MiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower() if match.group(2) else None
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ValueError(f"{value!r} is not a size (use e.g. 5MiB, 500kB)")
    if size <= 0:
        raise ValueError("must be positive")
    return size


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def whole(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and {maximum}" if maximum is not None else ""
            raise ValueError(
                f"must be at least {minimum}{upper}"
                if not upper
                else f"must be between {minimum}{upper}"
            )
        return value

    return parse


def number(minimum: float, maximum: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return float(value)

    return parse


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def optional_str(value: Any) -> str | None:
    return None if value is None else text(value)


def choice_of(literal: Any) -> Callable[[Any], str]:
    """The parser for a Literal["a", "b"] setting."""
    return _choice(*typing.get_args(literal))


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if not isinstance(value, list):
        raise ValueError('expected a list of CIDRs, e.g. ["127.0.0.0/8"]')
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a CIDR network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def http_url(value: Any) -> str:
    from urllib.parse import urlsplit

    url = text(value).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Set by the fetcher itself: a per-feed value would break conditional GET or decoding.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "if-none-match", "if-modified-since", "accept-encoding"}
)


def headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of header names to values")
    headers = []
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{name} is set by ingestor itself and cannot be overridden")
        # The value is never echoed: it may be a token.
        if not isinstance(text, str) or "\r" in text or "\n" in text:
            raise ValueError(f"the value of {name} must be a one-line string")
        headers.append((name, text))
    return tuple(headers)


def secret(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string (the value is not shown: it is secret)")
    return value


def credentials(value: Any) -> tuple[str, str]:
    """HTTP basic authentication: username and password."""
    if not isinstance(value, dict) or set(value) != {"username", "password"}:
        raise ValueError("expected username: and password: (HTTP basic authentication)")
    username = value["username"]
    if not isinstance(username, str) or not username or ":" in username:
        raise ValueError("username must be a non-empty string without ':'")
    try:
        return username, secret(value["password"])
    except ValueError as exc:
        raise ValueError(f"password: {exc}") from None


def proxy(value: Any) -> str | None:
    from urllib.parse import urlsplit

    if value is None:
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// proxy URL")
    return value


def positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


def optional_duration(value: Any) -> float | None:
    """A positive duration, or off (false, null, "off")."""
    if value is None or value is False or (isinstance(value, str) and value.lower() == "off"):
        return None
    return positive_duration(value)


def path(value: Any) -> Path:
    return Path(text(value)).expanduser()


def postgres_url(value: Any) -> str:
    """A libpq URI (postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?options])."""
    from urllib.parse import urlsplit

    url = text(value)
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"expected a postgresql://USER@HOST:PORT/DB URL, got {redact_url(url)!r}")
    if not parts.path.strip("/"):
        raise ValueError("the URL names no database (postgresql://USER@HOST:PORT/DB)")
    return url


def redact_url(url: str) -> str:
    """The URL without its password, fit for logs, status and metrics."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()
