"""The state store contract (ingestor/store/protocol.py), one suite for every backend:
each test runs against each backend the `backend` fixture knows."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace

import psycopg
import pytest

from ingestor.core import frontier
from ingestor.core.entry import FeedEntry
from ingestor.core.journal import JournalEntry
from ingestor.core.settle_steps import settle_steps
from ingestor.core.state import (
    ArticleCommit,
    ArticleLookup,
    CommitItem,
    DedupQuery,
    FeedState,
    HostWait,
    ItemRetry,
    PollCommit,
    Settlement,
    StagedFile,
)
from ingestor.core.urls import TrackingParams
from ingestor.errors import SinkError
from ingestor.store.postgres import PostgresStateStore
from ingestor.store.protocol import StateStore
from ingestor.store.sqlite import SQLiteStateStore
from ingestor.store.traffic import StoreTraffic

NOW = 1_700_000_000.0


class Backend:
    """Makes stores of one kind that share one backing database."""

    def __init__(self, kind: str, tmp_path, url: str | None = None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.url = url
        self.traffic = StoreTraffic()  # what the stores' calls cost, as the metrics see it

    def make(self, instance: str = "instance-a") -> StateStore:
        if self.kind == "sqlite":
            return SQLiteStateStore(self.tmp_path / "state.db", traffic=self.traffic)
        assert self.url is not None
        return PostgresStateStore(
            self.url, instance_id=instance, lease_ttl=30.0, traffic=self.traffic
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> Backend:
    if request.param == "postgresql":
        return Backend("postgresql", tmp_path, request.getfixturevalue("pg_url"))
    return Backend(request.param, tmp_path)


@pytest.fixture
async def store(backend):
    s = backend.make()
    await s.open()
    yield s
    await s.close()


async def unseen(store, feed_id, keys):
    return set(keys) - set(await store.entry_versions(feed_id, keys))


async def test_feed_state_round_trips_across_restarts(backend):
    first = backend.make()
    await first.open()
    state = FeedState(
        feed_id="https://e.com/feed",
        etag='"x"',
        skip_hours=(1, 2),
        next_due=123.5,
        effective_url="https://e.com/new",
    )
    await first.save_feed(state)
    await first.close()
    second = backend.make()
    await second.open()
    assert (await second.load_feeds())["https://e.com/feed"] == state
    await second.close()


async def see(store, feed_id: str, key: str, at: float) -> None:
    """An entry finished without a record (as a dropped or skipped article is)."""
    await store.commit_article(ArticleCommit(0, feed_id, key, at))


async def finish_record(
    store, rid: str, content_hash: str, bands, at: float, *, scheme: str = "s1", key: str = "k"
) -> str:
    """A record written as the pipeline writes one: prepared (location reserved, body and
    bands claimed), then committed with its entry. Returns the reserved location."""
    signature = b"\x01\x00\x00\x00" * 4
    canonical = f"https://e.com/{rid}"
    query = DedupQuery(content_hash, scheme, list(bands), 0.0, signature)
    prep = await store.prepare_article(ArticleLookup(rid, canonical, f"loc/{rid}.json", at, query))
    record = CommitItem(rid, canonical, content_hash, "f", key, scheme, signature, list(bands), at)
    await store.commit_article(ArticleCommit(0, "f", key, at, record=record))
    return prep.location


async def probe(store, probe_id: str, content_hash: str, bands, since: float = 0.0, scheme="s1"):
    """What dedup finds for a body (the probe claims its own hash: use one hash per probe)."""
    query = DedupQuery(content_hash, scheme, list(bands), since)
    prep = await store.prepare_article(
        ArticleLookup(probe_id, f"https://e.com/{probe_id}", f"loc/{probe_id}.json", NOW, query)
    )
    return prep.exact, [c.record_id for c in prep.candidates]


async def test_seen_entries_and_record_lifecycle(store):
    assert await unseen(store, "f", ["a", "b"]) == {"a", "b"}
    await see(store, "f", "a", 1.0)
    assert await unseen(store, "f", ["a", "b"]) == {"b"}
    assert await unseen(store, "other-feed", ["a"]) == {"a"}

    lookup = ArticleLookup("r1", "https://e.com/r1", "2024/01/01/r1.json", 1.0)
    location = (await store.prepare_article(lookup)).location
    # A redo on another day keeps the first reservation (same file, no duplicate).
    redo = replace(lookup, location="2024/01/02/r1.json", now=2.0)
    assert (await store.prepare_article(redo)).location == location == "2024/01/01/r1.json"
    ref = await store.record_by_canonical("https://e.com/r1")
    assert ref is not None and not ref.done
    await finish_record(store, "r1", "sha256:h", [11, 22], 5.0, key="b")
    assert (await store.record_by_canonical("https://e.com/r1")).done
    assert await unseen(store, "f", ["b"]) == set()
    assert await probe(store, "p1", "sha256:h", [22]) == ("r1", [])
    assert await probe(store, "r1", "sha256:h", []) == (None, [])  # not its own duplicate
    assert await probe(store, "p2", "sha256:x2", [22, 99]) == (None, ["r1"])
    assert await probe(store, "p3", "sha256:x3", [22], scheme="other") == (None, [])
    # Outside the time window:
    assert await probe(store, "p4", "sha256:x4", [22], since=10.0) == (None, [])


async def test_prune_forgets_old_keys_and_fingerprints(store):
    await see(store, "f", "old", 1.0)
    await see(store, "f", "new", 1000.0)
    await finish_record(store, "r1", "h", [5], 1.0)
    removed = await store.prune(1000.0, seen_max_age=500.0, fingerprint_window=500.0)
    assert removed >= 2
    assert await unseen(store, "f", ["old", "new"]) == {"old"}
    assert await probe(store, "x", "h2", [5]) == (None, [])


def _items(
    feed_id: str, n: int, host: str = "h:80", now: float = NOW, path: str = "a"
) -> list[frontier.NewItem]:
    entries = [
        (FeedEntry(f"k{i}", f"http://{host}/{path}/{i}", f"T{i}", None, None), False)
        for i in range(n)
    ]
    items = frontier.plan_items(
        feed_id,
        entries,
        fetch_articles=True,
        feed_title=None,
        feed_language=None,
        tracking=TrackingParams(),
        now=now,
    )
    return [replace(i, host=host) for i in items]


async def test_poll_commit_queues_entries_atomically_with_the_validators(store):
    state = FeedState(feed_id="f", etag='"v1"', body_hash="b")
    await store.commit_poll(PollCommit(state, _items("f", 3)))
    # Queued again by a later poll: one item still, not two.
    await store.commit_poll(PollCommit(state, _items("f", 3)))
    assert (await store.load_feeds())["f"].etag == '"v1"'
    versions = await store.entry_versions("f", ["k0", "k1", "k2", "k9"])
    assert set(versions) == {"k0", "k1", "k2"}
    # No date in these entries; the digest of what the feed said of each is kept.
    assert all(v.updated is None and v.digest for v in versions.values())
    assert len({v.digest for v in versions.values()}) == 3
    assert await store.frontier_hosts(NOW) == {"h:80": 0.0}
    claim = await store.claim_articles([("h:80", 2)], NOW, NOW + 60)
    assert [i.entry.key for i in claim.items] == ["k0", "k1"]
    assert claim.host_next == {"h:80": 0.0}  # k2 is still unclaimed
    # Leased items are not claimed twice.
    again = await store.claim_articles([("h:80", 5)], NOW, NOW + 60)
    assert [i.entry.key for i in again.items] == ["k2"] and again.host_next == {"h:80": None}
    first, second = claim.items
    await store.reschedule_article(
        ItemRetry(first.item_id, NOW + 30, 1, "HTTP 503", HostWait("h:80", NOW + 30, "R-A"))
    )
    await store.commit_article(ArticleCommit(second.item_id, "f", "k1", NOW, failure="x"))
    assert await store.host_waits(NOW) == {"h:80": NOW + 30}
    summary = await store.frontier_summary(NOW)
    assert summary.size == 2 and summary.failures["f"][1] == "x"
    (host,) = summary.hosts
    assert (host.queued, host.ready_at, host.attempts, host.last_error) == (
        2,
        NOW + 30,
        1,
        "HTTP 503",
    )
    assert (await store.claim_articles([("h:80", 5)], NOW + 31, NOW + 90)).items[0].attempts == 1


def _lookup(rid: str, body: str, bands: list[int], now: float = NOW) -> ArticleLookup:
    signature = bytes([len(body) % 256]) * 16
    query = DedupQuery(f"sha256:{body}", "s1", bands, 0.0, signature)
    return ArticleLookup(rid, f"https://e.com/{rid}", f"loc/{rid}.json", now, query)


async def test_a_body_is_claimed_when_prepared_not_when_written(store):
    # Two articles finishing together: the second sees the first before its file exists.
    first = await store.prepare_article(_lookup("r1", "same", [1, 2]))
    assert (first.location, first.existing, first.exact, first.candidates) == (
        "loc/r1.json",
        None,
        None,
        [],
    )
    exact = await store.prepare_article(_lookup("r2", "same", [1, 2]))
    assert exact.exact == "r1"
    near = await store.prepare_article(_lookup("r3", "other", [2, 3]))
    assert near.exact is None and [c.record_id for c in near.candidates] == ["r1", "r2"]
    # A redo of r1 (a takeover) keeps its reservation and is not its own duplicate.
    again = await store.prepare_article(_lookup("r1", "same", [1, 2], NOW + 5))
    assert again.location == "loc/r1.json" and again.existing is not None
    assert again.exact is None and [c.record_id for c in again.candidates] == ["r2", "r3"]
    # r2 is dropped as a duplicate: its reservation and claims go with it.
    await store.commit_article(ArticleCommit(1, "f", "k2", NOW, release_record="r2"))
    assert await store.record_by_canonical("https://e.com/r2") is None
    later = await store.prepare_article(_lookup("r4", "other", [2]))
    assert later.exact == "r3" and [c.record_id for c in later.candidates] == []
    assert [
        c.record_id for c in (await store.prepare_article(_lookup("r5", "x", [1]))).candidates
    ] == ["r1"]


async def test_claim_feeds_gives_the_stored_state(store):
    await store.save_feed(FeedState(feed_id="f", etag='"v9"', next_due=NOW - 5))
    claims = await store.claim_feeds([("f", "e.com:443"), ("new", "e.com:443")], NOW)
    assert claims.claimed["f"].etag == '"v9"'
    assert claims.claimed["new"] == FeedState(feed_id="new")
    await store.release_feeds(["f", "new"])


async def test_the_schedule_hands_out_due_feeds_earliest_first(store):
    await store.save_feeds(
        [
            FeedState(feed_id="late", next_due=NOW - 10),
            FeedState(feed_id="early", next_due=NOW - 20),
            FeedState(feed_id="not-yet", next_due=NOW + 100),
        ]
    )
    due = await store.claim_due_feeds(NOW, 5)
    assert list(due) == ["early", "late"] and due["early"].next_due == NOW - 20
    await store.release_feeds(["early", "late"], NOW + 50)


class RecordedFiles:
    """RecordFiles that keep files in memory and note, at each sync (before the commit)
    and each publish (after it), which records the state already calls done (read through
    a connection of its own)."""

    def __init__(self, done_now, fail_on: str = "") -> None:
        self.done_now = done_now
        self.fail_on = fail_on
        self.staged: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {}
        self.unsynced: list[str] = []
        self.synced: list[list[str]] = []
        self.done_at_sync: list[set[str]] = []
        self.queued: list[tuple[StagedFile | None, JournalEntry | None]] = []
        self.published: list[tuple[str | None, JournalEntry | None]] = []
        self.done_at_publish: list[set[str]] = []

    def put(self, data: bytes, location: str) -> StagedFile:
        if location == self.fail_on:
            raise SinkError(f"cannot write record {location}: disk full")
        name = f"staged-{len(self.staged)}"
        self.staged[name] = data
        self.unsynced.append(location)
        return StagedFile(name, location)

    def discard(self, staged: StagedFile) -> None:
        del self.staged[staged.staging_name]

    def sync(self) -> None:
        self.done_at_sync.append(self.done_now())
        self.synced.append(self.unsynced)
        self.unsynced = []

    def queue(self, staged: StagedFile | None, entry: JournalEntry | None) -> None:
        self.queued.append((staged, entry))

    def publish(self) -> None:
        self.done_at_publish.append(self.done_now())
        for staged, entry in self.queued:
            if staged is not None:
                self.files[staged.location] = self.staged.pop(staged.staging_name)
            self.published.append((staged.location if staged else None, entry))
        self.queued = []

    def abandon(self) -> None:
        self.queued = []


def _done_reader(backend):
    if backend.kind == "sqlite":

        def done_now() -> set[str]:
            conn = sqlite3.connect(backend.tmp_path / "state.db")
            try:
                return {r[0] for r in conn.execute("SELECT record_id FROM records WHERE done")}
            finally:
                conn.close()

        return done_now

    def done_pg() -> set[str]:
        with psycopg.connect(backend.url) as conn:
            return {r[0] for r in conn.execute("SELECT record_id FROM records WHERE done")}

    return done_pg


def _write_decision(item, rid: str, body: str):
    """A decide function like the pipeline's: a copied body is dropped (its reservation
    released), any other is written."""

    def decide(prep):
        key = item.entry.key
        if prep.exact is not None:
            commit = ArticleCommit(
                item.item_id, "f", key, NOW, seen_record_id=prep.exact, release_record=rid
            )
            return Settlement(commit, "dropped")
        record = CommitItem(
            rid, f"https://e.com/{rid}", f"sha256:{body}", "f", key, "s1", None, [], NOW
        )
        commit = ArticleCommit(item.item_id, "f", key, NOW, record=record)
        return Settlement(commit, "written", output=(rid.encode(), prep.location))

    return decide


async def test_articles_settled_together_see_each_other_and_their_files_come_first(backend, store):
    await store.commit_poll(PollCommit(FeedState(feed_id="f"), _items("f", 4)))
    items = (await store.claim_articles([("h:80", 4)], NOW, NOW + 60)).items
    files = RecordedFiles(_done_reader(backend), fail_on="loc/r3.json")
    bodies = ["one", "one", "two", "three"]  # the second copies the first
    traffic = backend.traffic
    trips = traffic.round_trips
    results = await asyncio.gather(
        *(
            store.settle_article(
                settle_steps(_lookup(f"r{n}", body, [n]), _write_decision(item, f"r{n}", body)),
                files,
            )
            for n, (item, body) in enumerate(zip(items, bodies, strict=True))
        ),
        return_exceptions=True,
    )
    assert [getattr(r, "outcome", type(r).__name__) for r in results] == [
        "written",
        "dropped",
        "written",
        "SinkError",
    ]
    if backend.kind == "sqlite":  # one call into the state thread, one transaction
        assert traffic.round_trips - trips == 1
        assert traffic.by_call["settle_article"] == 4  # each call still counted by name
    else:  # a prepare per article, then a commit for each one that got that far;
        # the duplicate's prepare asks one more: the story of the record it copies.
        assert traffic.by_call["prepare_article"] == 5
        assert traffic.by_call["settle_article"] >= 3
    # Each file was staged and synced while the state did not yet call it done, and put
    # in place only once it did, with its journal entry (gap-free seq, commit order).
    assert sorted(files.files) == ["loc/r0.json", "loc/r2.json"]
    assert files.staged == {}  # the failed one's staged file was discarded
    assert sorted(loc for batch in files.synced for loc in batch) == sorted(files.files)
    for batch, done in zip(files.synced, files.done_at_sync, strict=True):
        assert not {loc.removeprefix("loc/").removesuffix(".json") for loc in batch} & done
    assert all(done >= {"r0", "r2"} for done in files.done_at_publish[-1:])
    entries = [entry for _loc, entry in files.published]
    assert [(e.seq, e.op, e.record_id, e.path) for e in entries] == [
        (1, "create", "r0", "loc/r0.json"),
        (2, "create", "r2", "loc/r2.json"),
    ]
    assert _done_reader(backend)() == {"r0", "r2"}
    assert await store.journal_since(0, 10) == entries
    assert await store.journal_since(1, 10) == entries[1:]
    assert (await store.journal_latest(["r2", "r1"])) == {"r2": entries[1]}
    # The failed one committed nothing: its item alone is still queued.
    assert (await store.frontier_summary(NOW + 120)).size == 1
    (again,) = (await store.claim_articles([("h:80", 4)], NOW + 120, NOW + 180)).items
    assert again.entry.key == "k3"
    assert await store.record_by_canonical("https://e.com/r1") is None


async def test_candidates_of_the_previous_minhash_scheme_come_back_marked(store):
    await finish_record(store, "old", "sha256:o", [7], NOW - 50, scheme="s0")
    assert await store.fingerprint_schemes(NOW - 100) == {"s0"}
    assert await store.fingerprint_schemes(NOW) == set()
    legacy = DedupQuery("sha256:n", "s0", [7], NOW - 100, b"\1" * 16)
    query = replace(_lookup("new", "n", [8]).dedup, legacy=legacy)
    prep = await store.prepare_article(replace(_lookup("new", "n", [8]), dedup=query))
    assert [(c.record_id, c.legacy) for c in prep.candidates] == [("old", True)]


async def test_a_copy_of_a_copy_is_told_the_first_records_story(store):
    """Stories: the store keeps the story of each copy and gives it with the candidates,
    so a copy of a copy (and a rewrite of a copy) joins the first record's story."""
    signature = b"\x01\x00\x00\x00" * 4
    await finish_record(store, "a1", "sha256:sa", [501], 1.0, key="ka")
    query = DedupQuery("sha256:sb", "s1", [501, 502], 0.0, signature)
    lookup = ArticleLookup("b1", "https://e.com/b1", "loc/b1.json", 2.0, query)
    prep = await store.prepare_article(lookup)
    assert [c.record_id for c in prep.candidates] == ["a1"] and prep.stories == {"a1": "a1"}
    copy = CommitItem(
        "b1", "https://e.com/b1", "sha256:sb", "f", "kb", "s1", signature, [501, 502], 2.0,
        story_id="a1",
    )  # fmt: skip
    await store.commit_article(ArticleCommit(0, "f", "kb", 2.0, record=copy))
    # A copy of the copy: only b1 shares its band, and b1's story is a1's.
    query = DedupQuery("sha256:sc", "s1", [502], 0.0, signature)
    prep = await store.prepare_article(
        ArticleLookup("c1", "https://e.com/c1", "loc/c1.json", 3.0, query)
    )
    assert [c.record_id for c in prep.candidates] == ["b1"] and prep.stories == {"b1": "a1"}
    # The exact body of the copy, and the copy rewritten: the same story.
    exact = await store.prepare_article(
        ArticleLookup(
            "d1", "https://e.com/d1", "loc/d1.json", 4.0, DedupQuery("sha256:sb", "s1", [], 0.0)
        )
    )
    assert exact.exact == "b1" and exact.stories["b1"] == "a1"
    rewrite = await store.prepare_article(
        ArticleLookup("b1", "https://e.com/b1", "loc/b1.json", 5.0, None, want_signature=True)
    )
    assert rewrite.stories == {"b1": "a1"}
