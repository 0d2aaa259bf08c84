"""Logging: human-readable lines by default, JSON lines with --log-format json."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if INSTANCE.name:
            data["instance"] = INSTANCE.name
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class _Instance(logging.Filter):
    """Names this instance on every line once several share one state (PostgreSQL)."""

    name = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.instance = f"[{self.name}] " if self.name else ""
        return True


INSTANCE = _Instance()


def name_instance(name: str) -> None:
    INSTANCE.name = name


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)-7s %(instance)s%(name)s: %(message)s", "%H:%M:%S"
            )
        )
    handler.addFilter(INSTANCE)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter (trafilatura's per-page notes, APScheduler's job lines) is noise here.
    for noisy in ("trafilatura", "htmldate", "courlan", "apscheduler", "charset_normalizer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
