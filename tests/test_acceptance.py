"""The acceptance gate, small: bench/acceptance.py's `realistic` and `hostile` worlds of the
shared farm (../shared/farm, a simulated internet the team did not write) at 20 feeds,
against the installed `ingestor`. Each must print VERDICT: PASS (the farm's grader: no
required article missing, no second record for one article, no request to the internal
host), every unchanged feed must answer 304 on the second pass, and the hostile pass must
end in time. The whole gate (50 feeds, the daemon killed, a fleet) is run by hand."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FARM = REPO.parent / "shared" / "farm"


@pytest.mark.timeout(1500)
def test_the_farms_realistic_and_hostile_worlds_pass(tmp_path):
    if not (FARM / "run.sh").exists():
        pytest.skip(f"the shared farm is not at {FARM}")
    missing = [m for m in ("faker", "wordfreq") if importlib.util.find_spec(m) is None]
    assert not missing, f"the farm needs {missing}: pip install -e '.[test]'"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "acceptance.py"),
            "--only",
            "realistic,hostile",
            "--feeds-n",
            "20",
            "--work",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=1400,
    )
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("VERDICT: PASS") == 2
