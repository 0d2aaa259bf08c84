"""Delivering the journal to a webhook, decided from plain data: the body of a batch, its
signature, what an answer means, how long to wait after a failure, and which lines are
ready to go."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from ingestor.core.journal import JournalEntry

SIGNATURE_HEADER = "X-Ingestor-Signature"
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
# A line whose record file is not in place yet (committed, not yet renamed into the
# output by its writer) waits this long before it is sent with "record": null.
PUBLISH_GRACE = 30.0


def batch_body(lines: Sequence[bytes]) -> bytes:
    """`{"lines": [...]}`: each line exactly as `ingestor tail` prints it."""
    return b'{"lines":[' + b",".join(line.rstrip(b"\n") for line in lines) + b"]}"


def signature(secret: str, body: bytes) -> str:
    """The X-Ingestor-Signature value: HMAC-SHA256 of the raw body, keyed by the secret."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def acknowledged(status: int) -> bool:
    """Only a 2xx acknowledges a batch; a redirect, 4xx or 5xx sends it again."""
    return 200 <= status < 300


def retry_delay(failures: int) -> float:
    """After the n-th failure in a row: 1 s, 2 s, 4 s, ... at most 60 s, forever."""
    return min(FIRST_RETRY * 2 ** min(max(failures - 1, 0), 16), MAX_RETRY)


def ready_lines(
    entries: Sequence[JournalEntry], published: Sequence[bool], now: float
) -> list[JournalEntry]:
    """The batch to send: the lines in order up to the first whose record file is not in
    place yet and was written less than PUBLISH_GRACE ago (no later line may go first)."""
    ready = []
    for entry, in_place in zip(entries, published, strict=True):
        if not in_place and entry.op != "delete" and now - entry.at < PUBLISH_GRACE:
            break
        ready.append(entry)
    return ready
