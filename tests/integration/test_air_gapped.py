"""Builds with no network and builds through a mirror, on real Podman.

The scenario apps' air-gapped builds are in test_s2i_apps.py (each app once per builder,
`--network none` from a wheelhouse that `buildpy wheelhouse` made). Here: what running
`buildpy wheelhouse` again does, the wheelhouse's place and the dependency layer's key,
lock files naming pypi.python.org (a name that does not resolve here) built through
`--index-url` with credentials that must show nowhere, uv.lock and poetry.lock naming PyPI
built through such a mirror, and how an unreachable index fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import APPS, BUILDER_PREFIX, HOST_CA, BuildFn, Built, built_event
from itest import http_get, inspect_image, running
from wheelhouses import AppsWheelhouse

MINIMAL = f"{BUILDER_PREFIX}/python-311-minimal"
PIPENV_APP = APPS / "pipenv-pypi-python-org"
MICROPIPENV_APP = APPS / "micropipenv-pypi-python-org"
TOKEN = "t0ken-never-shown"


def answers(built: Built, app: Path, user: str | None = "12345") -> None:
    with running(built.tag, user=user) as (url, name):
        status, body = http_get(url + "/", timeout=90, name=name)
    assert (status, body) == (200, f"{app.name}: installed from a lock naming pypi.python.org\n")


def test_a_second_wheelhouse_run_adds_nothing_and_needs_no_network(
    apps_wheelhouse: AppsWheelhouse,
) -> None:
    app = APPS / "setup-cfg-pyproject"  # a project to prepare: build requirements too
    directory = apps_wheelhouse.ready(MINIMAL, [app])
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    again = apps_wheelhouse.fill(app, MINIMAL, "--network", "none")
    assert again.stdout.strip() == str(directory)
    assert '"added": 0' in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before


def test_the_wheelhouse_can_move_and_the_dependency_layer_stays(
    buildpy_build: BuildFn, apps_wheelhouse: AppsWheelhouse, tmp_path: Path
) -> None:
    app = tmp_path / "requirements"
    shutil.copytree(APPS / "requirements", app)
    (app / "requirements.txt").write_text(f"# {uuid.uuid4()}: a key of its own\nflask\ngunicorn\n")
    directory = apps_wheelhouse.ready(MINIMAL, [APPS / "requirements"])
    first = buildpy_build(app, builder=MINIMAL, wheelhouse=directory)
    moved = tmp_path / "carried" / "wheels"
    shutil.copytree(directory, moved, copy_function=os.link)
    second = buildpy_build(app, builder=MINIMAL, wheelhouse=moved)
    reused = [built_event(built)["dependencies_reused"] for built in (first, second)]
    assert reused == [False, True]


@pytest.mark.parametrize("app", [PIPENV_APP, MICROPIPENV_APP], ids=lambda p: p.name)
def test_a_lock_naming_pypi_python_org_builds_through_a_mirror_with_credentials(
    buildpy_build: BuildFn, simple_index_url: str, app: Path, tmp_path: Path
) -> None:
    mirror = simple_index_url.replace("http://", f"http://ci:{TOKEN}@")
    built = buildpy_build(
        app, "--index-url", mirror, "--network", "host", builder=MINIMAL, offline=False
    )
    answers(built, app)
    assert TOKEN not in built.stderr + built.stdout
    if app == MICROPIPENV_APP:  # micropipenv prints the (redirected) lock: masked
        assert "ci:***@127.0.0.1" in built.stderr
    assert "pypi.python.org" in (app / "Pipfile.lock").read_text()  # the user's file as it was
    info = inspect_image(built.tag)
    assert TOKEN not in repr(info)
    assert "127.0.0.1" not in repr(info["Config"])
    saved = tmp_path / "image.tar"
    subprocess.run(["podman", "save", "-o", str(saved), built.tag], check=True)
    assert not _contains(saved, TOKEN.encode()), "the token is in the saved image"


@pytest.mark.parametrize(("app", "lock"), [("uv-lock", "uv.lock"), ("poetry-lock", "poetry.lock")])
def test_a_uv_or_poetry_lock_naming_pypi_builds_through_a_mirror(
    buildpy_build: BuildFn, simple_index_url: str, app: str, lock: str
) -> None:
    """The lock names https://pypi.org/simple (poetry.lock: PyPI by naming no source); the
    mirror (the loopback index, with credentials that must show nowhere) serves exactly the
    locked, older versions."""
    mirror = simple_index_url.replace("http://", f"http://ci:{TOKEN}@")
    built = buildpy_build(
        APPS / app, "--index-url", mirror, "--network", "host", builder=MINIMAL, offline=False
    )
    with running(built.tag, user="12345") as (url, name):
        status, body = http_get(url + "/", timeout=90, name=name)
    assert status == 200 and body.startswith(f"{app}: flask=3.0.0 werkzeug=3.0.1 six=none")
    assert TOKEN not in built.stderr + built.stdout
    text = (APPS / app / lock).read_text()  # as it was: naming PyPI (poetry: implicitly)
    assert "127.0.0.1" not in text
    assert ("https://pypi.org/simple" in text) is (lock == "uv.lock")
    assert TOKEN not in repr(inspect_image(built.tag))


def test_a_lock_naming_pypi_python_org_builds_from_real_pypi_by_index_url(
    buildpy_build: BuildFn,
) -> None:
    """Goes to the real index, through the host's TLS proxy (micropipenv: no switch of its own)."""
    if not HOST_CA.is_file():
        pytest.fail(f"{HOST_CA} is missing: this test needs the host's CA bundle")
    built = buildpy_build(
        MICROPIPENV_APP,
        "--index-url",
        "https://pypi.org/simple",
        "--ca-bundle",
        str(HOST_CA),
        builder=MINIMAL,
        offline=False,
    )
    answers(built, MICROPIPENV_APP)


def test_an_unreachable_lock_index_fails_at_once_saying_what_to_do(
    buildpy_build: BuildFn, simple_index_url: str
) -> None:
    started = time.monotonic()
    built = buildpy_build(
        MICROPIPENV_APP,
        "--network",
        "host",
        "--build-env",
        f"PIP_INDEX_URL={simple_index_url}",  # for micropipenv itself; the lock is not redirected
        builder=MINIMAL,
        offline=False,
        check=False,
    )
    assert built.returncode == 7
    error = built.stderr.split("ERROR: assemble exited")[-1]
    assert "pypi.python.org cannot be resolved" in error
    assert "--index-url" in error and "--wheelhouse" in error
    assert time.monotonic() - started < 120


def _contains(path: Path, needle: bytes) -> bool:
    """Whether a (large) file holds ``needle``, read in chunks."""
    overlap = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            if needle in overlap + chunk:
                return True
            overlap = chunk[-len(needle) :]
    return False
