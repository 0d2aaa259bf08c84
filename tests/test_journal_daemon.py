"""The real daemon killed with -9 ten times while `ingestor tail --follow --cursor` runs:
the journal's invariants hold after each kill (once the next start has reconciled), and
the consumer receives every line exactly once across its own restarts, apart from the
batch after a consumer that was itself killed with -9 (the documented repeat)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
from pathlib import Path

import pytest
from aiohttp import web

from ingestor.pipeline.journal_upkeep import reconcile_journal
from ingestor.sink.files import FileSink
from ingestor.sink.journal_files import JournalWriter
from ingestor.store.sqlite import SQLiteStateStore
from tests.conftest import article_html, distinct_story
from tests.journal_checks import check_journal, journal_lines
from tests.test_daemon import Farm, start_daemon, wait_for

FEEDS, ITEMS = 4, 30


class ChangingFarm(Farm):
    """Atom feeds whose entries appear over time and whose stories are rewritten (a new
    <updated> and a new text): the journal gets creates, updates and, with a short
    retention, deletes."""

    def __init__(self) -> None:
        super().__init__(FEEDS, ITEMS, latency=(0.01, 0.05))
        self.visible = 10
        self.versions: dict[tuple[int, int], int] = {}

    async def feed(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        entries = "".join(
            f"<entry><id>urn:{n}:{i}</id><title>Story {n}-{i}</title>"
            f"<link href='{self.base}/a/{n}/{i}.html'/>"
            f"<updated>2024-01-01T{self.versions.get((n, i), 0):02d}:00:00Z</updated></entry>"
            for i in range(min(self.visible, ITEMS))
        )
        body = (
            "<?xml version='1.0'?><feed xmlns='http://www.w3.org/2005/Atom'>"
            f"<title>Feed {n}</title><id>urn:feed:{n}</id>"
            f"<updated>2024-01-01T00:00:00Z</updated>{entries}</feed>"
        )
        return web.Response(text=body, content_type="application/atom+xml")

    async def article(self, request: web.Request) -> web.Response:
        n, i = int(request.match_info["feed"]), int(request.match_info["item"])
        await asyncio.sleep(random.uniform(*self.latency))
        version = self.versions.get((n, i), 0)
        story = distinct_story(n * 1000 + i + 100_000 * version)
        return web.Response(text=article_html(f"Story {n}-{i}", story), content_type="text/html")

    def change(self, round_no: int) -> None:
        # Stories visible for two rounds already (most are in by now) are rewritten.
        for n in range(FEEDS):
            for i in range(round_no % 3, max(self.visible - 4, 0), 3):
                self.versions[(n, i)] = self.versions.get((n, i), 0) + 1
        self.visible += 2


class Consumer:
    """`ingestor tail --follow --cursor` with the test reading its output; restarted."""

    def __init__(self, config: Path, cursor: Path) -> None:
        self.config = config
        self.cursor = cursor
        self.sessions: list[tuple[int, list[dict]]] = []  # (cursor at start, lines)
        self.killed: set[int] = set()  # sessions stopped with SIGKILL
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        start = int(self.cursor.read_text()) if self.cursor.exists() else 0
        lines: list[dict] = []
        self.sessions.append((start, lines))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingestor", "tail", "--config", str(self.config),
            "--follow", "--cursor", str(self.cursor),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.reader = asyncio.create_task(self._read(self.process, lines))

    @staticmethod
    async def _read(process: asyncio.subprocess.Process, lines: list[dict]) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(json.loads(line))

    async def stop(self, how: signal.Signals) -> int:
        assert self.process is not None and self.reader is not None
        if how == signal.SIGKILL:
            self.killed.add(len(self.sessions) - 1)
        self.process.send_signal(how)
        code = await asyncio.wait_for(self.process.wait(), 20)
        await asyncio.wait_for(self.reader, 20)  # everything written before it ended
        return code

    def last_seq(self) -> int:
        return max((line["seq"] for _s, lines in self.sessions for line in lines), default=0)


async def _reconcile_as_the_next_start_does(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "state" / "ingestor.db")
    await store.open()
    try:
        out = tmp_path / "out"
        sink = FileSink(out, journal=JournalWriter(out))
        sink.prepare()
        await reconcile_journal(store, sink)
    finally:
        await store.close()


@pytest.mark.timeout(300)
async def test_kill_9_ten_times_with_a_tail_consumer_following(tmp_path, serve):
    farm = ChangingFarm()
    farm.base = await serve(farm.app)
    config = tmp_path / "ingestor.yaml"
    feeds = "".join(f"  - url: {url}\n" for url in farm.feed_urls())
    config.write_text(
        "output:\n  dir: out\n  retention: 20s\n  journal_segment_size: 4KiB\n"
        "state:\n  path: state/ingestor.db\n"
        "http:\n  allowed_networks: ['127.0.0.1/32']\n  retries: 0\n"
        "schedule:\n  interval: 1s\n  min_interval: 1s\n  tick: 200ms\n  adaptive: false\n"
        "dedup:\n  updates: true\n"
        "extraction:\n  workers: 2\n"
        "pipeline:\n  article_concurrency: 8\n  queue_size: 16\n  shutdown_grace: 5s\n"
        f"feeds:\n{feeds}"
    )
    log = tmp_path / "daemon.log"
    out = tmp_path / "out"
    consumer = Consumer(config, tmp_path / "cursor")
    await consumer.start()
    rng = random.Random(18)
    daemon = None
    kills = 0

    # Retention removes old closed segments: the whole history is gathered as it goes.
    history: dict[int, dict] = {}

    def lines_now() -> int:
        history.update((line["seq"], line) for line in journal_lines(out, live=True))
        return len(history)

    try:
        for round_no in range(10):
            before = lines_now()
            daemon = await start_daemon(config, log)
            await wait_for(lambda b=before: lines_now() > b, 30, 0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            daemon.kill()
            await daemon.wait()
            kills += 1
            await _reconcile_as_the_next_start_does(tmp_path)
            check_journal(out, history)
            farm.change(round_no)
            if round_no % 3 == 2:  # the consumer restarts too: cleanly...
                assert await consumer.stop(signal.SIGINT) == 0
                await consumer.start()
            if round_no == 4:  # ...and once killed itself
                await consumer.stop(signal.SIGKILL)
                await consumer.start()
        daemon = await start_daemon(config, log)
        # Every story in, every rewrite settled, and the retention caught up.
        await wait_for(
            lambda: lines_now() and len({v["id"] for v in history.values()}) >= FEEDS * ITEMS, 90
        )
        settled = lines_now()
        while await wait_for(lambda s=settled: lines_now() > s, 4):
            settled = lines_now()
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0, log.read_text()[-3000:]
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.kill()
    check_journal(out, history)
    total = max(history)
    assert sorted(history) == list(range(1, total + 1))
    lines = [history[seq] for seq in range(1, total + 1)]
    assert await wait_for(lambda: consumer.last_seq() >= total, 30)
    assert await consumer.stop(signal.SIGINT) == 0

    assert kills == 10 and len(consumer.killed) == 1
    ops = [line["op"] for line in lines]
    assert ops.count("create") == FEEDS * ITEMS
    assert ops.count("update") >= 10 and ops.count("delete") >= 10, ops
    # Per record: one create, then its updates, then at most one delete, nothing after.
    per_record: dict[str, list[str]] = {}
    for line in lines:
        per_record.setdefault(line["id"], []).append(line["op"])
    for record_ops in per_record.values():
        assert record_ops[0] == "create" and record_ops.count("create") == 1
        assert "delete" not in record_ops[:-1]

    # The consumer: each session goes on right after its cursor, in order, without a gap;
    # the sessions after a clean stop start exactly where the previous one ended.
    received: list[int] = []
    previous_end, previous_clean = 0, True
    for index, (start, session) in enumerate(consumer.sessions):
        seqs = [line["seq"] for line in session]
        assert seqs == list(range(start + 1, start + 1 + len(seqs))), index
        if previous_clean:
            assert start == previous_end, (index, start, previous_end)
        else:
            assert start <= previous_end  # the killed session's last batch comes again
        received += seqs
        previous_end = seqs[-1] if seqs else start
        previous_clean = index not in consumer.killed
    assert sorted(set(received)) == list(range(1, total + 1))
    repeats = len(received) - len(set(received))
    assert repeats <= 500  # at most one batch, and only at the killed consumer's restart
    by_seq = {line["seq"]: line for _s, session in consumer.sessions for line in session}
    assert [by_seq[seq]["op"] for seq in range(1, total + 1)] == ops
    # Creates come with the record itself while the file is still there.
    assert any(line["op"] == "create" and line["record"] for line in by_seq.values())
