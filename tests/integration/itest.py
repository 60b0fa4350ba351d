"""Helpers for integration tests: run an image on loopback, GET with bounded retries."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


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
) -> Iterator[tuple[str, str]]:
    """Run an image with its port published on 127.0.0.1; yield (base URL, container name)."""
    host_port = free_port()
    name = f"buildpy-test-{uuid.uuid4().hex[:10]}"
    cmd = ["podman", "run", "-d", "--name", name, "-p", f"127.0.0.1:{host_port}:{port}"]
    if user:
        cmd += ["--user", user]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    subprocess.run([*cmd, *args, image], check=True, capture_output=True, text=True)
    try:
        yield f"http://127.0.0.1:{host_port}", name
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", name], capture_output=True, check=False)


def http_get(url: str, *, timeout: float = 60.0, name: str | None = None) -> tuple[int, str]:
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
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True).stdout
        logs += subprocess.run(["podman", "logs", name], capture_output=True, text=True).stderr
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


@contextmanager
def podman_service(sock: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `podman system service` of the test's own on ``sock`` (to kill mid-build);
    killed at the end of the block in any case."""
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
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
