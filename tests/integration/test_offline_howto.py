"""docs/how-to/offline-builds.md, run as written: the blocks marked ```sh tested.

From the connected side (`buildpy wheelhouse`, `podman save`) to the air-gapped one
(`podman load`, `buildpy build --wheelhouse --network none -e ...`), on a copy of
examples/hello-flask (whose .s2i/environment says GREETING=Hello). The only change made to
the commands is the builders' prefix, when BUILDPY_BUILDER_PREFIX names other builders.

The wheelhouse is kept in ~/.cache/buildpy/doc-wheelhouse: its first run fetches from PyPI
(through the host's CA bundle), later runs find everything there and fetch nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BUILDER_PREFIX, HOST_CA, ROOT
from itest import http_get, running, shell_env
from wheelhouses import CACHE

HOWTO = ROOT / "docs" / "how-to" / "offline-builds.md"
TESTED = re.compile(r"^```sh tested\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TAG = "localhost/hello-offline"


def marked_blocks() -> list[str]:
    text = HOWTO.read_text().replace("localhost/buildpy/", f"{BUILDER_PREFIX}/")
    return TESTED.findall(text)


def test_the_how_to_marks_both_sides() -> None:
    connected, air_gapped = marked_blocks()
    assert "buildpy wheelhouse" in connected and "podman save" in connected
    assert "podman load" in air_gapped and "--network none" in air_gapped


def test_the_air_gapped_walk_through_runs_as_written(podman_url: str, tmp_path: Path) -> None:
    if not HOST_CA.is_file():
        pytest.fail(f"{HOST_CA} is missing: the how-to's wheelhouse comes from PyPI through it")
    shutil.copytree(ROOT / "examples" / "hello-flask", tmp_path / "myapp")
    kept = CACHE / "doc-wheelhouse"
    kept.mkdir(parents=True, exist_ok=True)
    (tmp_path / "wheels").symlink_to(kept)
    env = shell_env(podman_url)
    script = "\n".join(marked_blocks())
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.strip().splitlines()[-1] == TAG
        with running(TAG, user="12345") as (url, name):
            assert http_get(url + "/", name=name) == (200, "Howdy from buildpy!\n")
    finally:
        subprocess.run(["podman", "rmi", "-f", TAG], capture_output=True, check=False)
