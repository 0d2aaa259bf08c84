"""`ingestor status`: a per-feed table (or JSON) from the state store."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from ingestor.config.model import Config, FeedConfig
from ingestor.core import schedule, sources
from ingestor.core.state import FeedState, FrontierRow, FrontierSummary
from ingestor.store.factory import make_store


def _when(moment: float | None, now: float) -> str:
    if not moment:
        return "-"
    delta = moment - now
    stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M")
    ago = abs(delta)
    span = (
        f"{ago / 86400:.0f}d"
        if ago >= 86400
        else (f"{ago / 3600:.0f}h" if ago >= 3600 else f"{ago / 60:.0f}m")
    )
    return f"{stamp} ({'in ' + span if delta > 0 else span + ' ago'})"


def _due(ready_at: float, now: float) -> tuple[float, bool]:
    """When queued work is due, and whether that is now (an item due at once is stored
    with time 0: it is due now, not in 1970)."""
    return (ready_at, False) if ready_at > now else (now, True)


def _queue(row: FrontierRow | None) -> dict[str, Any]:
    if row is None:
        return {
            "queued": 0,
            "queue_due": None,
            "queue_due_now": False,
            "queue_attempts": 0,
            "queue_last_error": None,
        }
    due, now = _due(row.ready_at, time.time())
    return {
        "queued": row.queued,
        "queue_due": due,
        "queue_due_now": now,
        "queue_attempts": row.attempts,
        "queue_last_error": row.last_error,
    }


def feed_rows(
    config: Config, states: dict[str, FeedState], frontier: FrontierSummary | None = None
) -> list[dict[str, Any]]:
    frontier = frontier or FrontierSummary()
    queues = {row.key: row for row in frontier.feeds}
    rows = []
    for feed in config.feeds:
        state = states.get(feed.feed_id) or FeedState(feed_id=feed.feed_id)
        failure = frontier.failures.get(feed.feed_id)
        rows.append(
            {
                "name": feed.name or state.title or feed.url,
                "url": feed.url,
                "effective_url": state.effective_url,
                "enabled": feed.enabled,
                "last_fetch": state.last_fetch_at,
                "last_success": state.last_success_at,
                "last_error": state.last_error,
                "consecutive_failures": state.error_count,
                "failed_requests": state.failed_requests,
                "server_wait_until": state.not_before if state.not_before > time.time() else None,
                "items": state.items,
                "next_due": state.next_due or None,
                "due_because": schedule.due_reason(feed, state, config.schedule, time.time()),
                "disabled_reason": state.disabled_reason,
                **_queue(queues.get(feed.feed_id)),
                "last_article_failure": (
                    {"url": failure[0], "error": failure[1], "at": failure[2]} if failure else None
                ),
                "stale_since": sources.stale_since(state, time.time()),
                **_site(feed, state, states),
            }
        )
    return rows


def _site(feed: FeedConfig, state: FeedState, states: dict[str, FeedState]) -> dict[str, Any]:
    """A site entry's discovered sources (why each is or is not used, how each fares)
    and how much of the site its feeds carry."""
    if not feed.site:
        return {}
    found = []
    for url, kind, why in state.discovery:
        source = states.get(url)
        found.append(
            {
                "url": url,
                "kind": kind,
                "used": why.startswith("used"),
                "why": why,
                "last_success": source.last_success_at if source else None,
                "last_error": source.last_error if source else None,
                "stale_since": sources.stale_since(source, time.time()) if source else None,
            }
        )
    return {
        "site": True,
        "discovered_at": state.discovered_at,
        "sources": found,
        "coverage": sources.coverage_counts(state.coverage, time.time()),
    }


def host_rows(frontier: FrontierSummary) -> list[dict[str, Any]]:
    now = time.time()
    rows = []
    for row in frontier.hosts:
        due, due_now = _due(row.ready_at, now)
        rows.append(
            {
                "host": row.key or "(no page fetch)",
                "queued": row.queued,
                "due": due,
                "due_now": due_now,
                "max_attempts": row.attempts,
                "last_error": row.last_error,
            }
        )
    return rows


async def collect_status(
    config: Config,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-feed rows and per-host frontier rows; with PostgreSQL, which instance polled
    each feed last and which one holds it now."""
    store = make_store(config.state, read_only=True)
    await store.open()
    try:
        states = await store.load_feeds()
        frontier = await store.frontier_summary(time.time())
        polls = await store.feed_polls()
    finally:
        await store.close()
    rows = feed_rows(config, states, frontier)
    for feed, row in zip(config.feeds, rows, strict=True):
        by, at, holder = polls.get(feed.feed_id, (None, None, None))
        row.update({"polled_by": by, "polled_at": at, "polling_now": holder})
    return rows, host_rows(frontier)


def render_json(rows: list[dict[str, Any]]) -> str:
    def iso(value: Any) -> Any:
        return (
            datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(value, float)
            else value
        )

    keys = (
        "last_fetch",
        "last_success",
        "next_due",
        "queue_due",
        "due",
        "at",
        "polled_at",
        "server_wait_until",
        "stale_since",
        "discovered_at",
        "last_delivery",
    )

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        return {
            k: convert(v)
            if isinstance(v, dict)
            else [convert(i) for i in v]
            if isinstance(v, list) and all(isinstance(i, dict) for i in v)
            else (iso(v) if k in keys else v)
            for k, v in row.items()
        }

    return json.dumps([convert(r) for r in rows], ensure_ascii=False, indent=2)


def render_table(rows: list[dict[str, Any]]) -> str:
    now = time.time()
    lines = []
    for row in rows:
        flag = (
            "DISABLED"
            if row["disabled_reason"]
            else "off"
            if not row["enabled"]
            else "FAILING"
            if row["consecutive_failures"]
            else "WAITING"
            if row["server_wait_until"]
            else "ok"
        )
        lines.append(f"{flag:8} {row['name']}  <{row['url']}>")
        if row["effective_url"]:
            lines.append(f"         moved to:     {row['effective_url']}")
        lines.append(
            f"         last fetch:   {_when(row['last_fetch'], now)}   "
            f"last success: {_when(row['last_success'], now)}"
        )
        lines.append(
            f"         items:        {row['items']}   next due: "
            f"{_when(row['next_due'], now)}   failures in a row: "
            f"{row['consecutive_failures']}   failed requests: {row['failed_requests']}"
        )
        lines.append(f"         due because:  {row['due_because']}")
        if row.get("polled_by"):
            holder = f"; being polled now by {row['polling_now']}" if row["polling_now"] else ""
            lines.append(
                f"         polled by:    {row['polled_by']} "
                f"({_when(row['polled_at'], now)}){holder}"
            )
        if row["last_error"]:
            lines.append(f"         last error:   {row['last_error']}")
        if row["stale_since"]:
            lines.append(
                f"         STALE:        no new item since {_when(row['stale_since'], now)}, "
                "much longer than its usual rhythm"
            )
        lines.extend(_site_lines(row, now))
        if row["server_wait_until"]:
            lines.append(
                f"         server asked: no request before {_when(row['server_wait_until'], now)}"
            )
        if row["disabled_reason"]:
            lines.append(f"         disabled:     {row['disabled_reason']}")
        if row["queued"]:
            lines.append(
                f"         queued:       {row['queued']} articles, next due "
                f"{'now' if row['queue_due_now'] else _when(row['queue_due'], now)}, "
                f"attempts up to {row['queue_attempts']}"
                + (f", last: {row['queue_last_error']}" if row["queue_last_error"] else "")
            )
        failure = row["last_article_failure"]
        if failure:
            lines.append(
                f"         page failed:  {failure['url']}: {failure['error']} "
                f"({_when(failure['at'], now)}; record from the feed's text)"
            )
    return "\n".join(lines) if lines else "no feeds configured"


def _site_lines(row: dict[str, Any], now: float) -> list[str]:
    if not row.get("site"):
        return []
    lines = [
        f"         coverage:     {sources.coverage_sentence(row['coverage'])} (the last 2 days)",
        f"         discovered:   {_when(row['discovered_at'], now)}",
    ]
    for source in row["sources"]:
        lines.append(f"           {source['kind']:8} {source['url']}: {source['why']}")
        if source["last_error"]:
            lines.append(f"                    last error: {source['last_error']}")
        if source["stale_since"]:
            lines.append(
                f"                    STALE: no new item since {_when(source['stale_since'], now)}"
            )
    return lines


def render_hosts(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "article frontier: empty"
    now = time.time()
    lines = [f"article frontier: {sum(r['queued'] for r in rows)} queued on {len(rows)} hosts"]
    for row in rows:
        error = f"  last error: {row['last_error']}" if row["last_error"] else ""
        lines.append(
            f"  {row['host']:32} {row['queued']:6} queued  next "
            f"{'now' if row['due_now'] else _when(row['due'], now)}"
            f"  attempts up to {row['max_attempts']}{error}"
        )
    return "\n".join(lines)


async def collect_sinks(config: Config) -> list[dict[str, Any]]:
    """Each configured sink's place in the journal: its cursor, how far behind it is (in
    lines, and in seconds since the oldest line not yet acknowledged) and its last error."""
    if not config.sinks:
        return []
    store = make_store(config.state, read_only=True)
    await store.open()
    try:
        positions = await store.sink_positions()
        newest = await store.journal_newest()
        rows = []
        for sink in config.sinks:
            position = positions.get(sink.sink_name)
            cursor = position.cursor if position else None
            waiting = await store.journal_since(cursor, 1) if cursor is not None else []
            rows.append(
                {
                    "sink": sink.sink_name,
                    "cursor": cursor,
                    "journal_last_seq": newest,
                    "lag_lines": max(newest - cursor, 0) if cursor is not None else None,
                    "lag_seconds": round(max(time.time() - waiting[0].at, 0.0), 1)
                    if waiting
                    else 0.0,
                    "last_delivery": position.updated_at if position else None,
                    "last_error": position.last_error if position else None,
                    "failures": position.failures if position else 0,
                    "delivering": position.holder if position else None,
                }
            )
        return rows
    finally:
        await store.close()


def render_sinks(rows: list[dict[str, Any]]) -> str:
    now = time.time()
    lines = []
    for row in rows:
        if row["cursor"] is None:
            lines.append(f"sink {row['sink']}: not started yet")
            continue
        lines.append(
            f"sink {row['sink']}: delivered up to line {row['cursor']} of "
            f"{row['journal_last_seq']} ({row['lag_lines']} behind, oldest waiting "
            f"{row['lag_seconds']:.0f}s); last delivery {_when(row['last_delivery'], now)}; "
            f"{row['failures']} failed deliveries"
            + (f"; last error: {row['last_error']}" if row["last_error"] else "")
        )
    return "\n".join(lines)
