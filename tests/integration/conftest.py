"""Fixtures for tests against real Podman, real builder images and real apps.

`make test` prepares what these need: Podman and its host settings, the base
and builder images, and the wheelhouse (~/.cache/buildpy/wheelhouse). Tests share one
private Podman service (started here, stopped at the end) and a package index
served from the wheelhouse on 127.0.0.1 (a find-links page at /, a PEP 503 index at
/simple/), which builds reach with --network host. Builds of the scenario apps run with
--network none from a wheelhouse that `buildpy wheelhouse` made (see ``wheelhouses``).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from wheelhouses import AppsWheelhouse

from buildpy import service

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"
# Kept between runs on this machine (scripts/make-wheelhouse fills it), not in the checkout.
WHEELHOUSE = Path(
    os.environ.get("BUILDPY_WHEELHOUSE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildpy" / "wheelhouse"
)
BUILDPY = [sys.executable, "-m", "buildpy"]
TEST_IMAGE_PREFIX = "localhost/buildpy-test/"
# The builder images under test: buildpy's own, or another set named by the prefix that
# `buildpy builder build` also honours (a branch's builders beside the shared ones).
BUILDER_PREFIX = (os.environ.get("BUILDPY_BUILDER_PREFIX") or "localhost/buildpy").rstrip("/")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def no_leftovers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the suite: no working or app container of this session left behind."""
    yield
    from itest import build_containers, containers_named

    leaked = containers_named("buildpy-test-")
    for under in (str(tmp_path_factory.getbasetemp()), str(ROOT)):
        leaked += build_containers(under)
    assert not leaked, f"containers left behind: {leaked}"


@pytest.fixture(scope="session")
def podman_url() -> Iterator[str]:
    """One private Podman service for the whole session (no daemon left behind)."""
    with service.private_service() as url:
        yield url


@pytest.fixture(scope="session")
def index_url() -> Iterator[str]:
    """The wheelhouse as a find-links page on 127.0.0.1."""
    if not any(WHEELHOUSE.glob("*.whl")):
        pytest.fail(f"{WHEELHOUSE} has no wheels: run `make wheelhouse` (make test does)")
    handler = functools.partial(_QuietHandler, directory=str(WHEELHOUSE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def simple_index_url(index_url: str) -> str:
    """The same files as a PEP 503 simple index (what --index-url takes)."""
    return f"{index_url}simple/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """The wheelhouse's files, with a PEP 503 page for each project under /simple/."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/simple/"):
            super().do_GET()
            return
        project = self.path[len("/simple/") :].strip("/")
        links = [
            f'<a href="/{name}">{name}</a><br>'
            for name in sorted(os.listdir(self.directory))
            if project and _project(name) == _normalise(project)
        ]
        body = f"<!DOCTYPE html><html><body>{''.join(links)}</body></html>".encode()
        self.send_response(200 if links else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(filename: str) -> str | None:
    """The normalised project name of a wheel or source distribution file name."""
    if filename.endswith(".whl"):
        return _normalise(filename.split("-", 1)[0])
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            return _normalise(filename[: -len(suffix)].rsplit("-", 1)[0])
    return None


@dataclass
class Built:
    """The outcome of one `buildpy build`."""

    returncode: int
    stdout: str
    stderr: str
    tag: str


@dataclass(frozen=True)
class BuildFn:
    """The ``buildpy_build`` fixture: run `buildpy build` on a source directory, offline by
    default (the local index, host network; with ``wheelhouse``, that and no network); the
    image is removed at the session's end."""

    podman_url: str
    index_url: str
    images: list[str]

    def __call__(
        self,
        source: Path,
        *args: str,
        builder: str | None = None,
        offline: bool = True,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 900,
        wheelhouse: Path | None = None,
    ) -> Built:
        tag = f"{TEST_IMAGE_PREFIX}{source.name.lower()}-{uuid.uuid4().hex[:8]}:latest"
        cmd = [*BUILDPY, "build", str(source), "--tag", tag, *args]
        if builder:
            cmd += ["--builder", builder]
        if wheelhouse is not None:  # air-gapped: no network at all
            cmd += ["--wheelhouse", str(wheelhouse), "--network", "none"]
        elif offline:
            cmd += [
                "--network",
                "host",
                "--build-env",
                f"PIP_INDEX_URL={self.index_url}",
                "--build-env",
                f"PIP_FIND_LINKS={self.index_url}",
                "--build-env",
                "PIP_NO_INDEX=1",
            ]
        run_env = {**os.environ, "CONTAINER_HOST": self.podman_url, **(env or {})}
        done = subprocess.run(cmd, capture_output=True, text=True, env=run_env, timeout=timeout)
        self.images.append(tag)
        if check and done.returncode != 0:
            pytest.fail(f"buildpy build failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return Built(done.returncode, done.stdout, done.stderr, tag)


@pytest.fixture(scope="session")
def images() -> Iterator[list[str]]:
    """Tags made by tests; removed at the end of the session."""
    made: list[str] = []
    yield made
    if made:
        subprocess.run(["podman", "rmi", "-f", *made], capture_output=True, check=False)


@pytest.fixture(scope="session")
def buildpy_build(podman_url: str, index_url: str, images: list[str]) -> BuildFn:
    """Build a source directory with buildpy (see ``BuildFn``)."""
    return BuildFn(podman_url, index_url, images)


@pytest.fixture(scope="session")
def apps_wheelhouse(podman_url: str, simple_index_url: str) -> AppsWheelhouse:
    """The scenario apps' wheelhouse (see ``wheelhouses``)."""
    return AppsWheelhouse(podman_url, simple_index_url)
