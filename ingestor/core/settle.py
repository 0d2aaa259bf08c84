"""How a finished article ends, decided from plain data: what the store found for it (an
ArticlePrep) and what the worker made of it. Pure: the settle sequence (core.settle_steps) calls
`decide_article` inside the store's transaction (no I/O, no counters here)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from ingestor.config.model import DedupConfig, FeedConfig
from ingestor.core.analysis import ArticleAnalysis
from ingestor.core.assemble import build_record
from ingestor.core.dedup import (
    NOT_DUPLICATE,
    DuplicateVerdict,
    changed_substantially,
    judge_duplicate,
)
from ingestor.core.frontier import FrontierItem
from ingestor.core.state import (
    ArticleCommit,
    ArticlePrep,
    CommitItem,
    DuplicateKind,
    HostWait,
    Settlement,
    SettleOutcome,
)


@dataclass(frozen=True)
class ArticleFacts:
    """One analysed article, ready to be settled."""

    feed: FeedConfig
    item: FrontierItem
    url: str
    canonical: str
    record_id: str  # of the canonical URL (core.urls.record_id)
    analysis: ArticleAnalysis
    failure: str | None  # why the page was not used, if it was not
    now: datetime
    host_wait: HostWait | None = None  # what its host asked, kept with the commit


def decide_article(
    facts: ArticleFacts,
    dedup: DedupConfig,
    scheme: str,
    pretty: bool,
    prep: ArticlePrep,
) -> Settlement:
    item, analysis, now = facts.item, facts.analysis, facts.now
    rid = facts.record_id
    prints = analysis.fingerprint
    existing = prep.existing
    updated_at: datetime | None = None
    # Every way the article ends keeps what its host asked (a page's last 429).
    finished = partial(article_commit, item, host_wait=facts.host_wait)
    if existing is not None and existing.done:
        if existing.deleted:
            # output.retention removed it: an old article's late edit does not bring it back.
            return Settlement(
                finished(seen=rid),
                SettleOutcome.UNCHANGED,
            )
        if not item.is_update:
            # The page's rel=canonical named an article written already.
            return Settlement(
                finished(seen=rid),
                SettleOutcome.URL_DUPLICATE,
            )
        # An update whose page could not be had keeps the record it has (the page's
        # reading, not the feed's text in its place).
        if (
            facts.failure is not None
            or existing.content_hash == prints.content_hash
            or not changed_substantially(
                prep.old_signature, prints.signature, dedup.update_threshold
            )
        ):
            return Settlement(
                finished(seen=rid),
                SettleOutcome.UNCHANGED,
            )
        updated_at = now
    verdict: DuplicateVerdict = NOT_DUPLICATE
    if analysis.body.text:
        verdict = judge_duplicate(
            prep.exact, prints.signature, prep.candidates, dedup.threshold, prints.legacy_signature
        )
    kind = verdict.kind if verdict.is_duplicate else None
    if kind is DuplicateKind.NEAR and dedup.near_duplicates == "drop":
        release = rid if existing is None else None
        commit = finished(seen=verdict.duplicate_of, release=release, failure=facts.failure)
        return Settlement(commit, SettleOutcome.DROPPED, duplicate_kind=kind)
    story = story_of(rid, verdict, prep.stories, existing is not None and existing.done)
    record = build_record(
        story_id=story,
        record_id=rid,
        url=facts.url,
        canonical_url=facts.canonical,
        feed=facts.feed,
        feed_title=item.feed_title,
        entry=item.entry,
        analysis=analysis,
        verdict=verdict,
        fetched_at=now,
        updated_at=updated_at,
        page_error=facts.failure,
    )
    commit_item = CommitItem(
        record_id=rid,
        canonical_url=facts.canonical,
        content_hash=prints.content_hash,
        feed_id=facts.feed.feed_id,
        entry_key=item.entry.key,
        scheme=scheme,
        signature=prints.signature,
        band_keys=prints.band_keys,
        committed_at=now.timestamp(),
        entry_updated=item.entry.version_stamp,
        op="update" if updated_at is not None else "create",
        story_id=story if story != rid else None,
    )
    return Settlement(
        finished(record=commit_item, failure=facts.failure),
        SettleOutcome.WRITTEN_DUPLICATE if verdict.is_duplicate else SettleOutcome.WRITTEN,
        output=(record.file_bytes(pretty), prep.location),
        duplicate_kind=kind,
        updated=updated_at is not None,
    )


def article_commit(
    item: FrontierItem,
    *,
    seen: str | None = None,
    record: CommitItem | None = None,
    release: str | None = None,
    failure: str | None = None,
    host_wait: HostWait | None = None,
) -> ArticleCommit:
    entry = item.entry
    return ArticleCommit(
        item_id=item.item_id,
        feed_id=item.feed_id,
        entry_key=entry.key,
        committed_at=time.time(),
        record=record,
        seen_record_id=seen,
        entry_updated=entry.version_stamp,
        release_record=release,
        failure=failure,
        failed_url=entry.link if failure else None,
        host_wait=host_wait,
    )


def story_of(
    record_id: str, verdict: DuplicateVerdict, stories: Mapping[str, str], updating: bool
) -> str:
    """The record's story: a rewritten record keeps the one it had; a copy (near or exact,
    syndicated or not) joins the story of the record it copies; any other starts its own."""
    if updating and record_id in stories:
        return stories[record_id]
    if verdict.is_duplicate and verdict.duplicate_of is not None:
        return stories.get(verdict.duplicate_of, verdict.duplicate_of)
    return record_id
