"""`ingestor status`: a per-feed table (or JSON) from the state store."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from ingestor.config import Config
from ingestor.sqlite_state import SQLiteStateStore
from ingestor.state import FeedState


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


def feed_rows(config: Config, states: dict[str, FeedState]) -> list[dict[str, Any]]:
    rows = []
    for feed in config.feeds:
        state = states.get(feed.feed_id) or FeedState(feed_id=feed.feed_id)
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
                "items": state.items,
                "next_due": state.next_due or None,
                "disabled_reason": state.disabled_reason,
            }
        )
    return rows


async def collect_status(config: Config) -> list[dict[str, Any]]:
    store = SQLiteStateStore(config.state.path, read_only=True)
    await store.open()
    try:
        states = await store.load_feeds()
    finally:
        await store.close()
    return feed_rows(config, states)


def render_json(rows: list[dict[str, Any]]) -> str:
    def iso(value: Any) -> Any:
        return (
            datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(value, float)
            else value
        )

    keys = ("last_fetch", "last_success", "next_due")
    return json.dumps(
        [{k: iso(v) if k in keys else v for k, v in r.items()} for r in rows],
        ensure_ascii=False,
        indent=2,
    )


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
            f"{row['consecutive_failures']}"
        )
        if row["last_error"]:
            lines.append(f"         last error:   {row['last_error']}")
        if row["disabled_reason"]:
            lines.append(f"         disabled:     {row['disabled_reason']}")
    return "\n".join(lines) if lines else "no feeds configured"
