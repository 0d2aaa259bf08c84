"""The settle sequence on its own: the order of its steps and what a failure leaves,
driven by a recording backend (no store, no files)."""

from __future__ import annotations

import asyncio

import pytest

from ingestor.core.journal import JournalEntry
from ingestor.core.settle_steps import (
    Commit,
    CommitFailed,
    Prepare,
    Publish,
    Stage,
    settle_steps,
)
from ingestor.core.state import (
    ArticleCommit,
    ArticleLookup,
    ArticlePrep,
    Settlement,
    SettleOutcome,
    StagedFile,
)
from ingestor.store.step_driver import run_steps, run_steps_async

LOOKUP = ArticleLookup("r1", "https://e.com/a", "2026/12/04/r1.json", 1.0)
COMMIT = ArticleCommit(7, "f", "k", 1.0)
STAGED = StagedFile(".staging-1", "2026/12/04/r1.json")
ENTRY = JournalEntry(1, "put", "r1", "2026/12/04/r1.json", "sha256:x", 1.0, "w")


def _written(prep: ArticlePrep) -> Settlement:
    return Settlement(COMMIT, SettleOutcome.WRITTEN, output=(b"{}", prep.location))


def _seen(prep: ArticlePrep) -> Settlement:
    return Settlement(COMMIT, SettleOutcome.URL_DUPLICATE)


class Backend:
    """Performs each step and says which ones it saw; `fail` names a step kind that raises."""

    def __init__(self, fail: type | None = None) -> None:
        self.seen: list[str] = []
        self.fail = fail

    def perform(self, step: object) -> object:
        self.seen.append(type(step).__name__)
        if self.fail is not None and isinstance(step, self.fail):
            raise OSError(f"{type(step).__name__} failed")
        if isinstance(step, Prepare):
            return ArticlePrep(step.lookup.location, None)
        if isinstance(step, Stage):
            return STAGED
        if isinstance(step, Commit):
            return ENTRY if self.seen[1] == "Stage" else None  # a written record's line
        return None


@pytest.mark.parametrize(
    ("decide", "fail", "steps", "raises"),
    [
        # A written record: its file is durable before the commit, published after it.
        (_written, None, ["Prepare", "Stage", "Commit", "Publish"], False),
        # Nothing to write (a duplicate): no file steps, and a commit without a journal
        # line has nothing to publish.
        (_seen, None, ["Prepare", "Commit"], False),
        # A failed commit after staging: the backend hears of the staged file, then the
        # error reaches the caller; nothing is published.
        (_written, Commit, ["Prepare", "Stage", "Commit", "CommitFailed"], True),
        # A failed commit with nothing staged: no CommitFailed to act on.
        (_seen, Commit, ["Prepare", "Commit"], True),
        # The file could not be staged: no commit, nothing published.
        (_written, Stage, ["Prepare", "Stage"], True),
        (_written, Prepare, ["Prepare"], True),
    ],
)
def test_the_sequence_orders_its_steps_and_stops_at_a_failure(decide, fail, steps, raises):
    backend = Backend(fail)
    if raises:
        with pytest.raises(OSError, match="failed"):
            run_steps(settle_steps(LOOKUP, decide), backend.perform)
    else:
        settlement = run_steps(settle_steps(LOOKUP, decide), backend.perform)
        assert settlement.commit == COMMIT
    assert backend.seen == steps


def test_publish_carries_what_stage_and_commit_returned():
    published: list[Publish] = []
    backend = Backend()

    def perform(step: object) -> object:
        if isinstance(step, Publish):
            published.append(step)
        return backend.perform(step)

    run_steps(settle_steps(LOOKUP, _written), perform)
    assert published == [Publish(STAGED, ENTRY)]


def test_the_failed_commit_names_the_staged_file_and_an_awaited_backend_runs_the_same():
    failed: list[CommitFailed] = []
    backend = Backend(Commit)

    async def perform(step: object) -> object:
        if isinstance(step, CommitFailed):
            failed.append(step)
        return backend.perform(step)

    with pytest.raises(OSError, match="Commit failed"):
        asyncio.run(run_steps_async(settle_steps(LOOKUP, _written), perform))
    assert failed == [CommitFailed(STAGED)]
    assert backend.seen == ["Prepare", "Stage", "Commit", "CommitFailed"]


def test_a_decision_that_raises_leaves_nothing_to_commit():
    def broken(prep: ArticlePrep) -> Settlement:
        raise ValueError("no decision")

    backend = Backend()
    with pytest.raises(ValueError, match="no decision"):
        run_steps(settle_steps(LOOKUP, broken), backend.perform)
    assert backend.seen == ["Prepare"]
