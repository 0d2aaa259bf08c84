"""Run as a plain script (as the `ingestor` console script is): prints which modules a
worker process of WorkerPool has imported by the time it runs its first job."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ingestor.service.cli  # noqa: F401  (what the console script imports)


async def main() -> None:
    from ingestor.analyze.pool import WorkerPool
    from tests.pool_probe_job import modules_in_worker as probe

    pool = WorkerPool(workers=1, task_timeout=30)
    try:
        print(json.dumps(await pool.run(probe)))
    finally:
        pool.close()


if __name__ == "__main__":
    asyncio.run(main())
