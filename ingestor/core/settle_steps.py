"""The settle sequence, written once for every backend.

    prep = Prepare(lookup)          # backend, in its transaction: reserve, dedup candidates
    settlement = decide(prep)       # pure (core.settle.decide_article)
    staged = Stage(file)            # the record file, durable under a staging name
    entry = Commit(rows)            # backend, in its transaction: rows, the journal's seq
        on failure: CommitFailed(staged), then the error goes on
    Publish(staged, entry)          # once the rows are committed: the file's own name and
                                    # its journal line

The generator only decides the order; it yields each step that touches the database or
the files, and a backend performs it and sends the result back (store/step_driver.py).
SQLite performs every step of a group of articles inside one transaction in its thread
(the staged files are synced once, before COMMIT, and published after it); PostgreSQL
performs Prepare and Commit as one round trip each and the file steps in a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from ingestor.core.journal import JournalEntry
from ingestor.core.state import (
    ArticleCommit,
    ArticleLookup,
    ArticlePrep,
    Settlement,
    StagedFile,
)


@dataclass(frozen=True)
class Prepare:
    """Reserve the record's location and find what dedup compares; sends an ArticlePrep."""

    lookup: ArticleLookup


@dataclass(frozen=True)
class Stage:
    """Write the record file durably under a staging name; sends a StagedFile."""

    data: bytes
    location: str


@dataclass(frozen=True)
class Commit:
    """Commit what the article changes; sends the journal entry of a written record."""

    commit: ArticleCommit


@dataclass(frozen=True)
class CommitFailed:
    """Commit raised after `staged` was written. A backend that knows its rows rolled back
    drops the file; one that cannot know keeps it for the reconciliation at the next
    start."""

    staged: StagedFile


@dataclass(frozen=True)
class Publish:
    """Once the rows are committed: install the staged file, append the journal line."""

    staged: StagedFile | None
    entry: JournalEntry | None


SettleStep = Prepare | Stage | Commit | CommitFailed | Publish
SettleSteps = Generator[SettleStep, Any, Settlement]


def settle_steps(lookup: ArticleLookup, decide: Callable[[ArticlePrep], Settlement]) -> SettleSteps:
    settlement = decide((yield Prepare(lookup)))
    staged: StagedFile | None = None
    if settlement.output is not None:
        staged = yield Stage(*settlement.output)
    try:
        entry: JournalEntry | None = yield Commit(settlement.commit)
    except BaseException:
        if staged is not None:
            yield CommitFailed(staged)
        raise
    if staged is not None or entry is not None:
        yield Publish(staged, entry)
    return settlement
