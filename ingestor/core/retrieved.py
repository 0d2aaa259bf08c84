"""What the fetcher hands the parser: the bytes with what HTTP said about them."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class RetrievedFeed:
    body: bytes
    url: str  # where it was finally fetched from: relative links resolve against it
    media_type: str = ""  # lower case, without parameters ("application/rss+xml")
    charset: str | None = None  # as the Content-Type header declared it, if it did


def split_content_type(value: str | None) -> tuple[str, str | None]:
    """A Content-Type header as (media type, charset)."""
    if not value:
        return "", None
    match = _CHARSET.search(value)
    return value.split(";", 1)[0].strip().lower(), match.group(1) if match else None
