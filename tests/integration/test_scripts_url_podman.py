"""--scripts-url file://DIR against real Podman: the directory's assemble and run are
uploaded, beat the source's .s2i/bin, and the image runs the committed run script."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import BuildFn
from itest import http_get, running

ASSEMBLE = """#!/bin/sh
set -e
cp -R /tmp/src/. "$HOME"/
echo "assembled by --scripts-url" > "$HOME/marker.txt"
"""
RUN = """#!/bin/sh
cd "$HOME" && exec python3 -m http.server 8080
"""


def test_file_scripts_url_builds_and_its_run_answers(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    scripts = tmp_path / "s2iscripts"
    scripts.mkdir()
    (scripts / "assemble").write_text(ASSEMBLE)
    (scripts / "run").write_text(RUN)
    app = tmp_path / "app"
    (app / ".s2i" / "bin").mkdir(parents=True)
    (app / ".s2i" / "bin" / "run").write_text("#!/bin/sh\necho the source's run lost\nexit 3\n")
    (app / "index.txt").write_text("from the source\n")
    url = f"file://{scripts}"

    plan = buildpy_build.plan(app, "--scripts-url", url)
    assert plan["scripts"]["assemble"] == {
        "path": "/tmp/scripts/assemble",
        "origin": f"--scripts-url {url}",
    }
    assert plan["scripts"]["run"]["origin"] == f"--scripts-url {url}"
    assert plan["phases"]["count"] == 1

    built = buildpy_build(app, "--scripts-url", url)
    cmd = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Config.Cmd}}", built.tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert cmd == '["/tmp/scripts/run"]'
    with running(built.tag, user="12345") as (base, name):
        assert http_get(base + "/marker.txt", name=name) == (200, "assembled by --scripts-url\n")
        assert http_get(base + "/index.txt", name=name) == (200, "from the source\n")
