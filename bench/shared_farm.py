"""One sitting on the shared farm (../shared/farm, a world the team did not write): the
ingestor's pass, the naive peer's pass and trafilatura's plain call, timed on the same world
in the same sitting, so that every figure is a ratio against a baseline measured beside it.

Each run: a fresh farm (profile `none`) -> `ingestor run --once` (CPU of every process,
reaped workers included) -> verify.py's VERDICT -> trafilatura's reference call on the
world's pages -> a fresh farm of the same seed -> naive.py --passes 1.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SHARED_FARM = Path(__file__).resolve().parent.parent.parent / "shared" / "farm"
REFERENCE_CALL = "bare_extraction(html, include_comments=False, with_metadata=True)"


@dataclass(frozen=True)
class World:
    feeds: int = 60
    items: int = 15
    hosts: int = 8
    seed: int = 1
    port: int = 8870


class SharedFarm:
    """The shared farm as a context manager: started fresh, stopped at exit."""

    def __init__(self, world: World, directory: Path, profile: str = "none") -> None:
        self.world = world
        self.directory = directory
        self.profile = profile
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SharedFarm:
        world = self.world
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "farm.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(SHARED_FARM / "farm.py"),
                "--out-manifest",
                str(self.directory),
                "--feeds",
                str(world.feeds),
                "--items",
                str(world.items),
                "--hosts",
                str(world.hosts),
                "--seed",
                str(world.seed),
                "--fault-mix",
                self.profile,
                "--port",
                str(world.port),
                "--max-seconds",
                "3600",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the farm stopped: {(self.directory / 'farm.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.control}/__health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the farm did not answer /__health within 120 s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.world.port}"

    @property
    def feeds_file(self) -> Path:
        return self.directory / "feeds.txt"

    def feed_urls(self) -> list[str]:
        return [u for u in self.feeds_file.read_text().splitlines() if u.strip()]

    def page_urls(self) -> list[str]:
        manifest = json.loads((self.directory / "manifest.json").read_text())
        return [a["canonical_url"] for a in manifest["articles"] if a.get("expected")]

    def verdict(self, output: Path) -> str:
        result = subprocess.run(
            [
                sys.executable,
                str(SHARED_FARM / "verify.py"),
                "--manifest",
                str(self.directory),
                "--output",
                str(output),
                "--stats-url",
                f"{self.control}/__stats",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("VERDICT")]
        return lines[-1] if lines else f"VERDICT: (none; exit {result.returncode})"


def reaped_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def naive_pass(farm: SharedFarm, out: Path) -> tuple[float, int, float]:
    """(wall seconds, articles written, CPU seconds) of naive.py's one pass."""
    summary = out.parent / f"{out.name}.json"
    before = reaped_cpu()
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(SHARED_FARM / "naive.py"),
            "--feeds",
            str(farm.feeds_file),
            "--out",
            str(out),
            "--passes",
            "1",
            "--summary",
            str(summary),
        ],
        capture_output=True,
        check=True,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    articles = sum(1 for _ in out.glob("*.json"))
    return wall, articles, reaped_cpu() - before


def fetch_pages(urls: list[str]) -> list[str]:
    pages = []
    for url in urls:
        with urllib.request.urlopen(url, timeout=30) as response:
            pages.append(response.read().decode("utf-8", "replace"))
    return pages


def reference_cpu_per_page(pages: list[str]) -> float:
    """CPU seconds per page of trafilatura's plain call, in this process (warmed up)."""
    from trafilatura import bare_extraction

    for html in pages[:3]:
        bare_extraction(html, include_comments=False, with_metadata=True)
    started = time.process_time()
    for html in pages:
        bare_extraction(html, include_comments=False, with_metadata=True)
    return (time.process_time() - started) / len(pages)


def articles_written(stdout: str) -> int:
    match = re.search(r"articles written: (\d+)", stdout)
    return int(match.group(1)) if match else 0


def cores() -> int:
    return len(os.sched_getaffinity(0))
