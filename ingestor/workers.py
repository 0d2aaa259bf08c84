"""The process pool for CPU-bound work (feed parsing, extraction, language, fingerprints).

trafilatura and feedparser hold the GIL, so they run in worker processes: a pebble pool
with a hard per-task time limit; a worker that hangs or crashes is replaced and only its
one document fails. Workers die with the daemon (PR_SET_PDEATHSIG), even on SIGKILL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pebble

from ingestor.decoding import decode_document
from ingestor.errors import IngestorError
from ingestor.extract import Body, PageMetadata, choose_body, extract_page
from ingestor.feeds import ParsedFeed, parse_feed
from ingestor.fingerprint import Fingerprint, fingerprint
from ingestor.language import LanguageResult, detect_language

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1
# Recycle a worker after this many tasks: lxml and trafilatura caches grow slowly.
_MAX_TASKS_PER_WORKER = 1000


class WorkerError(IngestorError):
    """A task failed in its worker: time limit, crash, or an unexpected exception."""


@dataclass(frozen=True)
class ArticleJob:
    url: str
    # The page as fetched: decoding it here keeps that CPU off the event loop's process.
    page: bytes | None
    title: str
    feed_content: str | None
    charset: str | None = None
    feed_summary: str | None = None  # from the Content-Type header, if any
    language_hints: tuple[str | None, ...] = ()
    use_json_ld: bool = True
    fast: bool = False
    extensive_date_search: bool = False
    detector: str = "langdetect"
    max_language_chars: int = 1000
    num_perm: int = 128
    threshold: float = 0.5


@dataclass(frozen=True)
class ArticleAnalysis:
    body: Body
    meta: PageMetadata
    language: LanguageResult
    fingerprint: Fingerprint
    timings: dict[str, float] = field(default_factory=dict)


def analyze_article(job: ArticleJob) -> ArticleAnalysis:
    """Everything CPU-heavy about one article, in one round trip to a worker."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    html = decode_document(job.page, job.charset)[0] if job.page else ""
    if html:
        page_text, json_ld_text, meta = extract_page(
            html, job.url, job.fast, job.extensive_date_search
        )
    else:
        page_text, json_ld_text, meta = "", None, PageMetadata()
    body = choose_body(page_text, json_ld_text, job.feed_content, job.use_json_ld, job.feed_summary)
    extracted = time.perf_counter()
    title = job.title or meta.title or ""
    language = detect_language(
        title,
        body.text,
        (meta.html_lang, *job.language_hints),
        job.detector,
        job.max_language_chars,
    )
    detected = time.perf_counter()
    prints = fingerprint(body.text, job.num_perm, job.threshold)
    done = time.perf_counter()
    timings = {
        "extract": extracted - started,
        "language": detected - extracted,
        "fingerprint": done - detected,
        "analyze_cpu": time.process_time() - cpu_started,
    }
    return ArticleAnalysis(body, meta, language, prints, timings)


def parse_feed_job(body: bytes, url: str, content_type: str) -> tuple[ParsedFeed, float]:
    started = time.perf_counter()
    parsed = parse_feed(body, url, content_type)
    return parsed, time.perf_counter() - started


def _worker_init() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # SIGINT goes to the whole process group on Ctrl-C; the daemon decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ready() -> bool:
    return True


def default_workers() -> int:
    return max(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        1,
    )


class WorkerPool:
    """An asyncio face on a pebble ProcessPool."""

    def __init__(self, workers: int = 0, task_timeout: float = 30.0) -> None:
        self.workers = workers or default_workers()
        self.task_timeout = task_timeout
        context = multiprocessing.get_context("forkserver")
        # The fork server imports these once; every worker forked from it starts warm.
        context.set_forkserver_preload(["ingestor.workers", "ingestor.worker_warmup"])
        self._pool = pebble.ProcessPool(
            max_workers=self.workers,
            max_tasks=_MAX_TASKS_PER_WORKER,
            initializer=_worker_init,
            context=context,
        )
        # pebble starts its processes at the first task: start them now, so that the fork
        # server's imports overlap with fetching the first feeds instead of following them.
        self._pool.schedule(_ready)

    async def run(self, function: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        future = self._pool.schedule(function, args=args, timeout=timeout or self.task_timeout)
        try:
            return await asyncio.wrap_future(future)
        except concurrent.futures.TimeoutError:
            raise WorkerError(
                f"time limit of {timeout or self.task_timeout:g}s exceeded, worker replaced"
            ) from None
        except pebble.ProcessExpired as exc:
            raise WorkerError(f"worker process died (exit code {exc.exitcode})") from None
        except asyncio.CancelledError:
            future.cancel()
            raise
        except IngestorError:
            raise
        except Exception as exc:
            raise WorkerError(f"{type(exc).__name__}: {str(exc)[:300]}") from None

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
