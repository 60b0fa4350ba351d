"""An ephemeral CI runner: export the cache after a build, import it into empty storage.

The second storage (``storage.empty_storage``) holds nothing but the builder image,
loaded from an archive, as a runner that pulls only its builder would. After the
import, a build after a source-only change must reuse the dependency layer and the
app must answer HTTP; a tampered archive must be refused with nothing imported. A
Django runner with a cache directory of its own (``XDG_CACHE_HOME``) places the
static files the machine's collectstatic left instead of running it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

import pytest
from conftest import BUILDPY, ROOT, BuildFn, built_event
from itest import copy_app, http_get, logged, running
from storage import Storage, empty_storage
from test_rebuild import BUILDER, copy_example

EmptyStorage = Callable[[], AbstractContextManager[Storage]]


@pytest.fixture
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmptyStorage]:
    """Make an empty storage (with the builder) on demand; removed after the test."""

    def make() -> AbstractContextManager[Storage]:
        return empty_storage(tmp_path_factory.mktemp("runner"), BUILDER)

    yield make


def buildpy(
    url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CONTAINER_HOST": url, **(env or {})}
    return subprocess.run([*BUILDPY, *args], capture_output=True, text=True, env=full, timeout=600)


def test_an_imported_cache_lets_empty_storage_reuse_the_dependency_layer(
    buildpy_build: BuildFn, podman_url: str, runner: EmptyStorage, tmp_path: Path
) -> None:
    app = copy_example(tmp_path)
    first = buildpy_build(app, builder=BUILDER)
    assert built_event(first)["dependencies_reused"] is False
    directory = tmp_path / "ci-cache"
    inputs = ["--builder", BUILDER, *buildpy_build.offline_inputs()]
    exported = buildpy(podman_url, "cache", "export", str(directory), str(app), *inputs)
    assert exported.returncode == 0, exported.stderr
    rows = [line.split("\t") for line in exported.stdout.splitlines()]
    assert [row[:2] for row in rows] == [["exported", "image"], ["exported", "downloads"]]
    manifest = json.loads((directory / "buildpy-cache.json").read_text())
    (image,) = manifest["images"]
    assert image["size"] < 50_000_000  # the builder's layers are not in it

    with runner() as storage:
        imported = buildpy(storage.url, "cache", "import", str(directory))
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.startswith("imported\timage\t")
        assert "imported\tdownloads\t" in imported.stdout
        wheels = storage.run(
            "run", "--rm", "-v", "buildpy-downloads:/c", BUILDER, "sh", "-c", "ls /c/index-*/wheels"
        )  # the wheels of the index the build used
        assert "flask-" in wheels.stdout

        wsgi = app / "wsgi.py"
        wsgi.write_text(wsgi.read_text().replace("from buildpy!", "from a rebuild!"))
        second = buildpy_build(app, builder=BUILDER, env={"CONTAINER_HOST": storage.url})
        event = built_event(second)
        assert (event["phases"], event["dependencies_reused"]) == (2, True)
        with running(second.tag, podman=storage.podman) as (url, name):
            assert http_get(url + "/", name=name, podman=storage.podman) == (
                200,
                "Hello from a rebuild!\n",
            )


def test_a_tampered_archive_is_refused_and_nothing_is_imported(
    buildpy_build: BuildFn, runner: EmptyStorage, tmp_path: Path
) -> None:
    app = copy_example(tmp_path)
    directory = tmp_path / "ci-cache"
    built = buildpy_build(app, "--cache-to", str(directory), builder=BUILDER)
    assert "cache exported" in built.stderr and built.stdout.strip() == built.tag
    (archive,) = directory.glob("dependencies-*.tar")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, other content
    archive.write_bytes(bytes(data))

    with runner() as storage:
        before = storage.names()
        refused = buildpy(storage.url, "cache", "import", str(directory))
        assert refused.returncode == 11, refused.stderr
        assert "does not match its SHA-256" in refused.stderr and "hint:" in refused.stderr
        assert refused.stdout == ""
        assert storage.names() == before
        assert storage.run("volume", "ls", "-q").stdout.split() == []


@pytest.mark.rootless
def test_a_django_runner_places_the_static_files_the_machine_collected(
    buildpy_build: BuildFn, podman_url: str, runner: EmptyStorage, tmp_path: Path
) -> None:
    example = ROOT / "examples" / "hello-django"
    app = copy_app(example, tmp_path / "django", uuid.uuid4().hex, "django\ngunicorn\n")
    machine = {"XDG_CACHE_HOME": str(tmp_path / "machine-home-cache")}
    first = buildpy_build(app, builder=BUILDER, env=machine)
    assert "Collecting Django static files" in first.stdout + first.stderr
    directory = tmp_path / "ci-cache"
    inputs = ["--builder", BUILDER, *buildpy_build.offline_inputs()]
    export = ["cache", "export", str(directory), str(app), *inputs]
    exported = buildpy(podman_url, *export, env=machine)
    assert exported.returncode == 0, exported.stderr
    assert "exported\tstatic\t" in exported.stdout

    views = app / "greeting" / "views.py"
    views.write_text(views.read_text().replace("Hello from Django", "Howdy from Django"))
    own = {"XDG_CACHE_HOME": str(tmp_path / "runner-home-cache")}  # nothing kept there yet
    with runner() as storage:
        imported = buildpy(storage.url, "cache", "import", str(directory), env=own)
        assert imported.returncode == 0, imported.stderr
        assert "imported\tstatic\t" in imported.stdout
        second = buildpy_build(app, builder=BUILDER, env={"CONTAINER_HOST": storage.url, **own})
        assert logged(second.stderr, "static files placed"), second.stderr[-3000:]
        event = built_event(second)
        assert event["dependencies_reused"] and event["assemble_seconds"] == 0  # no run
        with running(second.tag, podman=storage.podman) as (url, name):
            assert http_get(url + "/", name=name, podman=storage.podman) == (
                200,
                "Howdy from Django on buildpy!\n",
            )
