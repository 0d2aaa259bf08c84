"""The change journal's upkeep around the article pipeline: reconciliation at start (what a
crash left between the state's commit and the files) and retention.

    reconcile:
        recover the journal files          (cut a half line, close old segments, last seq)
        for each staged record file:       (written, fsynced, never renamed into place)
            publish it if the state committed this very version, else drop it
        for each state journal entry after the files' last seq (this writer's):
            delete -> remove the file; create/update -> its file is there
            append the line

    retention:
        repeat: state marks a batch of old records deleted, with their delete entries;
                files removed, lines appended (after that commit)
        closed segments whose last line is older than the cutoff go
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ingestor.core.journal import journal_ownership, staged_verdict
from ingestor.errors import SinkError, StateError
from ingestor.sink.files import FileSink, OutputSink
from ingestor.sink.journal_files import (
    JournalWriter,
    last_seq_of_all,
    read_owner,
    write_owner,
)
from ingestor.store.protocol import StateStore

log = logging.getLogger("ingestor.journal")

_PAGE = 1000
RETENTION_BATCH = 500


@dataclass
class ReconcileReport:
    last_seq: int = 0  # in the journal files before reconciliation
    staged_published: int = 0
    staged_dropped: int = 0
    lines_appended: int = 0
    files_removed: int = 0
    missing_files: int = 0


async def reconcile_journal(
    store: StateStore, sink: FileSink, state_where: str = "this state"
) -> ReconcileReport:
    """Run once at start, before any article is settled (the store's lock, or this
    instance's writer name, keeps other writers away from these files). A journal that
    another state wrote is refused before anything is touched (StateError)."""
    journal = sink.journal
    if journal is not None:
        await claim_journal(store, journal.directory, sink.directory, state_where)
    report = await _settle_leftovers(store, sink, store.journal_writer)
    _log_report(report, "journal reconciled")
    return report


async def take_over_lost_instances(store: StateStore, sink: FileSink) -> list[str]:
    """A fleet's dead instances (silent for a few lease_ttls): what each committed but
    had not published (records staged, not renamed; journal lines not yet in its
    segments) is published by this live one, as its own restart would have. Returns the
    writers taken over."""
    journal = sink.journal

    async def settle(writer: str) -> None:
        theirs = FileSink(
            sink.directory,
            JournalWriter(sink.directory, writer, journal.max_bytes, journal.max_age)
            if journal is not None
            else None,
            writer,
        )
        report = await _settle_leftovers(store, theirs, writer)
        _log_report(report, f"instance {writer} is gone; its leftovers settled here")

    return await store.take_over_lost_writers(time.time(), settle)


async def _settle_leftovers(store: StateStore, sink: FileSink, writer: str) -> ReconcileReport:
    """One writer's files against the state: its staged records published when the state
    committed that very version (else dropped), its journal lines the files lack
    appended."""
    report = ReconcileReport()
    journal = sink.journal
    if journal is not None:
        report.last_seq = await asyncio.to_thread(journal.recover)
    staged = await asyncio.to_thread(sink.staged_records)
    if staged:
        latest = await store.journal_latest([s.record_id for s in staged if s.record_id])
        for item in staged:
            entry = latest.get(item.record_id or "")
            final = await asyncio.to_thread(sink.content_hash_at, entry.path) if entry else None
            if entry is not None and staged_verdict(item.content_hash, entry, final) == "publish":
                await asyncio.to_thread(sink.install_staged, item, entry.path)
                report.staged_published += 1
            else:
                await asyncio.to_thread(item.path.unlink, missing_ok=True)
                report.staged_dropped += 1
    if journal is not None:
        seq = report.last_seq
        while entries := await store.journal_since(seq, _PAGE, writer):
            for entry in entries:
                if entry.op == "delete":
                    await asyncio.to_thread(sink.remove, entry.path)
                    report.files_removed += 1
                elif not await asyncio.to_thread(sink.exists, entry.path):
                    # Removed by someone else since: the line still keeps seq gap-free.
                    report.missing_files += 1
            await asyncio.to_thread(journal.append, entries)
            report.lines_appended += len(entries)
            seq = entries[-1].seq
    return report


def _log_report(report: ReconcileReport, what: str) -> None:
    if report.staged_published or report.staged_dropped or report.lines_appended:
        log.info(
            "%s: %d staged records published, %d dropped (never committed), "
            "%d journal lines appended from the state",
            what,
            report.staged_published,
            report.staged_dropped,
            report.lines_appended,
        )
    if report.missing_files:
        log.warning(
            "journal: %d committed record files are missing from the output (removed by hand?)",
            report.missing_files,
        )


async def claim_journal(
    store: StateStore, journal_dir: Path, output_dir: Path, state_where: str
) -> None:
    """The output directory's journal belongs to one state: this one, or it stays as it
    is and the start is refused with what to do (`core.journal.journal_ownership`)."""
    owner = await asyncio.to_thread(read_owner, journal_dir)
    if owner == store.state_id:
        return
    last = await asyncio.to_thread(last_seq_of_all, journal_dir) if owner is None else 0
    has_last = False
    if owner is None and last > 0:
        entries = await store.journal_since(last - 1, 1)
        has_last = bool(entries) and entries[0].seq == last
    verdict = journal_ownership(owner, store.state_id, last, has_last)
    if verdict == "claim":
        try:
            await asyncio.to_thread(write_owner, journal_dir, store.state_id)
        except SinkError as exc:
            # A full disk must not stop the start: the next start claims it again (the
            # journal's lines are this state's own, which it can tell).
            log.warning("journal owner not recorded (claimed again at the next start): %s", exc)
        return
    held = f"last seq {last}" if owner is None else f"owner state {owner[:12]}"
    raise StateError(
        f"output.dir {output_dir}: its journal ({held}) was written by another state than "
        f"{state_where} (state {store.state_id[:12]}); two states never write one journal: "
        f"give this state an output.dir of its own, or move {output_dir} aside, or restore "
        "the state that wrote it"
    )


async def apply_retention(
    store: StateStore, sink: OutputSink, retention: float, now: float, max_batches: int = 100
) -> int:
    """Delete records first ingested more than `retention` ago (a batch per transaction,
    up to `max_batches` per call: the next call goes on)."""
    cutoff = now - retention
    deleted = 0
    for _ in range(max_batches):
        count = await store.expire_records(cutoff, now, RETENTION_BATCH, sink)
        deleted += count
        if count < RETENTION_BATCH:
            break
    if sink.journal is not None:
        journal = sink.journal
        await asyncio.to_thread(journal.rotate_if_old, now)
        removed = await asyncio.to_thread(journal.remove_closed_before, cutoff)
        if removed:
            log.info("retention: removed %d journal segments older than %s", removed, cutoff)
    if deleted:
        log.info("retention: deleted %d records first ingested before the cutoff", deleted)
    return deleted
