"""Webhook sinks: the journal delivered in order, signed, never a line skipped, across a
receiver that fails, stalls or is down, and across the daemon killed with -9."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import re
import signal
from pathlib import Path

import pytest
from aiohttp import web

from ingestor.core import delivery
from ingestor.core.journal import JournalEntry
from tests.conftest import ingestor_cli
from tests.journal_checks import journal_lines
from tests.test_daemon import start_daemon, wait_for
from tests.test_journal_daemon import ChangingFarm

SECRET = "s3cret-for-tests"


class Receiver:
    """A webhook receiver on loopback. `fail_rate` of the requests get a 500, `stall`
    of them answer only after the sender's timeout, and `down` answers 503 to all."""

    def __init__(self, fail_rate: float = 0.0, stall: float = 0.0, delay: float = 0.0) -> None:
        self.fail_rate, self.stall, self.delay = fail_rate, stall, delay
        self.down = False
        self.generation = 0  # set by the test: which daemon start a request came from
        self.requests: list[dict] = []
        self.rng = random.Random(30)
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        lines = json.loads(body)["lines"]
        entry = {
            "generation": self.generation,
            "seqs": [line["seq"] for line in lines],
            "lines": lines,
            "signed": request.headers.get("X-Ingestor-Signature") == expected,
            "type": request.headers.get("Content-Type"),
            "acked": False,
        }
        self.requests.append(entry)
        if self.down:
            return web.Response(status=503)
        roll = self.rng.random()
        if roll < self.fail_rate:
            return web.Response(status=500)
        if roll < self.fail_rate + self.stall:
            await asyncio.sleep(1.5)  # past the sink's 1 s timeout
            return web.Response(status=200)  # too late: the sender gave up
        await asyncio.sleep(self.delay)
        entry["acked"] = True
        return web.Response(status=204)

    def acked(self) -> list[dict]:
        return [r for r in self.requests if r["acked"]]

    def last_acked(self) -> int:
        return max((s for r in self.acked() for s in r["seqs"]), default=0)


def check_order(receiver: Receiver, total: int, restarts_allowed: bool = True) -> None:
    """Every seq 1..total acknowledged; no request ever began after a line not yet
    acknowledged (no skip-ahead); a seq acknowledged twice only in the first batch a new
    daemon start acknowledged (the at-least-once boundary)."""
    assert all(r["signed"] and r["type"] == "application/json" for r in receiver.requests)
    acked_up_to = 0
    seen: set[int] = set()
    first_of_generation: dict[int, int] = {}
    for index, request in enumerate(receiver.requests):
        seqs = request["seqs"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # in order, no gap
        assert seqs[0] <= acked_up_to + 1, (seqs[0], acked_up_to)  # never a skip
        if not request["acked"]:
            continue
        first_of_generation.setdefault(request["generation"], index)
        repeated = seen.intersection(seqs)
        if repeated:
            assert restarts_allowed and first_of_generation[request["generation"]] == index, (
                sorted(repeated),
                request["generation"],
            )
        seen.update(seqs)
        acked_up_to = max(acked_up_to, seqs[-1])
    assert sorted(seen) == list(range(1, total + 1))


def write_config(path: Path, farm: ChangingFarm, sinks: str, extra: str = "") -> None:
    feeds = "".join(f"  - url: {url}\n" for url in farm.feed_urls())
    path.write_text(
        "output:\n  dir: out\nstate:\n  path: state/ingestor.db\n"
        "http:\n  allowed_networks: ['127.0.0.1/32']\n  retries: 0\n"
        "schedule:\n  interval: 1s\n  min_interval: 1s\n  tick: 200ms\n  adaptive: false\n"
        "extraction:\n  workers: 2\n"
        "pipeline:\n  article_concurrency: 8\n  queue_size: 16\n  shutdown_grace: 3s\n"
        f"  once_max_wait: 5s\n{extra}"
        f"sinks:\n{sinks}feeds:\n{feeds}"
    )


def webhook(url: str, name: str, batch: int = 10, start: str = "oldest") -> str:
    return (
        f"  - webhook:\n      url: {url}\n      secret: {SECRET}\n      batch: {batch}\n"
        f"      timeout: 1s\n      name: {name}\n      from: {start}\n"
        f"      headers: {{X-Team: news}}\n"
    )


def journal_by_seq(out: Path) -> dict[int, dict]:
    return {line["seq"]: line for line in journal_lines(out)}


def test_the_batch_body_the_signature_and_the_retry_delays():
    body = delivery.batch_body([b'{"seq":1}\n', b'{"seq":2}\n'])
    assert json.loads(body) == {"lines": [{"seq": 1}, {"seq": 2}]}
    # What the README's receiver example computes.
    assert delivery.signature("key", b"{}") == (
        "sha256=" + hmac.new(b"key", b"{}", hashlib.sha256).hexdigest()
    )
    assert [delivery.retry_delay(n) for n in (1, 2, 3, 6, 7, 50)] == [1, 2, 4, 32, 60, 60]
    assert [delivery.acknowledged(s) for s in (200, 204, 299, 301, 404, 500)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    entries = [JournalEntry(n, "create", f"r{n}", f"p{n}", None, 100.0, "") for n in (1, 2, 3)]
    # A line whose file is not in place yet holds back the ones after it, for a while.
    assert delivery.ready_lines(entries, [True, False, True], 110.0) == entries[:1]
    assert delivery.ready_lines(entries, [True, False, True], 200.0) == entries


@pytest.mark.timeout(300)
async def test_the_daemon_killed_3_times_delivers_every_line_in_order(tmp_path, serve):
    farm = ChangingFarm()
    farm.base = await serve(farm.app)
    receiver = Receiver(fail_rate=0.25, stall=0.05)
    receiver.base = await serve(receiver.app)
    config = tmp_path / "ingestor.yaml"
    write_config(config, farm, webhook(f"{receiver.base}/hook", "main"))
    log = tmp_path / "daemon.log"
    out = tmp_path / "out"
    daemon = None
    try:
        for round_no in range(3):
            receiver.generation = round_no
            daemon = await start_daemon(config, log)
            acked = receiver.last_acked()
            await wait_for(lambda a=acked: receiver.last_acked() > a + 5, 60, 0.02)
            await asyncio.sleep(random.Random(round_no).uniform(0.0, 0.5))
            daemon.kill()
            await daemon.wait()
            farm.change(round_no)
        receiver.generation = 3
        daemon = await start_daemon(config, log)
        # Every visible story in (a record each), then quiet, then all delivered.
        visible = 4 * farm.visible
        assert await wait_for(
            lambda: len({x["id"] for x in journal_lines(out, live=True)}) >= visible, 90
        )
        settled = -1
        while settled != len(journal_lines(out, live=True)):
            settled = len(journal_lines(out, live=True))
            await wait_for(lambda s=settled: receiver.last_acked() >= s, 60)
            await asyncio.sleep(3.0)
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0, log.read_text()[-3000:]
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.kill()
    journal = journal_by_seq(out)
    total = max(journal)
    assert sorted(journal) == list(range(1, total + 1))
    check_order(receiver, total)
    failed = [r for r in receiver.requests if not r["acked"]]
    assert failed, "the receiver's failures were never exercised"
    # Every line delivered is the journal's line, its record included.
    for request in receiver.acked():
        for line in request["lines"]:
            expected = journal[line["seq"]]
            assert {k: line[k] for k in expected} == expected
            assert line["op"] == "delete" or line["record"]["id"] == line["id"]


async def test_a_receiver_down_for_the_whole_run_gets_everything_when_back(tmp_path, serve):
    farm = ChangingFarm()
    farm.base = await serve(farm.app)
    down = Receiver()
    down.down = True
    down.base = await serve(down.app)
    slow = Receiver(delay=0.2)
    slow.base = await serve(slow.app)
    config = tmp_path / "ingestor.yaml"
    write_config(
        config,
        farm,
        webhook(f"{down.base}/hook", "down", batch=7) + webhook(f"{slow.base}/hook", "slow", 3),
    )
    metrics = tmp_path / "metrics.prom"
    run = await ingestor_cli(
        "run", "--config", str(config), "--once", "--metrics-file", str(metrics), timeout=180
    )
    assert run.returncode == 0, run.stderr[-3000:]
    total = max(journal_by_seq(tmp_path / "out"))
    assert total >= 40 and down.acked() == [] and down.requests
    exposed = metrics.read_text()
    assert f'ingestor_sink_lag_lines{{sink="down"}} {total}' in exposed
    failures = re.search(r'ingestor_sink_delivery_failures_total\{sink="down"\} (\d+)', exposed)
    assert failures and int(failures[1]) >= 2
    status = await ingestor_cli("status", "--config", str(config), "--sinks", "--json")
    rows = {row["sink"]: row for row in json.loads(status.stdout)}
    assert rows["down"]["cursor"] == 0 and rows["down"]["lag_lines"] == total
    assert rows["down"]["last_error"] == "HTTP 503" and rows["down"]["failures"] >= 2
    assert rows["down"]["lag_seconds"] > 0
    # The slow sink got as far as the pass's wait allowed, in batches of 3.
    assert all(len(r["seqs"]) <= 3 for r in slow.requests)
    down.down = False
    run = await ingestor_cli("run", "--config", str(config), "--once", timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    check_order(down, total, restarts_allowed=False)
    assert all(len(r["seqs"]) <= 7 for r in down.requests)
    await wait_for(lambda: slow.last_acked() == total, 1)
    run = await ingestor_cli("run", "--config", str(config), "--once", timeout=180)
    check_order(slow, total, restarts_allowed=False)
    status = await ingestor_cli("status", "--config", str(config), "--sinks", "--json")
    rows = {row["sink"]: row for row in json.loads(status.stdout)}
    assert rows["down"]["lag_lines"] == 0 and rows["down"]["last_error"] is None
    assert "X-Team" not in status.stdout and SECRET not in status.stdout

    # `sinks replay` rewinds within the journal: the next run sends from line 5 again.
    replay = await ingestor_cli("sinks", "replay", "down", "--config", str(config), "--from", "5")
    assert replay.returncode == 0, replay.stderr
    before = len(down.requests)
    run = await ingestor_cli("run", "--config", str(config), "--once", timeout=180)
    again = [s for r in down.requests[before:] for s in r["seqs"]]
    assert again == list(range(5, total + 1))
    wrong = await ingestor_cli("sinks", "replay", "nope", "--config", str(config), "--from", "1")
    assert wrong.returncode == 2 and "no sink named 'nope' (sinks: down, slow)" in wrong.stderr
    # Past the journal's end: refused, and the cursor stays where it was.
    past = str(total + 2)
    beyond = await ingestor_cli("sinks", "replay", "down", "--config", str(config), "--from", past)
    assert beyond.returncode == 2
    assert f"--from {past} is past the journal's end (its last line is {total})" in beyond.stderr
    status = await ingestor_cli("status", "--config", str(config), "--sinks", "--json")
    rows = {row["sink"]: row for row in json.loads(status.stdout)}
    assert rows["down"]["cursor"] == total and rows["down"]["lag_lines"] == 0


async def test_a_new_sink_from_latest_starts_after_the_last_line(tmp_path, serve):
    farm = ChangingFarm()
    farm.base = await serve(farm.app)
    receiver = Receiver()
    receiver.base = await serve(receiver.app)
    config = tmp_path / "ingestor.yaml"
    write_config(config, farm, "")
    run = await ingestor_cli("run", "--config", str(config), "--once", timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    first = max(journal_by_seq(tmp_path / "out"))
    write_config(config, farm, webhook(f"{receiver.base}/hook", "late", start="latest"))
    farm.change(0)
    run = await ingestor_cli("run", "--config", str(config), "--once", timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    total = max(journal_by_seq(tmp_path / "out"))
    delivered = [s for r in receiver.acked() for s in r["seqs"]]
    assert total > first and delivered == list(range(first + 1, total + 1))


def test_sinks_need_the_journal_and_names_of_their_own(tmp_path):
    from ingestor.config.load import parse_config
    from ingestor.errors import ConfigError

    base = {"output": {"dir": str(tmp_path), "journal": False}, "state": {"path": "s.db"}}
    hook = {"webhook": {"url": "http://127.0.0.1:9/h?t=tok", "secret": "hush", "from": "never"}}
    with pytest.raises(ConfigError) as caught:
        parse_config({**base, "sinks": [hook, hook]}, "c.yaml")
    problems = "\n".join(caught.value.problems)
    assert "c.yaml: sinks[0].webhook.from: must be one of oldest, latest" in problems
    hook["webhook"].pop("from")
    with pytest.raises(ConfigError) as caught:
        parse_config({**base, "sinks": [hook, hook]}, "c.yaml")
    problems = "\n".join(caught.value.problems)
    assert "sinks[1].webhook.name: '127.0.0.1:9/h' is the name of another sink" in problems
    assert "c.yaml: sinks: webhook sinks deliver the change journal" in problems
    config = parse_config(
        {"output": {"dir": str(tmp_path)}, "state": {"path": "s.db"}, "sinks": [hook]}, "c"
    )
    # Neither the secret nor the URL (its query may hold a token) is in its repr (logs).
    assert "hush" not in repr(config.sinks) and "tok" not in repr(config.sinks)


@pytest.mark.timeout(300)
async def test_a_fleet_delivers_each_line_once_in_order_across_a_kill(tmp_path, serve, pg_url):
    from tests.test_fleet_daemons import fleet_config

    farm = ChangingFarm()
    farm.base = await serve(farm.app)
    receiver = Receiver(fail_rate=0.1)
    receiver.base = await serve(receiver.app)
    config = tmp_path / "ingestor.yaml"
    sinks = "sinks:\n" + webhook(f"{receiver.base}/hook", "fleet", batch=5)
    fleet_config(config, pg_url, farm.feed_urls(), extra=sinks)
    logs = [tmp_path / f"daemon{n}.log" for n in range(2)]
    daemons = [await start_daemon(config, log) for log in logs]
    try:
        assert await wait_for(lambda: receiver.last_acked() >= 10, 90), logs[0].read_text()
        # Kill the instance that holds the sink's lease, mid-delivery.
        status = await ingestor_cli("status", "--config", str(config), "--sinks", "--json")
        holder = json.loads(status.stdout)[0]["delivering"]
        victim = next(n for n, log in enumerate(logs) if holder and holder in log.read_text())
        receiver.generation = 1
        daemons[victim].kill()
        await daemons[victim].wait()
        farm.change(0)
        await asyncio.sleep(4.0)  # past lease_ttl: the survivor has taken the sink over
        # The killed instance comes back, as it would in production: a record it had
        # committed but not yet published (a kill mid-article) is published at its start.
        daemons[victim] = await start_daemon(config, tmp_path / "restarted.log")
        out = tmp_path / "out"
        assert await wait_for(
            lambda: len({x["id"] for x in journal_lines(out, live=True)}) >= 4 * farm.visible, 90
        )
        settled = -1
        while settled != receiver.last_acked():
            settled = receiver.last_acked()
            await asyncio.sleep(3.0)
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        for daemon in daemons:
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
    finally:
        for daemon in daemons:
            if daemon.returncode is None:
                daemon.kill()
    status = await ingestor_cli("status", "--config", str(config), "--sinks", "--json")
    [row] = json.loads(status.stdout)
    total = row["journal_last_seq"]
    assert row["cursor"] == total and total >= 4 * farm.visible
    check_order(receiver, total)


async def test_a_retried_batch_carries_the_same_lines_while_the_journal_grows(tmp_path, serve):
    """The README's promise: a batch that was not acknowledged is sent again as it was
    (it grew from lines 21-22 to 21-23 when a line was written meanwhile)."""
    import aiohttp

    from ingestor.config.model import WebhookConfig
    from ingestor.core.metrics import Metrics
    from ingestor.service.webhooks import WebhookSink
    from ingestor.store.sqlite import SQLiteStateStore

    receiver = Receiver()
    receiver.down = True
    receiver.base = await serve(receiver.app)
    out = tmp_path / "out"

    def written(seq: int) -> JournalEntry:
        path = f"2024/01/01/{seq:024x}.json"
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(json.dumps({"id": f"{seq:024x}"}) + "\n")
        return JournalEntry(seq, "create", f"{seq:024x}", path, f"sha256:{seq}", 1.0)

    journal = [written(seq) for seq in (1, 2)]

    class Lines:
        async def after(self, seq: int, limit: int) -> list[JournalEntry]:
            return [e for e in journal if e.seq > seq][:limit]

    store = SQLiteStateStore(tmp_path / "state.db")
    await store.open()
    try:
        config = WebhookConfig(url=f"{receiver.base}/hook", secret=SECRET, batch=10, timeout=5)
        sink = WebhookSink(config, store, Lines(), out, Metrics(), "me", 60.0)
        async with aiohttp.ClientSession() as session:
            assert not await sink.deliver_once(session)
            journal.append(written(3))  # written while the receiver was down
            assert not await sink.deliver_once(session)
            receiver.down = False
            assert await sink.deliver_once(session)
            assert await sink.deliver_once(session)
    finally:
        await store.close()
    assert [r["seqs"] for r in receiver.requests] == [[1, 2], [1, 2], [1, 2], [3]]
