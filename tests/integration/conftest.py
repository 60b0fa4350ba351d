"""Fixtures for tests against real Podman, real builder images and real apps.

`make test` prepares what these need: Podman and its host settings, the base
and builder images, and the wheelhouse (~/.cache/buildpy/wheelhouse). Tests share one
private Podman service (started here, stopped at the end) and a package index
served from the wheelhouse on 127.0.0.1, which builds reach with --network host.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

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
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BATTERY_SCRATCH = "/tmp/bpt-"  # where the failure battery's cases keep their sources

if TYPE_CHECKING:
    from battery import Case

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
    for under in (str(tmp_path_factory.getbasetemp()), str(ROOT), BATTERY_SCRATCH):
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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


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
    default (the local index, host network); the image is removed at the session's end."""

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
    ) -> Built:
        tag = f"{TEST_IMAGE_PREFIX}{source.name.lower()}-{uuid.uuid4().hex[:8]}:latest"
        cmd = [*BUILDPY, "build", str(source), "--tag", tag, *args]
        if builder:
            cmd += ["--builder", builder]
        if offline:
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


@pytest.fixture
def case(podman_url: str) -> Iterator[Case]:
    """A failure-battery case: a scratch directory and builds checked for leftovers."""
    from battery import Case

    made = Case(podman_url)
    try:
        yield made
    finally:
        made.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The failure battery's case count by class (tests/integration/test_battery_*.py)."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "xfailed", "xpassed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if report.when != "call" and outcome != "error":
                continue
            name = Path(report.nodeid.split("::")[0]).stem
            if name.startswith("test_battery_"):
                kind = name.removeprefix("test_battery_")
                counts[kind] = counts.get(kind, 0) + 1
    if counts:
        listed = ", ".join(f"{kind} {counts[kind]}" for kind in sorted(counts))
        terminalreporter.write_line(f"battery: {sum(counts.values())} cases ({listed})")
