"""The process pool for CPU-bound work (feed parsing, extraction, language, fingerprints).

trafilatura and feedparser hold the GIL, so they run in worker processes: a pebble pool
with a hard per-task time limit; a worker that hangs or crashes is replaced and only its
one document fails. Workers die with the daemon (PR_SET_PDEATHSIG), even on SIGKILL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import importlib.machinery
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import pebble

from ingestor.errors import IngestorError, WorkerError

T = TypeVar("T")


_PR_SET_PDEATHSIG = 1


# Recycle a worker after this many tasks: lxml and trafilatura caches grow slowly.
_MAX_TASKS_PER_WORKER = 1000


def _worker_init() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # SIGINT goes to the whole process group on Ctrl-C; the daemon decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def keep_entry_script_out_of_workers() -> None:
    """A worker starts by re-running the __main__ script (multiprocessing's spawn
    preparation) unless __main__ is a package's `__main__` module, which it never re-runs.
    The `ingestor` console script is a plain script: every worker would import the CLI,
    the pipeline and aiohttp again (about 1.4 s of CPU per worker measured in issue 16).
    Naming __main__ as `ingestor.__main__` skips that; worker jobs live in importable
    modules (ingestor.analyze.jobs), never in __main__."""
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__spec__", None) is None:
        main.__spec__ = importlib.machinery.ModuleSpec("ingestor.__main__", None)


def _stop_fork_server() -> None:
    """Stop the fork server and wait for it once no pool uses it (its workers would die
    with it): it has reaped the workers, so their CPU time, with its own, joins this
    process's children's (getrusage), and no process outlives the pools. A later pool
    starts a new server."""
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is not None and getattr(server, "_forkserver_pid", None) is not None:
        with contextlib.suppress(OSError, ChildProcessError):
            stop()


def default_workers() -> int:
    return max(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        1,
    )


# multiprocessing's resource tracker outlives a daemon killed with -9, removes the pool's
# semaphores, and warns about them ("There appear to be 2 leaked semaphore objects"): the
# clean-up is right, the warning is noise the next start seems to print. The tracker
# takes the interpreter's -W options from sys.warnoptions when it is spawned.
_TRACKER_WARNING = "ignore:resource_tracker:UserWarning"


def quiet_resource_tracker() -> None:
    """Silence the resource tracker's leak warning (before the tracker starts)."""
    if _TRACKER_WARNING not in sys.warnoptions:
        sys.warnoptions.append(_TRACKER_WARNING)


class WorkerPool:
    """An asyncio face on a pebble ProcessPool."""

    # Pools open in this process: they share one fork server, stopped with the last.
    _open = 0

    def __init__(self, workers: int = 0, task_timeout: float = 30.0) -> None:
        self.workers = workers or default_workers()
        self.task_timeout = task_timeout
        keep_entry_script_out_of_workers()
        quiet_resource_tracker()
        context = multiprocessing.get_context("forkserver")
        # The fork server imports these once; every worker forked from it starts warm.
        context.set_forkserver_preload(["ingestor.analyze.jobs", "ingestor.analyze.warmup"])
        self._pool = pebble.ProcessPool(
            max_workers=self.workers,
            max_tasks=_MAX_TASKS_PER_WORKER,
            initializer=_worker_init,
            context=context,
        )
        # pebble starts the fork server and the workers at the first task: a pass (or a
        # daemon's day) whose feeds are all unchanged never starts them, which spares
        # about 1.5 s of CPU and 350 MB (issue 16); a pass with new entries waits about
        # 50 ms longer for its first parse than if they were started now.
        self._closed = False
        WorkerPool._open += 1

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
        if not self._closed:
            self._closed = True
            WorkerPool._open -= 1
            if WorkerPool._open == 0:
                _stop_fork_server()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
