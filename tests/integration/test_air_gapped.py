"""Builds with no network and builds through a mirror, on real Podman.

The scenario apps' air-gapped builds are in test_s2i_apps.py (each app once per builder,
`--network none` from a wheelhouse that `buildpy wheelhouse` made). Here: what running
`buildpy wheelhouse` again does, the wheelhouse's place and the dependency layer's key,
lock files naming pypi.python.org (a name that does not resolve here) built through
`--index-url` with credentials that must show nowhere, uv.lock and poetry.lock naming PyPI
built through such a mirror, and how an unreachable index fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.9 and 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

import pytest
from conftest import APPS, BUILDER_PREFIX, HOST_CA, BuildFn, Built, built_event
from itest import file_contains, http_get, inspect_image, running
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
    assert not file_contains(saved, TOKEN.encode()), "the token is in the saved image"


def test_a_redirected_lock_keeps_its_local_path_pointing_at_the_source(
    buildpy_build: BuildFn, simple_index_url: str
) -> None:
    """sclorg's micropipenv-test-app: Pipfile.lock names pypi.python.org and installs the
    application itself as {path = ".", editable = true}. Through --index-url micropipenv
    reads a redirected copy of the lock kept outside the source: "." must still be the
    source (it was the copy's directory: "neither 'setup.py' nor 'pyproject.toml' found")."""
    app = APPS / "micropipenv-local-path"
    built = buildpy_build(
        app, "--index-url", simple_index_url, "--network", "host", builder=MINIMAL, offline=False
    )
    with running(built.tag, user="12345") as (url, name):
        status, body = http_get(url + "/", timeout=90, name=name)
    assert (status, body) == (200, f"{app.name}: localapp=1.0 from the lock's local path\n")
    assert '"path": "."' in (app / "Pipfile.lock").read_text()  # the user's file as it was


def test_a_lock_installer_only_warns_about_an_unreachable_pip_index(
    buildpy_build: BuildFn, simple_index_url: str, tmp_path: Path
) -> None:
    """sclorg's micropipenv-test-app sets PIP_INDEX_URL=https://example.com/ on purpose: the
    lock's packages come from the index it names, and the tool from wherever it can. With
    micropipenv and a lock, an unreachable PIP_INDEX_URL is a warning, not the failure it is
    for pip (test_battery_indexes.py); here the tool comes from the extra index."""
    app = tmp_path / "app"
    shutil.copytree(MICROPIPENV_APP, app)
    for name in ("Pipfile", "Pipfile.lock"):  # the lock names the loopback index
        path = app / name
        path.write_text(
            path.read_text().replace("https://pypi.python.org/simple", simple_index_url)
        )
    _rehash_pipfile_lock(app)
    unreachable = "http://127.0.0.1:9/simple"
    (app / ".s2i" / "environment").write_text(
        f"ENABLE_MICROPIPENV=1\nPIP_INDEX_URL={unreachable}\n"
        f"PIP_EXTRA_INDEX_URL={simple_index_url}\n"
    )
    built = buildpy_build(app, "--network", "host", builder=MINIMAL, offline=False)
    assert f"WARNING: the package index {unreachable} cannot be reached" in built.stderr
    with running(built.tag, user="12345") as (url, name):
        status, body = http_get(url + "/", timeout=90, name=name)
    assert status == 200 and body.startswith("micropipenv-pypi-python-org: installed")


def _rehash_pipfile_lock(app: Path) -> None:
    """Pipfile.lock's _meta.hash as pipenv computes it from the Pipfile (micropipenv --deploy
    checks it)."""
    pipfile = tomllib.loads((app / "Pipfile").read_text())
    data = {
        "_meta": {"sources": pipfile["source"], "requires": pipfile.get("requires", {})},
        "default": pipfile.get("packages", {}),
        "develop": pipfile.get("dev-packages", {}),
    }
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    lock = json.loads((app / "Pipfile.lock").read_text())
    lock["_meta"]["hash"] = {"sha256": digest.hexdigest()}
    (app / "Pipfile.lock").write_text(json.dumps(lock, indent=4) + "\n")


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


@pytest.mark.rootless
def test_a_uv_lock_builds_with_pips_own_offline_settings(buildpy_build: BuildFn) -> None:
    """PIP_NO_INDEX with PIP_FIND_LINKS (--build-env, as an air-gapped host's pip set-up
    has them) reach uv together; with only the first, uv had no index and nowhere to look
    ("index lookups were disabled and no additional package locations were provided")."""
    assert {"PIP_NO_INDEX=1", f"PIP_FIND_LINKS={buildpy_build.index_url}"} <= set(
        buildpy_build.offline_inputs()
    )
    built = buildpy_build(APPS / "uv-lock", builder=MINIMAL)  # offline: with those
    assert "Installing dependencies via uv (uv.lock)" in built.stderr
    with running(built.tag, user="12345") as (url, name):
        status, body = http_get(url + "/", timeout=90, name=name)
    assert status == 200 and body.startswith("uv-lock: flask=3.0.0 werkzeug=3.0.1 six=none")


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
