"""Worker processes start warm from the fork server and do not re-run the entry script."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_workers_do_not_rerun_the_console_script():
    # The `ingestor` console script is a plain script that imports the CLI at its top; a
    # worker that re-ran it would import the CLI, the pipeline and aiohttp for nothing.
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "pool_probe.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    in_worker = json.loads(result.stdout)
    assert "ingestor.analyze.jobs" in in_worker  # preloaded by the fork server
    assert "ingestor.service.cli" not in in_worker
    assert "ingestor.pipeline.orchestrator" not in in_worker
