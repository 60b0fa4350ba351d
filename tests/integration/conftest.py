"""Fixtures for tests against real Podman, real builder images and real apps.

`make test` prepares what these need: Podman and its host settings, the base
and builder images, and the wheelhouse (~/.cache/buildpy/wheelhouse). Tests share one
Podman service, found the way buildpy finds it (CONTAINER_HOST, else the standard
socket when it answers, else a private service started here and stopped at the end),
and a package index served from the wheelhouse on 127.0.0.1, which builds reach with
--network host.

The same tests run as root and, those marked `rootless`, as an ordinary user with no
login session (scripts/test-rootless, part of `make test`). BUILDPY_TEST_SERVICE=private
or standard makes the session fail unless that kind of service is the one in use.
The index is a find-links page at / and a PEP 503 index at /simple/. Builds of the
scenario apps run with --network none from a wheelhouse that `buildpy wheelhouse` made
(see ``wheelhouses``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
BATTERY_SCRATCH = "/tmp/bpt-"  # where the failure battery's cases keep their sources
# The suite's builds share the machine's image storage (and other runs on it may too): no
# build may evict the dependency layers another test is about to reuse. The size limit is
# tested in a storage of its own (test_cache_limit.py), with the limit given there.
os.environ.setdefault("BUILDPY_CACHE_MAX", "off")
# Ctrl-C's signal reaches the builds the tests start as it reaches a terminal's foreground
# job. A test run started in the background by a shell without job control (a CI step run
# as `cmd &`, `nohup`) has SIGINT ignored, and children inherit an ignored signal (buildpy
# then rightly keeps ignoring it, and the interrupt tests would wait in vain); a handler
# here is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
    from itest import STARTED, build_containers, containers_named

    leaked = [name for name in containers_named("buildpy-test-") if name in STARTED]
    for under in (tmp_path_factory.getbasetemp(), ROOT, BATTERY_SCRATCH):
        leaked += build_containers(f"{str(under).rstrip('/')}/")  # not .../pytest-1234 for -123
    assert not leaked, f"containers left behind: {leaked}"


def service_kind() -> str:
    """Which Podman service buildpy would use here: CONTAINER_HOST, standard or private."""
    if os.environ.get("CONTAINER_HOST"):
        return "CONTAINER_HOST"
    if service.standard_socket(os.environ, os.getuid()) is not None:
        return "standard"
    return "private"


def needs_a_private_service() -> None:
    """Skip a case about buildpy's own service where another answers at the standard
    socket (the second half of the rootless pass): buildpy starts none there."""
    if service_kind() != "private":
        pytest.skip("a service answers at the standard socket: buildpy starts none of its own")


_USED: list[str] = []


@pytest.fixture(scope="session")
def podman_url() -> Iterator[str]:
    """One Podman service for the whole session, found as buildpy finds it; a private one
    started here is stopped at the end (no daemon left behind)."""
    kind = service_kind()
    expected = os.environ.get("BUILDPY_TEST_SERVICE")
    if expected and expected != kind:
        pytest.fail(f"BUILDPY_TEST_SERVICE={expected}, but the service here is {kind}")
    with service.connect() as url:
        _USED.append(f"{kind} ({url})")
        yield url


def _report_service(terminalreporter: pytest.TerminalReporter) -> None:
    if not _USED:
        return
    who = "root" if os.getuid() == 0 else f"uid {os.getuid()} (rootless)"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or "unset"
    terminalreporter.write_line(
        f"podman: as {who}, XDG_RUNTIME_DIR {runtime_dir}, service {_USED[0]}"
    )


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


@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    """A registry on 127.0.0.1 over plain HTTP for the session (``host:port``); pushes and
    pulls to it need --tls-verify=false. Its storage (builder layers: ~100 MB) is removed
    at the end, not kept with pytest's temporary directories."""
    from itest import registry_server

    root = Path(tempfile.mkdtemp(prefix="buildpy-test-registry-"))
    try:
        with registry_server(root) as host:
            yield host
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
    default (the local index, host network; with ``wheelhouse``, that and no network),
    tagged uniquely unless ``args`` has a ``--tag``; the image is removed at the
    session's end. Logs are JSON (``built_event`` reads them) unless ``log_format`` says
    ``human``. ``plan`` runs `buildpy plan` with the options such a build gets."""

    podman_url: str
    index_url: str
    images: list[str]

    def offline_inputs(self) -> list[str]:
        """The build-only variables of an offline build; they are part of the dependency
        layer's key, so `buildpy cache export` needs them too."""
        return [
            "--build-env",
            f"PIP_INDEX_URL={self.index_url}",
            "--build-env",
            f"PIP_FIND_LINKS={self.index_url}",
            "--build-env",
            "PIP_NO_INDEX=1",
        ]

    def __call__(
        self,
        source: Path,
        *args: str,
        builder: str | None = None,
        offline: bool = True,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 900,
        quiet: bool = False,
        wheelhouse: Path | None = None,
        log_format: str = "json",
    ) -> Built:
        tag = _given_tag(args)
        if tag is None:
            tag = f"{TEST_IMAGE_PREFIX}{source.name.lower()}-{uuid.uuid4().hex[:8]}:latest"
            args = ("--tag", tag, *args)
        cmd = [*BUILDPY, *(["-q"] if quiet else []), "--log-format", log_format]
        cmd += ["build", str(source), *args]
        if wheelhouse is not None:  # air-gapped: no network at all
            cmd += ["--wheelhouse", str(wheelhouse), "--network", "none"]
            cmd += self._options(builder, offline=False)
        else:
            cmd += self._options(builder, offline)
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=self._env(env), timeout=timeout
        )
        self.images.append(tag)
        # The image itself too: a test that builds a tag again leaves the first one untagged.
        self.images.extend(built_images(done.stderr))
        if check and done.returncode != 0:
            pytest.fail(f"buildpy build failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return Built(done.returncode, done.stdout, done.stderr, tag)

    def plan(
        self,
        source: Path,
        *args: str,
        builder: str | None = None,
        wheelhouse: Path | None = None,
    ) -> dict[str, Any]:
        """`buildpy plan --format json` for what ``self(source, *args, ...)`` builds."""
        cmd = [*BUILDPY, "plan", str(source), "--format", "json", *args]
        if wheelhouse is not None:
            cmd += ["--wheelhouse", str(wheelhouse), "--network", "none"]
        cmd += self._options(builder, offline=wheelhouse is None)
        done = subprocess.run(cmd, capture_output=True, text=True, env=self._env(None), timeout=120)
        if done.returncode != 0:
            pytest.fail(f"buildpy plan failed ({done.returncode}):\n{done.stderr[-4000:]}")
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def _options(self, builder: str | None, offline: bool) -> list[str]:
        options = ["--builder", builder] if builder else []
        if offline:
            options += ["--network", "host", *self.offline_inputs()]
        return options

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**os.environ, "CONTAINER_HOST": self.podman_url, **(extra or {})}


def built_event(built: Built) -> dict[str, Any]:
    """buildpy's closing JSON log line (``BuildFn`` asks for JSON logs)."""
    for line in reversed(built.stderr.splitlines()):
        if line.startswith("{") and '"event": "built"' in line:
            event: dict[str, Any] = json.loads(line)
            return event
    raise AssertionError(f"no 'built' log line in:\n{built.stderr[-2000:]}")


def built_images(stderr: str) -> list[str]:
    """The images builds made (short IDs), from their closing log lines: JSON (logs off a
    terminal), or for people (``built TAG: image 1a7eab06fb79, ...``)."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{") and '"event": "built"' in line:
            image = json.loads(line).get("image")
            found += [image] if isinstance(image, str) and image else []
        elif said := re.match(r"built .*?image ([0-9a-f]{12})", line):
            found.append(said.group(1))
    return found


def _given_tag(args: tuple[str, ...]) -> str | None:
    """The test's own ``--tag`` (a registry's name, say), removed at the end like the others."""
    for flag, value in zip(args, args[1:]):
        if flag in ("-t", "--tag"):
            return value
    return None


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
    """Which Podman service the session used; the failure battery's case count by class
    (tests/integration/test_battery_*.py)."""
    _report_service(terminalreporter)
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
