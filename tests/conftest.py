"""Shared fixtures: real aiohttp servers on loopback, configs, one worker pool per session."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.corpus import synthetic_paragraphs
from ingestor.analyze.pool import WorkerPool
from ingestor.config.model import (
    Config,
    ExtractionConfig,
    FeedConfig,
    HTTPConfig,
    OutputConfig,
    PipelineConfig,
    StateConfig,
)

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"


@pytest.fixture(scope="session")
def worker_pool() -> Iterator[WorkerPool]:
    # A pool is not tied to an event loop, so one per session saves its start-up per test.
    pool = WorkerPool(workers=2, task_timeout=20.0)
    yield pool
    pool.close()


ServerFactory = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    """serve(app, host="127.0.0.1") starts a real server; returns its base URL."""
    servers: list[TestServer] = []

    async def start(app: web.Application, host: str = "127.0.0.1") -> str:
        server = TestServer(app, host=host)
        await server.start_server()
        servers.append(server)
        return f"http://{host}:{server.port}"

    yield start
    for server in servers:
        await server.close()


def loopback_http(**overrides: Any) -> HTTPConfig:
    values: dict[str, Any] = {
        "allowed_networks": (ipaddress.ip_network("127.0.0.1/32"),),
        "retries": 0,
        "total_timeout": 10.0,
    }
    values.update(overrides)
    return HTTPConfig(**values)


def make_config(tmp_path: Path, feeds: list[str] | list[FeedConfig], **sections: Any) -> Config:
    feed_configs = tuple(f if isinstance(f, FeedConfig) else FeedConfig(url=f) for f in feeds)
    values: dict[str, Any] = {
        "source": "test",
        "output": OutputConfig(dir=tmp_path / "out"),
        "state": StateConfig(path=tmp_path / "state" / "state.db"),
        "http": loopback_http(),
        "extraction": ExtractionConfig(workers=2, timeout=20.0),
        "pipeline": PipelineConfig(queue_size=8),
        "feeds": feed_configs,
    }
    values.update(sections)
    return Config(**values)


def read_records(output: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text("utf-8")) for p in sorted(output.rglob("*.json"))]


def rss(items: list[dict[str, str]], title: str = "Test feed", extra: str = "") -> bytes:
    parts = []
    for item in items:
        fields = "".join(f"<{k}>{v}</{k}>" for k, v in item.items())
        parts.append(f"<item>{fields}</item>")
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{title}</title><link>http://example.org/</link>{extra}"
        f"{''.join(parts)}</channel></rss>"
    ).encode()


def article_html(title: str, paragraphs: list[str], lang: str = "en", extra_head: str = "") -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>'
        f"{extra_head}</head><body><nav><a href='/'>Home</a> <a href='/world'>World</a> "
        f"<a href='/sport'>Sport</a></nav><article><h1>{title}</h1>{body}</article>"
        f"<footer>Copyright 2024 Example News. All rights reserved.</footer></body></html>"
    )


LOREM_EN = [
    "The city council voted on Tuesday to extend the tram line to the northern districts, "
    "a project that has been debated for more than a decade and will cost an estimated "
    "four hundred million euros over the next six years.",
    "Supporters of the plan argue that the new line will cut commuting times in half for "
    "tens of thousands of residents and reduce traffic on the ring road, which is "
    "regularly congested during the morning and evening rush hours.",
    "Opponents, including several shop owners along the planned route, fear that the "
    "construction works will keep customers away for years and have asked the council to "
    "set up a compensation fund before the first excavators arrive.",
    "The mayor said the first section should open in 2027 and promised regular public "
    "meetings to inform residents about the progress of the works and the traffic "
    "diversions that will be necessary along the way.",
]


def distinct_story(seed: int, paragraphs: int = 4, sentences: int = 4) -> list[str]:
    """English news-like paragraphs; different seeds share almost no word 3-shingles."""
    return synthetic_paragraphs(seed, paragraphs, sentences)


async def ingestor_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `ingestor` command, run off the event loop; its output captured."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ingestor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """One throwaway PostgreSQL server for the session (see tests/pgcluster.py)."""
    import os

    from tests.pgcluster import REQUIRE_ENV, find_bin_dir, running_cluster

    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = "PostgreSQL is not installed (no pg_ctl on PATH or in /usr/lib/postgresql)"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{reason}, and {REQUIRE_ENV} is set")
        pytest.skip(reason)
    with running_cluster(bin_dir) as cluster:
        yield cluster


_pg_databases = iter(range(1, 1_000_000))


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    """A fresh, empty database on the session's server; its libpq URL."""
    import psycopg

    name = f"t{next(_pg_databases)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return str(pg_cluster.url(name))
