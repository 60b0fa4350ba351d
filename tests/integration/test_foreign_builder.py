"""Fast rebuilds on S2I builders that are not buildpy's (no io.buildpy.assemble-phases).

Two builders are made here from buildpy's minimal builder image: one with buildpy's labels
blanked (its own scripts, unmodified, run in one go as any S2I tool would run them), and one
with a small script set in sclorg's style (``mv /tmp/src/* "$HOME"``, ``pip install -r``,
``pip install .`` for a setup.py). Each is built, one source line changed, built again: the
second build reuses the dependency layer its own assemble made, and the app answers with
the new line. A project to install keeps one phase, and says so.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BUILDER_PREFIX, ROOT, TEST_IMAGE_PREFIX, BuildFn, built_event
from itest import copy_app, http_get, logged, running

BASE = f"{BUILDER_PREFIX}/python-311-minimal"
EXAMPLE = ROOT / "examples" / "hello-flask"
BLANKED = 'LABEL io.buildpy.assemble-phases="" io.buildpy.builder.digest=""\n'

SCLORG_ASSEMBLE = """\
#!/bin/bash
# In the style of sclorg/s2i-python-container's assemble.
set -e
shopt -s dotglob
echo "---> Installing application source ..."
mv /tmp/src/* "$HOME"
if [[ -f requirements.txt ]]; then
  echo "---> Installing dependencies ..."
  pip install -r requirements.txt
fi
if [[ ( -f setup.py || -f setup.cfg ) && -z "$DISABLE_SETUP_PY_PROCESSING" ]]; then
  echo "---> Installing application ..."
  pip install .
fi
"""
SCLORG_RUN = """\
#!/bin/bash
exec gunicorn --bind 0.0.0.0:8080 wsgi
"""


def _podman_build(tmp: Path, containerfile: str) -> str:
    tag = f"{TEST_IMAGE_PREFIX}foreign-builder-{uuid.uuid4().hex[:8]}:latest"
    (tmp / "Containerfile").write_text(containerfile)
    subprocess.run(
        ["podman", "build", "-q", "-t", tag, str(tmp)], check=True, capture_output=True, text=True
    )
    return tag


@pytest.fixture(scope="module")
def foreign_builders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``relabelled``: buildpy's builder without its labels; ``sclorg``: sclorg-style scripts."""
    made = {}
    try:
        made["relabelled"] = _podman_build(
            tmp_path_factory.mktemp("relabelled"), f"FROM {BASE}\n{BLANKED}"
        )
        context = tmp_path_factory.mktemp("sclorg")
        (context / "s2i").mkdir()
        (context / "s2i" / "assemble").write_text(SCLORG_ASSEMBLE)
        (context / "s2i" / "run").write_text(SCLORG_RUN)
        made["sclorg"] = _podman_build(
            context,
            f"FROM {BASE}\nUSER 0\nCOPY s2i/ /usr/libexec/sclorg-s2i/\n"
            "RUN chmod 0755 /usr/libexec/sclorg-s2i/*\nUSER 1001\n"
            f"{BLANKED}"
            'LABEL io.openshift.s2i.scripts-url="image:///usr/libexec/sclorg-s2i"'
            ' io.s2i.scripts-url="image:///usr/libexec/sclorg-s2i"\n',
        )
        yield made
    finally:
        if made:
            subprocess.run(["podman", "rmi", "-f", *made.values()], capture_output=True)
        _remove_layers(made.values())


def _remove_layers(builders: Any) -> None:
    """The dependency layers made on these builders (their builder label names them)."""
    for builder in builders:
        found = subprocess.run(
            [
                "podman",
                "images",
                "-q",
                "--filter",
                f"label=io.buildpy.dependencies.builder={builder}",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if found:
            subprocess.run(["podman", "rmi", "-f", *set(found)], capture_output=True, check=False)


def _app(tmp_path: Path) -> Path:
    return copy_app(EXAMPLE, tmp_path / "flask", tmp_path.name, "flask\ngunicorn\n")


@pytest.mark.parametrize("kind", ["relabelled", "sclorg"])
def test_source_change_reuses_the_layer_of_a_foreign_builder(
    kind: str, foreign_builders: dict[str, str], buildpy_build: BuildFn, tmp_path: Path
) -> None:
    builder = foreign_builders[kind]
    app = _app(tmp_path)
    first = buildpy_build(app, builder=builder)
    event = built_event(first)
    assert (event["phases"], event["dependencies_reused"]) == (2, False)
    assert logged(first.stderr, "installing dependencies with the builder's own assemble")

    wsgi = app / "wsgi.py"
    wsgi.write_text(wsgi.read_text().replace("from buildpy!", "from a foreign rebuild!"))
    planned = buildpy_build.plan(app, builder=builder)
    assert planned["phases"] == {"count": 2, "reason": None, "foreign": True}
    assert planned["dependency_layer"]["status"] == "reuse"

    second = buildpy_build(app, builder=builder)
    event = built_event(second)
    assert (event["phases"], event["dependencies_reused"]) == (2, True)
    assert logged(second.stderr, "dependency layer reused")
    output = second.stdout + second.stderr
    assert "Successfully installed" not in output  # everything was satisfied on the layer
    with running(second.tag) as (url, name):
        assert http_get(url + "/", name=name) == (200, "Hello from a foreign rebuild!\n")


def test_a_project_to_install_keeps_one_phase_on_a_foreign_builder(
    foreign_builders: dict[str, str], buildpy_build: BuildFn, tmp_path: Path
) -> None:
    app = _app(tmp_path)
    (app / "setup.py").write_text(
        "from setuptools import setup\nsetup(name='foreignapp', version='1', py_modules=['wsgi'])\n"
    )
    built = buildpy_build(app, builder=foreign_builders["sclorg"])
    assert built_event(built)["phases"] == 1
    (said,) = logged(built.stderr, "building in one phase")
    assert "setup.py" in said["reason"] and "no dependency phase of its own" in said["reason"]
    assert "Installing application" in built.stdout + built.stderr
    with running(built.tag) as (url, name):
        assert http_get(url + "/", name=name) == (200, "Hello from buildpy!\n")
