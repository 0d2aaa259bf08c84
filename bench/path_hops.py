"""The path one feed URL takes from the configuration to a record and a journal line, as
a reader following the calls sees it: `ingestor run --once` on one feed with one article
(served on loopback), every call from one ingestor module into another recorded in the
main process and its threads (the workers' own calls are not: they are one hop each).

Prints the hops in order: each call from one layer (a folder of ingestor/) into another,
each distinct caller -> callee pair once, at its first call; calls within a layer (a
store's own helper modules) are not hops, and the store's call-naming wrapper is seen
through. Then the counts:
- up: calls into a higher layer than the caller's (a callback, or a layer reaching up);
- bounced: calls into a module that is still on the call stack below another layer's
  module (control goes back into a module it has not left yet: a callback or ping-pong);
- entered again: calls into a module entered before and left since, i.e. a caller that
  comes back to it (core/ and config/ excepted in both: plain data and pure functions
  that every layer reads);
- modules: how many modules the path enters.

    python bench/path_hops.py [--hops]
"""

from __future__ import annotations

import argparse
import http.server
import inspect
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

PACKAGE = "ingestor"
RANK = {"core": 0, "config": 0, "parse": 1, "http": 1, "store": 1, "sink": 1, "analyze": 2}
RANK |= {"pipeline": 3, "service": 4}
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
# Not the path: logging and counting, which every layer calls.
_QUIET = {"core/metrics", "service/logsetup", "errors"}
_EXEMPT = ("core", "config")
_named_code: Any = None  # the store's call-naming wrapper, seen through (set in main)

FEED = """<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>
<title>Hops</title><link>BASE/</link>
<item><title>One story</title><link>BASE/a/1.html</link><guid>1</guid>
<description>A story.</description></item></channel></rss>"""

PAGE = """<html><head><title>One story</title></head><body><article><h1>One story</h1>
{}</article></body></html>""".format(
    "".join(
        f"<p>Paragraph {n} of the story tells what happened in the town on that day, and "
        f"who said what about it afterwards.</p>"
        for n in range(12)
    )
)


def module_of(frame: FrameType) -> str | None:
    path = Path(frame.f_code.co_filename)
    parts = path.parts
    if PACKAGE not in parts:
        return None
    inside = parts[len(parts) - 1 - parts[::-1].index(PACKAGE) + 1 :]
    return "/".join(inside)[: -len(".py")]


class PathRecorder:
    def __init__(self) -> None:
        self.hops: list[tuple[str, str]] = []
        self.bounces: list[tuple[str, str]] = []
        self._seen_edges: set[tuple[str, str]] = set()
        self._started: dict[int, FrameType] = {}  # resumable frames already entered
        self._lock = threading.Lock()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = module_of(frame)
        if callee is None or callee in _QUIET:
            return
        if frame.f_code.co_flags & _RESUMABLE:
            if id(frame) in self._started:
                return  # a coroutine resumed, not called
            self._started[id(frame)] = frame
        if frame.f_code is _named_code:
            return
        caller_frame = frame.f_back
        if caller_frame is not None and caller_frame.f_code is _named_code:
            caller_frame = caller_frame.f_back
        caller = module_of(caller_frame) if caller_frame is not None else None
        if caller is None or caller in _QUIET or layer(caller) == layer(callee):
            return
        assert caller_frame is not None
        edge = (
            f"{caller}:{caller_frame.f_code.co_qualname}",
            f"{callee}:{frame.f_code.co_qualname}",
        )
        with self._lock:
            if edge not in self._seen_edges:
                self._seen_edges.add(edge)
                self.hops.append(edge)
                if layer(callee) not in _EXEMPT and callee in _stack_modules(caller_frame):
                    self.bounces.append(edge)


def _stack_modules(frame: FrameType | None) -> set[str]:
    modules = set()
    while frame is not None:
        module = module_of(frame)
        if module is not None:
            modules.add(module)
        frame = frame.f_back
    return modules


def layer(point: str) -> str:
    return point.split("/", 1)[0].split(":", 1)[0]


def counts(hops: list[tuple[str, str]]) -> tuple[int, int]:
    up = sum(1 for a, b in hops if RANK.get(layer(b), 0) > RANK.get(layer(a), 0))
    entered: set[str] = set()
    current: str | None = None
    reentered = 0
    for _caller, callee in hops:
        module = callee.split(":", 1)[0]
        if module == current:
            continue
        if module in entered and layer(module) not in _EXEMPT:
            reentered += 1
        entered.add(module)
        current = module
    return up, reentered


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hops", action="store_true", help="print every hop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        site = work / "site"
        (site / "a").mkdir(parents=True)
        server, base = serve(site)
        (site / "feed.xml").write_text(FEED.replace("BASE", base), "utf-8")
        (site / "a" / "1.html").write_text(PAGE, "utf-8")
        config = work / "ingestor.yaml"
        config.write_text(
            f"feeds:\n  - url: {base}/feed.xml\n"
            f"output:\n  dir: {work / 'out'}\n"
            f"state:\n  path: {work / 'state' / 'db'}\n"
            "http:\n  allowed_networks: [127.0.0.1/32]\n  respect_robots_txt: false\n"
            "extraction:\n  workers: 1\n",
            "utf-8",
        )
        from ingestor.service.cli import main as cli

        global _named_code
        try:
            from ingestor.store.traffic import _naming

            _named_code = _naming("x", _naming).__code__  # type: ignore[attr-defined]
        except ImportError:  # a tree from before the wrapper
            pass

        recorder = PathRecorder()
        threading.setprofile(recorder)
        sys.setprofile(recorder)
        try:
            status = cli(["run", "--once", "--config", str(config)])
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
            server.shutdown()
        records = list((work / "out").rglob("*.json"))
    if status != 0 or not records:
        print(f"the pass failed (exit {status}, {len(records)} records)", file=sys.stderr)
        return 1
    if args.hops:
        for caller, callee in recorder.hops:
            bounce = "   [bounced]" if (caller, callee) in recorder.bounces else ""
            print(f"{caller} -> {callee}{bounce}")
    up, reentered = counts(recorder.hops)
    modules = {b.split(":", 1)[0] for _a, b in recorder.hops}
    print(
        f"hops {len(recorder.hops)}  modules {len(modules)}  up a layer {up}  "
        f"bounced {len(recorder.bounces)}  entered again {reentered}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
