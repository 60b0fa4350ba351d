"""--pull, --push and --output end to end: real Podman, a registry on 127.0.0.1, skopeo.

The registry is Debian's docker-registry, started by the ``registry`` fixture on a
free loopback port over plain HTTP (hence --no-tls-verify), its storage removed at
the end. Builds use the minimal builder and a one-file app, so archives stay small.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BuildFn, Built
from itest import free_port, inspect_image, registry_server

MINIMAL = "localhost/buildpy/python-311-minimal"
APP = "import http.server\nprint('hello')\n"


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


def exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry-app")
    (root / "app.py").write_text(APP)
    return root


@pytest.fixture(scope="module")
def remote_builder(registry: str) -> Iterator[str]:
    """The minimal builder under a name that only the registry has (its layers stay in
    local storage under the builder's own name, which is never touched)."""
    ref = f"{registry}/buildpy-test/builder-{uuid.uuid4().hex[:8]}:latest"
    podman("tag", MINIMAL, ref)
    try:
        podman("push", "--tls-verify=false", ref)
    finally:
        podman("rmi", ref)  # only this name: the builder keeps its own
    yield ref
    podman("rmi", ref, check=False)


def test_a_builder_only_in_the_registry_is_pulled(
    buildpy_build: BuildFn, app: Path, remote_builder: str
) -> None:
    assert not exists(remote_builder)
    try:
        built = buildpy_build(app, "--no-tls-verify", builder=remote_builder)
        assert "pulling the builder" in built.stderr
        assert inspect_image(remote_builder)["Id"] == inspect_image(MINIMAL)["Id"]
        labels = inspect_image(built.tag)["Config"]["Labels"]
        assert labels["io.openshift.s2i.build.image"] == remote_builder
    finally:
        podman("rmi", remote_builder, check=False)


def test_pull_never_with_a_missing_builder_is_exit_6_without_a_registry(
    buildpy_build: BuildFn, app: Path
) -> None:
    # nothing listens there: asking would take seconds and end in exit 9, not 6
    absent = f"127.0.0.1:{free_port()}/buildpy-test/absent:latest"
    built = buildpy_build(app, "--pull", "never", builder=absent, check=False)
    assert built.returncode == 6, built.stderr
    assert built.stdout == ""
    assert "--pull never" in built.stderr and "hint:" in built.stderr


def test_a_plain_http_registry_without_no_tls_verify_is_exit_9_with_a_hint(
    buildpy_build: BuildFn, app: Path, remote_builder: str
) -> None:
    built = buildpy_build(app, builder=remote_builder, check=False)
    assert built.returncode == 9, built.stderr
    assert built.stdout == ""
    assert "server gave HTTP response to HTTPS client" in built.stderr
    assert "--no-tls-verify" in built.stderr and "insecure = true" in built.stderr
    assert not exists(remote_builder)


@dataclass(frozen=True)
class Delivered:
    built: Built
    image_id: str
    oci: Path
    docker: Path


@pytest.fixture(scope="module")
def delivered(
    buildpy_build: BuildFn, app: Path, registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Delivered:
    """One build that pushes and writes both archives."""
    out = tmp_path_factory.mktemp("archives")
    tag = f"{registry}/buildpy-test/delivered-{uuid.uuid4().hex[:8]}:v1"
    oci, docker = out / "app.oci.tar", out / "app.docker.tar"
    built = buildpy_build(
        app,
        *("--tag", tag, "--push", "--no-tls-verify"),
        *("--output", f"oci-archive:{oci}", "--output", f"docker-archive:{docker}"),
        builder=MINIMAL,
    )
    assert built.stdout.strip() == tag
    assert sorted(out.iterdir()) == [docker, oci]  # no partial files beside them
    return Delivered(built, inspect_image(tag)["Id"], oci, docker)


def test_a_pushed_image_pulls_back_identical(delivered: Delivered) -> None:
    tag = delivered.built.tag
    remote = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{tag}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    repository = tag.rpartition(":")[0]
    podman("rmi", tag)
    podman("pull", "--tls-verify=false", tag)
    pulled = inspect_image(tag)
    assert pulled["Id"] == delivered.image_id
    assert f"{repository}@{remote['Digest']}" in pulled["RepoDigests"]


@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive"])
def test_an_archive_loads_back_as_the_same_image(delivered: Delivered, kind: str) -> None:
    path = delivered.oci if kind == "oci-archive" else delivered.docker
    tag = delivered.built.tag
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"{kind}:{path}"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert inspected["Labels"]["io.openshift.s2i.build.image"] == MINIMAL
    podman("rmi", tag)
    loaded = podman("load", "-i", str(path))
    assert f"Loaded image: {tag}" in loaded.stdout
    assert inspect_image(tag)["Id"] == delivered.image_id


def test_a_refused_push_keeps_the_image_and_says_why(
    buildpy_build: BuildFn, app: Path, tmp_path: Path
) -> None:
    with registry_server(tmp_path / "read-only", readonly=True) as read_only:
        tag = f"{read_only}/buildpy-test/refused-{uuid.uuid4().hex[:8]}:v1"
        built = buildpy_build(
            app, "--tag", tag, "--push", "--no-tls-verify", builder=MINIMAL, check=False
        )
    assert built.returncode == 10, built.stderr
    assert built.stdout.strip() == tag  # the image exists: a script can push it again
    assert "Method not allowed" in built.stderr
    assert f"kept in local storage as {tag}" in built.stderr
    assert "read-only" in built.stderr  # the hint
    assert exists(tag)
