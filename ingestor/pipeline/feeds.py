"""Polling one feed: fetch with its validators, parse in a worker, queue its new entries in
the frontier with the feed's new state in one store commit. Articles never block a poll.

poll_feed(feed):
    skip if disabled (410) or the server asked us to wait      (core.polling decides)
    response = fetch feed with stored validators               # 304: done, nothing parsed
    if body hash == last body hash: done                        # unchanged: nothing parsed
    parsed = parse in a worker process
    items = frontier.plan_items(entries this feed never produced, or updated ones)
    store.commit_poll(feed state + validators + items)          # one transaction
    dispatcher.add(items' hosts)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence

from ingestor.analyze.jobs import parse_feed_job
from ingestor.config.model import FeedConfig
from ingestor.core import frontier, schedule
from ingestor.core.dedup import new_entries, republished_entries, updated_entries
from ingestor.core.entry import ParsedFeed
from ingestor.core.frontier import NewItem
from ingestor.core.payload import feed_settings
from ingestor.core.polling import feed_fingerprint, with_meta
from ingestor.core.state import FeedState, HostWait, PollCommit, evolve
from ingestor.core.urls import host_key
from ingestor.errors import (
    FetchError,
    GoneError,
    IngestorError,
    ParseError,
    RateLimitedError,
    RetryLater,
    WorkerError,
)
from ingestor.http.fetcher import FetchResult
from ingestor.pipeline.dispatcher import ArticleDispatcher
from ingestor.pipeline.outcomes import PollOutcome, PollStatus
from ingestor.pipeline.parts import Parts, UsesParts

log = logging.getLogger(__name__)


class FeedPoller(UsesParts):
    def __init__(self, parts: Parts, dispatcher: ArticleDispatcher) -> None:
        super().__init__(parts)
        self.dispatcher = dispatcher
        self.states: dict[str, FeedState] = {}
        self._feed_locks: dict[str, asyncio.Lock] = {}

    def state_of(self, feed: FeedConfig) -> FeedState:
        return self.states.get(feed.feed_id) or FeedState(feed_id=feed.feed_id)

    async def poll_feed(
        self,
        feed: FeedConfig,
        force: bool = False,
        after_wait: bool = False,
        claimed: FeedState | None = None,
    ) -> PollOutcome:
        """Poll one feed. `force`: whatever its interval (run --once), still honouring
        what the server asked for and the error backoff; `after_wait`: the poll follows a
        wait the server asked for in this same pass, so the error backoff is not applied.
        `claimed`: a shared store already gave this instance the poll, with this state."""
        lock = self._feed_locks.setdefault(feed.feed_id, asyncio.Lock())
        if lock.locked():
            return PollOutcome(feed.feed_id, PollStatus.SKIPPED)
        async with lock:
            try:
                if not self.store.shared:
                    return await self._poll_feed(feed, force, after_wait)
                return await self._poll_claimed(feed, force, after_wait, claimed)
            finally:
                self._feed_locks.pop(feed.feed_id, None)

    async def _poll_claimed(
        self, feed: FeedConfig, force: bool, after_wait: bool, claimed: FeedState | None
    ) -> PollOutcome:
        """Several instances share the state: poll only with the feed's lease (and its
        host's), from the feed's current state, which another instance may have moved on."""
        if claimed is None:
            host = host_key(self.state_of(feed).url)
            claims = await self.store.claim_feeds([(feed.feed_id, host)], time.time(), force)
            claimed = claims.claimed.get(feed.feed_id)
            if claimed is None:
                when, why = claims.busy[feed.feed_id]
                log.debug("feed %s: not polled here now: %s", feed.url, why)
                return PollOutcome(feed.feed_id, PollStatus.SKIPPED, retry_at=when)
        self.states[feed.feed_id] = claimed
        outcome: PollOutcome | None = None
        try:
            outcome = await self._poll_feed(feed, force, after_wait)
            return outcome
        finally:
            # A poll that committed has given the feed back already; one that did not
            # (skipped, disabled, cut short) is due again when the poll says, or later.
            schedule_config = self.config.schedule
            later = time.time() + schedule.error_backoff(
                1, schedule_config.interval, schedule_config
            )
            retry_at = outcome.retry_at if outcome is not None else None
            await self.store.release_feeds([feed.feed_id], retry_at or later)

    async def _poll_feed(self, feed: FeedConfig, force: bool, after_wait: bool) -> PollOutcome:
        state = self.state_of(feed)
        now = time.time()
        if state.disabled_reason:
            if state.disabled_config == feed_fingerprint(feed):
                return PollOutcome(feed.feed_id, PollStatus.DISABLED, error=state.disabled_reason)
            log.info(
                "feed %s: configuration changed, re-enabling (was: %s)",
                feed.url,
                state.disabled_reason,
            )
            state = evolve(state, disabled_reason=None, disabled_config=None, error_count=0)
        waiting = schedule.blocked_until(state, now, after_wait) if force else 0.0
        if waiting > now:
            # Only a server's Retry-After invites a poll right after it; a Cache-Control
            # lifetime or the error backoff mean "not in this pass".
            retry_at = waiting if waiting <= state.not_before else None
            return PollOutcome(feed.feed_id, PollStatus.SKIPPED, retry_at=retry_at)
        host_wait = self.fetcher.limiter.not_before(host_key(state.url))
        if host_wait > now:
            return PollOutcome(feed.feed_id, PollStatus.SKIPPED, retry_at=host_wait)
        self.metrics.inc("feeds_polled")
        started = time.perf_counter()
        try:
            response = await self.fetcher.fetch_feed(
                state.url, state.etag, state.last_modified, feed.request
            )
        except FetchError as exc:
            return await self._feed_failed(feed, state, exc)
        finally:
            self.metrics.observe("fetch_feed", time.perf_counter() - started)
        state = self._note_redirect(feed, state, response)
        state = evolve(state, last_fetch_at=now, fresh_until=now + (response.max_age or 0.0))
        if response.not_modified:
            self.metrics.inc("feeds_not_modified")
            return await self._feed_succeeded(
                feed, state, PollOutcome(feed.feed_id, PollStatus.NOT_MODIFIED)
            )
        body_hash = hashlib.sha256(response.body).hexdigest()
        # Validators are stored only with a body that was parsed (or is known unchanged): a
        # parse that fails for a passing reason (a worker time limit) is redone next poll.
        validators = {"etag": response.etag, "last_modified": response.last_modified}
        if body_hash == state.body_hash:
            self.metrics.inc("feeds_unchanged")
            return await self._feed_succeeded(
                feed,
                evolve(state, **validators),
                PollOutcome(feed.feed_id, PollStatus.UNCHANGED),
            )
        started = time.perf_counter()
        try:
            parsed, parse_seconds = await self.pool.run(parse_feed_job, response.retrieved())
            self.metrics.observe("parse", parse_seconds)
            self.metrics.cpu("parse", parse_seconds)
        except (ParseError, WorkerError) as exc:
            return await self._feed_failed(feed, state, exc)
        finally:
            self.metrics.observe("parse_roundtrip", time.perf_counter() - started)
        if parsed.warning:
            log.info("feed %s: %s", feed.url, parsed.warning)
        state = with_meta(state, parsed.meta)
        items = await self._new_items(feed, state, parsed, now)
        times = [
            e.timestamp()
            for e in (x.published or x.updated for x in parsed.entries)
            if e is not None and e.timestamp() <= now + 86400
        ]
        state = evolve(
            state,
            **validators,
            body_hash=body_hash,
            recent_entry_times=schedule.merge_entry_times(state.recent_entry_times, times),
            items=state.items + sum(not i.is_update for i in items),
        )
        updated = sum(i.is_update for i in items)
        outcome = PollOutcome(
            feed.feed_id, PollStatus.OK, new_entries=len(items) - updated, updated_entries=updated
        )
        return await self._feed_succeeded(feed, state, outcome, items)

    async def _new_items(
        self, feed: FeedConfig, state: FeedState, parsed: ParsedFeed, now: float
    ) -> list[NewItem]:
        keys = [e.key for e in parsed.entries]
        aliases = [a for e in parsed.entries for a in e.aliases]
        known = await self.store.entry_versions(feed.feed_id, keys + aliases)
        republished = republished_entries(parsed.entries, set(known))
        unseen = set(keys) - set(known) - {e.key for e in republished}
        fresh = new_entries(parsed.entries, unseen)
        changed = []
        if self.config.dedup.updates:
            changed = updated_entries(parsed.entries, known) + republished
        return frontier.plan_items(
            feed.feed_id,
            [(e, False) for e in fresh] + [(e, True) for e in changed],
            fetch_articles=feed.fetch_articles,
            feed_title=state.title,
            feed_language=state.language,
            tracking=self.tracking,
            now=now,
            settings=feed_settings(feed),
        )

    def _note_redirect(
        self, feed: FeedConfig, state: FeedState, response: FetchResult
    ) -> FeedState:
        if response.permanent_url and response.permanent_url != state.url:
            log.warning(
                "feed %s: moved permanently to %s; polling the new URL from now on "
                "(the configured URL stays the feed's identity)",
                feed.url,
                response.permanent_url,
            )
            return evolve(state, effective_url=response.permanent_url)
        return state

    async def _commit_poll(
        self,
        state: FeedState,
        items: Sequence[NewItem] = (),
        host_wait: HostWait | None = None,
    ) -> None:
        self.states[state.feed_id] = state
        await self.store.commit_poll(PollCommit(state, items, host_wait))
        if items:
            self.dispatcher.add(frontier.earliest_by_host(items))

    async def _feed_succeeded(
        self,
        feed: FeedConfig,
        state: FeedState,
        outcome: PollOutcome,
        items: Sequence[NewItem] = (),
    ) -> PollOutcome:
        now = time.time()
        state = evolve(state, error_count=0, last_error=None, last_success_at=now)
        state = evolve(
            state, next_due=schedule.next_due(feed, state, self.config.schedule, now, self.rng)
        )
        await self._commit_poll(state, items)
        return outcome

    async def _feed_failed(
        self, feed: FeedConfig, state: FeedState, exc: IngestorError
    ) -> PollOutcome:
        now = time.time()
        kind = exc.kind
        self.metrics.inc("feed_errors", kind)
        message = str(exc)
        # A server that said when to come back (Retry-After) set a date, not a failure
        # streak: the error backoff grows only for failures without a stated time.
        server_wait = exc.not_before if isinstance(exc, RetryLater) and exc.not_before else None
        state = evolve(
            state,
            error_count=state.error_count if server_wait else state.error_count + 1,
            last_error=message,
            last_error_at=now,
            last_fetch_at=now,
        )
        where = exc.url or feed.url
        detail = exc.reason if where == feed.url else f"{where}: {exc.reason}"
        if isinstance(exc, GoneError):
            state = evolve(
                state,
                disabled_reason=f"410 Gone at {exc.url}; disabled until the "
                "feed's configuration changes",
                disabled_config=feed_fingerprint(feed),
            )
            log.error("feed %s: %s", feed.url, state.disabled_reason)
        elif server_wait is not None:
            log.info(
                "feed %s: %s; polled again in %.0fs, as the server asked",
                feed.url,
                detail,
                max(server_wait - now, 0.0),
            )
        else:
            # The error's own text names the URL it failed on; the log line names the feed.
            log.warning("feed %s: %s (failure %d in a row)", feed.url, detail, state.error_count)
        host_wait = None
        if server_wait is not None:
            state = evolve(state, not_before=server_wait)
            if isinstance(exc, RateLimitedError):
                host_wait = HostWait(host_key(exc.url), server_wait, exc.reason)
        state = evolve(
            state,
            next_due=schedule.next_due(
                feed,
                state,
                self.config.schedule,
                now,
                self.rng,
                failed=True,
                server_wait=server_wait,
            ),
        )
        await self._commit_poll(state, host_wait=host_wait)
        return PollOutcome(
            feed.feed_id,
            PollStatus.FAILED,
            error=f"{feed.url}: {message}" if not message.startswith(feed.url) else message,
            retry_at=server_wait,
        )
