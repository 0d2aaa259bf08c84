"""Deduplication decisions (pure: plain data in, verdicts out; no I/O)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ingestor.core.entry import FeedEntry
from ingestor.core.state import DuplicateKind, EntryVersion, NearCandidate


@dataclass(frozen=True)
class DuplicateVerdict:
    duplicate_of: str | None = None
    kind: DuplicateKind | None = None
    similarity: float | None = None

    @property
    def is_duplicate(self) -> bool:
        return self.duplicate_of is not None


NOT_DUPLICATE = DuplicateVerdict()


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two MinHash signatures of the same scheme
    (analyze.fingerprint makes them: uint32 values, little-endian)."""
    if len(a) != len(b) or not a or len(a) % 4:
        return 0.0
    left, right = array("I", a), array("I", b)  # uint32, little-endian on every platform
    return sum(x == y for x, y in zip(left, right, strict=True)) / len(left)


def judge_duplicate(
    exact_match: str | None,
    signature: bytes | None,
    candidates: Sequence[NearCandidate],
    threshold: float,
    legacy_signature: bytes | None = None,
) -> DuplicateVerdict:
    """Exact body match first; else the earliest-ingested candidate at or above threshold.

    Candidates come from LSH band collisions, which over-approximate: each is confirmed by
    its estimated Jaccard similarity, so a short text quoting a long one (small overlap
    relative to the union) is not a duplicate.
    """
    if exact_match is not None:
        return DuplicateVerdict(exact_match, DuplicateKind.EXACT, 1.0)
    if signature is None:
        return NOT_DUPLICATE
    # A candidate of the previous MinHash scheme is compared with the body in that scheme.
    matches = [
        (c.ingested_at, c.record_id, similarity(legacy_signature or b"", c.signature))
        if c.legacy
        else (c.ingested_at, c.record_id, similarity(signature, c.signature))
        for c in candidates
    ]
    matches = [m for m in matches if m[2] >= threshold]
    if not matches:
        return NOT_DUPLICATE
    _ingested, record_id, score = min(matches)
    return DuplicateVerdict(record_id, DuplicateKind.NEAR, round(score, 4))


def new_entries(entries: Iterable[FeedEntry], unseen_keys: set[str]) -> list[FeedEntry]:
    """Entries whose key this feed has not produced before, first occurrence only."""
    seen: set[str] = set()
    result = []
    for entry in entries:
        if entry.key in unseen_keys and entry.key not in seen:
            seen.add(entry.key)
            result.append(entry)
    return result


def republished_entries(entries: Iterable[FeedEntry], known_keys: set[str]) -> list[FeedEntry]:
    """Entries new under their own key that the feed produced before under another (an
    item seen alone, now re-published with a new guid: the same article, updated)."""
    return [
        entry
        for entry in entries
        if entry.key not in known_keys and any(alias in known_keys for alias in entry.aliases)
    ]


def updated_entries(
    entries: Iterable[FeedEntry], known: Mapping[str, EntryVersion]
) -> list[FeedEntry]:
    """Known entries that changed, in any format: a later date (`FeedEntry.version_time`)
    or other text than the feed gave before (`FeedEntry.text_digest`): candidates for
    re-emission. An entry recorded before its digest was kept is judged by its date."""
    return [
        entry
        for entry in entries
        if (before := known.get(entry.key)) is not None and entry_changed(entry, before)
    ]


def entry_changed(entry: FeedEntry, before: EntryVersion) -> bool:
    moment = entry.version_stamp
    if moment is not None and before.updated is not None and moment > before.updated + 1:
        return True
    return before.digest is not None and entry.text_digest != before.digest


def changed_substantially(
    old_signature: bytes | None, new_signature: bytes | None, update_threshold: float
) -> bool:
    """A body counts as changed when its similarity to the old one falls below the bar."""
    if old_signature is None or new_signature is None:
        return old_signature != new_signature
    return similarity(old_signature, new_signature) < update_threshold
