"""docs/how-to/ci.md's GitLab and GitHub jobs, run as written, on an empty runner, twice.

The shell commands are taken from the page itself (a GitLab ``script:`` list, a GitHub
``run: |`` block), so the page cannot drift from what works. Each job runs in a copy of
examples/hello-flask with empty container storage holding only the builder (a fresh
runner, ``storage.empty_storage``), first with no cache directory, then again on another
empty storage with the directory the first run left: the second run must reuse the
carried dependency layer and download nothing. Marked ``rootless``: scripts/test-rootless
runs it again as an ordinary user with no login session, the way CI runners build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT
from storage import empty_storage

HOWTO = ROOT / "docs" / "how-to" / "ci.md"
EXAMPLE = ROOT / "examples" / "hello-flask"
BUILDER = "localhost/buildpy/python-311-minimal"  # the one the jobs name
IMAGES = {"gitlab": "localhost/hello-flask:0123abcd", "github": "localhost/myapp:0123abcd4567"}
CI_VARIABLES = {"CI_PROJECT_NAME": "hello-flask", "CI_COMMIT_SHORT_SHA": "0123abcd"}
EXPRESSIONS = {"${{ github.sha }}": "0123abcd4567"}


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def under(block: str, key: str) -> list[str]:
    """The non-blank lines indented below the line ``key``, stripped."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == key)
    indent = len(lines[start]) - len(lines[start].lstrip())
    found = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        if line.strip():
            found.append(line.strip())
    return found


def gitlab_script(block: str) -> list[str]:
    """The items of the job's ``script:`` list."""
    return [line[2:] for line in under(block, "script:") if line.startswith("- ")]


def github_run(block: str) -> list[str]:
    """The lines of the step's ``run: |`` block, with the expressions GitHub fills in."""
    commands = under(block, "run: |")
    for expression, value in EXPRESSIONS.items():
        commands = [command.replace(expression, value) for command in commands]
    return commands


def jobs() -> dict[str, list[str]]:
    gitlab, github = yaml_blocks(HOWTO.read_text())
    return {"gitlab": gitlab_script(gitlab), "github": github_run(github)}


def test_the_page_has_both_jobs_with_a_build() -> None:
    found = jobs()
    assert set(found) == {"gitlab", "github"}
    for commands in found.values():
        assert any(command.startswith("buildpy build .") for command in commands), commands
        assert any("--cache-from" in command for command in commands), commands


def runner_dir() -> Path:
    """A short path (Podman's sockets below it must fit in 108 bytes); removed with it."""
    return Path(tempfile.mkdtemp(prefix="buildpy-ci-"))


def run_job(commands: list[str], checkout: Path, podman_url: str) -> str:
    """The job's commands in ``checkout``, as a runner's shell runs them; their stderr."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, **CI_VARIABLES, "PATH": path, "CONTAINER_HOST": podman_url}
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    done = subprocess.run(
        ["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


@pytest.mark.rootless
@pytest.mark.parametrize("ci", ["gitlab", "github"])
def test_the_job_builds_cold_then_reuses_the_restored_cache(ci: str, tmp_path: Path) -> None:
    commands = jobs()[ci]
    checkout = tmp_path / "checkout"
    shutil.copytree(EXAMPLE, checkout)
    # a key of this test run's own: no earlier run's layer can answer for it
    (checkout / "requirements.txt").write_text(f"# {tmp_path.name}\nflask\ngunicorn\n")

    with empty_storage(runner_dir(), BUILDER) as runner:
        cold = run_job(commands, checkout, runner.url)
        assert "installing dependencies" in cold and "dependency layer reused" not in cold
    carried = checkout / ".buildpy-cache"
    assert (carried / "buildpy-cache.json").is_file()  # what the CI system saves

    restored = tmp_path / "checkout-2"  # the next job: a new checkout, the cache restored
    shutil.copytree(EXAMPLE, restored)
    shutil.copy(checkout / "requirements.txt", restored / "requirements.txt")
    shutil.copytree(carried, restored / ".buildpy-cache")
    with empty_storage(runner_dir(), BUILDER) as runner:
        warm = run_job(commands, restored, runner.url)
        assert "dependency layer reused" in warm, warm[-3000:]
        assert "installing dependencies" not in warm
        assert IMAGES[ci] in runner.names()
