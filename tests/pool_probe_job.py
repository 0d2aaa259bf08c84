"""The job tests/pool_probe.py sends to a worker (in a module of its own, which imports
nothing, so that unpickling it imports nothing either)."""

from __future__ import annotations

import sys


def modules_in_worker() -> list[str]:
    return sorted(name for name in sys.modules if name.startswith("ingestor"))
