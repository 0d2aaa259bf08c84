"""`ingestor demo`: serve the bundled seeds/ corpus on 127.0.0.1 and ingest it once."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ingestor.config.model import (
    Config,
    ExtractionConfig,
    FeedConfig,
    HTTPConfig,
    OutputConfig,
    StateConfig,
)
from ingestor.pipeline.outcomes import PassSummary
from ingestor.service.runtime import open_pipeline

_TYPES = {
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".json": "application/feed+json; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


def seeds_dir() -> Path:
    """The demo corpus: installed as ingestor/demo_corpus by `pip install .`; in a source
    checkout (editable install) it is the repository's seeds/ folder."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "demo_corpus", package.parent / "seeds"):
        if (candidate / "feeds").is_dir():
            return candidate
    raise FileNotFoundError(f"demo corpus not found next to {package}")


class SeedServer:
    """Serves a seeds folder; `{{BASE}}` in any file becomes the server's base URL."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root.resolve()
        self.host = host
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://{self.host}:{port}"
        return self.base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def feed_urls(self) -> list[str]:
        return [
            f"{self.base}/feeds/{p.name}"
            for p in sorted((self.root / "feeds").iterdir())
            if p.suffix in (".rss", ".atom", ".json", ".xml")
        ]

    async def _serve(self, request: web.Request) -> web.Response:
        target = (self.root / request.match_info["path"]).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            raise web.HTTPNotFound()
        body = target.read_bytes().replace(b"{{BASE}}", self.base.encode())
        content_type = _TYPES.get(target.suffix, "application/octet-stream")
        return web.Response(body=body, headers={"Content-Type": content_type})


@dataclass
class DemoResult:
    summary: PassSummary
    output_dir: Path
    feeds: list[str]


def demo_config(
    feed_urls: list[str], output_dir: Path, state_path: Path, workers: int = 0
) -> Config:
    return Config(
        source="(demo)",
        output=OutputConfig(dir=output_dir, pretty=True),
        state=StateConfig(path=state_path),
        # The demo server is on loopback: allow exactly that, nothing else.
        http=HTTPConfig(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),), retries=0),
        extraction=ExtractionConfig(workers=workers),
        feeds=tuple(FeedConfig(url=u) for u in feed_urls),
    )


def demo_state_path(output_dir: Path) -> Path:
    """Where a demo into `output_dir` keeps its state: the user's cache, one state per
    output directory, so the output holds nothing but records and the journal."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(str(output_dir.resolve()).encode()).hexdigest()[:16]
    return cache / "ingestor" / "demo-state" / key / "state.db"


async def run_demo(
    output_dir: Path | None = None, seeds: Path | None = None, workers: int = 0
) -> DemoResult:
    server = SeedServer(seeds or seeds_dir())
    await server.start()
    try:
        if output_dir is not None:
            # The output's journal belongs to one state: a demo run again into the same
            # directory goes on with the state it left there.
            state_path = demo_state_path(output_dir)
            config = demo_config(server.feed_urls(), output_dir, state_path, workers)
            async with open_pipeline(config) as pipeline:
                summary = await pipeline.run_once(config.feeds)
            return DemoResult(summary, output_dir, server.feed_urls())
        out = Path(tempfile.mkdtemp(prefix="ingestor-demo-"))
        with tempfile.TemporaryDirectory(prefix="ingestor-demo-state-") as state_dir:
            config = demo_config(server.feed_urls(), out, Path(state_dir) / "state.db", workers)
            async with open_pipeline(config) as pipeline:
                summary = await pipeline.run_once(config.feeds)
        return DemoResult(summary, out, server.feed_urls())
    finally:
        await server.stop()
