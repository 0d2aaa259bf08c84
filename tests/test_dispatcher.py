"""The article dispatcher over a real store: items a poll commits while the dispatcher is
reading the board are worked in the same pass, never left for the next run.

With PostgreSQL a poll's commit and the dispatcher's read use different connections, so
the read can start before the commit and return after the poll has told the dispatcher
about its items. The store calls here are the real ones; the poll is run between the
read and its return, which is the order a loaded machine produced in CI (two of four new
articles left queued by `run --once`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ingestor.core.frontier import FrontierItem
from ingestor.core.state import ArticleCommit, FeedState, PollCommit
from ingestor.http.politeness import HostLimiter
from ingestor.pipeline.dispatcher import ArticleDispatcher
from ingestor.store.protocol import StateStore
from tests.test_store_contract import Backend, _items, backend  # noqa: F401  (the fixture)

HOST = "h:80"


class Worked:
    """The work: commits each item as done and remembers its link."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.links: list[str | None] = []

    async def __call__(self, item: FrontierItem) -> float | None:
        self.links.append(item.entry.link)
        await self.store.commit_article(
            ArticleCommit(item.item_id, item.feed_id, item.entry.key, time.time())
        )
        return None


def poll_during(
    read: Callable[..., Awaitable], poll: Callable[[], Awaitable[None]]
) -> Callable[..., Awaitable]:
    """`read`, with `poll` run once after the store answered and before the caller sees
    the answer."""
    pending = [poll]

    async def wrapped(*args):
        answer = await read(*args)
        if pending:
            await pending.pop()()
        return answer

    return wrapped


def dispatcher_for(store: StateStore, work: Worked) -> ArticleDispatcher:
    return ArticleDispatcher(
        store, HostLimiter(per_host=2), work, concurrency=4, per_host=2, batch=4, lease_seconds=60
    )


async def commit_and_tell(
    store: StateStore, dispatcher: ArticleDispatcher, feed: str, count: int
) -> None:
    await store.commit_poll(
        PollCommit(FeedState(feed_id=feed), _items(feed, count, HOST, path=feed))
    )
    dispatcher.add({HOST: 0.0})


async def test_items_added_while_a_claim_is_answered_are_still_worked(backend):  # noqa: F811
    store = backend.make()
    await store.open()
    work = Worked(store)
    dispatcher = dispatcher_for(store, work)
    try:
        await dispatcher.start()
        # The claim takes both of f's items and answers "nothing more on this host"; g's
        # two items are committed and added before that answer is read.
        store.claim_articles = poll_during(  # type: ignore[method-assign]
            store.claim_articles, lambda: commit_and_tell(store, dispatcher, "g", 2)
        )
        await commit_and_tell(store, dispatcher, "f", 2)
        await asyncio.wait_for(dispatcher.wait_settled(0.5), 10)
    finally:
        await dispatcher.stop()
        await store.close()
    assert sorted(work.links) == [f"http://{HOST}/{p}" for p in ("f/0", "f/1", "g/0", "g/1")]


async def test_items_added_while_the_shared_board_is_read_are_still_worked(pg_url):
    store = Backend("postgresql", None, pg_url).make()
    await store.open()
    work = Worked(store)
    dispatcher = dispatcher_for(store, work)
    try:
        # The board is read from the store (others' items) before f's items are committed;
        # f tells the dispatcher about them before that read is applied.
        store.frontier_hosts = poll_during(  # type: ignore[method-assign]
            store.frontier_hosts, lambda: commit_and_tell(store, dispatcher, "f", 3)
        )
        await dispatcher.start()
        await asyncio.wait_for(dispatcher.wait_settled(0.5), 10)
    finally:
        await dispatcher.stop()
        await store.close()
    assert sorted(work.links) == [f"http://{HOST}/f/{i}" for i in range(3)]
