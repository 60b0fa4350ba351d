"""Helpers for integration tests: run an image on loopback, GET with bounded retries, a
registry on loopback."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from storage import LOCAL_PODMAN

# Names of the containers `running` started in this session: root's storage is shared by
# every session on the host, so another session's containers are not this one's leftovers.
STARTED: set[str] = set()


def file_contains(path: Path, needle: bytes) -> bool:
    """Whether a (large) file holds ``needle`` anywhere, read in overlapping chunks."""
    overlap = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            if needle in overlap + chunk:
                return True
            overlap = chunk[-len(needle) :]
    return False


def copy_app(example: Path, dest: Path, key: str, requirements: str) -> Path:
    """A copy of ``example`` at ``dest`` whose requirements.txt (``requirements``) starts
    with the comment ``key``: a dependency layer of its own."""
    shutil.copytree(example, dest)
    (dest / "requirements.txt").write_text(f"# {key}: a key of its own\n{requirements}")
    return dest


def logged(stderr: str, event: str) -> list[dict[str, Any]]:
    """The JSON log events named ``event`` in a build's stderr."""
    found = (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
    return [entry for entry in found if entry.get("event") == event]


def shell_env(podman_url: str) -> dict[str, str]:
    """The environment a documented shell block runs in: this Podman, and ``buildpy`` on
    PATH from the interpreter running the tests."""
    return {
        **os.environ,
        "CONTAINER_HOST": podman_url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(
    image: str,
    *,
    user: str | None = None,
    env: dict[str, str] | None = None,
    port: int = 8080,
    args: Sequence[str] = (),
    podman: Sequence[str] = ("podman",),
) -> Iterator[tuple[str, str]]:
    """Run an image with its port published on 127.0.0.1; yield (base URL, container name).

    ``podman`` is the command with its global options (``--root``, ``--runroot`` for
    another storage)."""
    host_port = free_port()
    name = f"buildpy-test-{uuid.uuid4().hex[:10]}"
    STARTED.add(name)
    cmd = [*podman, "run", "-d", "--name", name, "-p", f"127.0.0.1:{host_port}:{port}"]
    if user:
        cmd += ["--user", user]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    subprocess.run([*cmd, *args, image], check=True, capture_output=True, text=True)
    try:
        yield f"http://127.0.0.1:{host_port}", name
    finally:
        subprocess.run([*podman, "rm", "-f", "-t", "2", name], capture_output=True, check=False)


@functools.cache
def highest_uid() -> int | None:
    """The highest UID a container can run as here: None as root (any), else the size of the
    rootless user's namespace (the user and its subuid range) less one."""
    if os.getuid() == 0:
        return None
    out = subprocess.run(
        ["podman", "info", "--format", "{{range .Host.IDMappings.UIDMap}}{{.Size}} {{end}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sum(int(size) for size in out.split()) - 1


def runnable(users: Sequence[str | None]) -> list[str | None]:
    """The --user values of ``users`` that this Podman can run (rootless: inside the
    subuid range; `useradd` gives 65536, so UID 100001 needs a larger range)."""
    top = highest_uid()
    return [u for u in users if u is None or top is None or int(u) <= top]


def http_get(
    url: str, *, timeout: float = 60.0, name: str | None = None, podman: Sequence[str] = ("podman",)
) -> tuple[int, str]:
    """GET url, retrying until it answers or `timeout` passes (bounded: at most 300 tries)."""
    deadline = time.monotonic() + timeout
    last: object = None
    for _ in range(300):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    logs = ""
    if name:
        shown = subprocess.run([*podman, "logs", name], capture_output=True, text=True)
        logs = shown.stdout + shown.stderr
    pytest.fail(f"{url} did not answer within {timeout} s ({last}); container log:\n{logs[-3000:]}")


def inspect_image(tag: str) -> dict[str, Any]:
    out = subprocess.run(
        ["podman", "image", "inspect", tag], check=True, capture_output=True, text=True
    ).stdout
    found: dict[str, Any] = json.loads(out)[0]
    return found


def containers_named(prefix: str) -> list[str]:
    out = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"], check=True, capture_output=True, text=True
    ).stdout
    return [n for n in out.split() if n.startswith(prefix)]


SOURCE_LABEL = "io.openshift.s2i.build.source-location"


def build_containers(under: str) -> list[str]:
    """Working containers (any state) whose source lies under ``under``."""
    out = subprocess.run(
        [
            "podman",
            "ps",
            "-a",
            "--format",
            f'{{{{.Names}}}} {{{{index .Labels "{SOURCE_LABEL}"}}}}',
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = []
    for line in out.splitlines():
        name, _, location = line.partition(" ")
        if location.startswith(under):
            found.append(name)
    return found


REGISTRY_BINARY = "/usr/bin/docker-registry"  # Debian's docker-registry package

_REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}/data
  maintenance:
    readonly:
      enabled: {readonly}
http:
  addr: 127.0.0.1:{port}
"""


@contextmanager
def registry_server(root: Path, *, readonly: bool = False) -> Iterator[str]:
    """A registry on 127.0.0.1 (plain HTTP, storage under ``root``), stopped at the end;
    yield its ``host:port``. Never the package's systemd service."""
    if not Path(REGISTRY_BINARY).is_file():
        pytest.fail(f"{REGISTRY_BINARY} is missing: scripts/setup-host installs docker-registry")
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(_REGISTRY_CONFIG.format(root=root, port=port, readonly=str(readonly).lower()))
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_registry(f"http://127.0.0.1:{port}/v2/", proc, root / "registry.log")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_registry(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the registry answers (bounded: 100 tries, about 10 s)."""
    for _ in range(100):
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"the registry at {url} did not start; its log:\n{log.read_text()[-2000:]}")


@contextmanager
def podman_service(sock: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `podman system service` of the test's own on ``sock`` (to kill mid-build);
    killed at the end of the block in any case."""
    service = subprocess.Popen(
        [*LOCAL_PODMAN, "system", "service", "--time=0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield service
    finally:
        service.kill()
        service.wait()
