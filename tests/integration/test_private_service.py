"""buildpy's private Podman service ends with buildpy, however buildpy ends.

Rootless Podman re-executes itself to enter the user's namespace. When it was the user's
first Podman process (it made that namespace), the process that serves outlived a buildpy
killed outright for as long as a request stayed open, as a build's do. Checked with a new
user (no pause process yet) and again once the namespace exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import users

# A build holds requests open (attach, wait); a stream of events stands in for them here,
# needing no image in the new user's storage.
SERVE = """
import os, socket, time
from buildpy import service
with service.private_service() as url:
    stream = socket.socket(socket.AF_UNIX)
    stream.connect(url.removeprefix("unix://"))
    stream.sendall(b"GET /v4.0.0/libpod/events?stream=true HTTP/1.1\\r\\nHost: d\\r\\n\\r\\n")
    assert stream.recv(12) == b"HTTP/1.1 200"
    print(os.getpid(), url, flush=True)
    time.sleep(120)
"""


def test_a_users_private_service_ends_with_a_killed_buildpy() -> None:
    with users.throwaway(subordinate_ids=True) as name:
        uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True).stdout)
        for first in (True, False):
            assert bool(users.processes(uid, "catatonit")) is not first
            socket = _serve_and_kill(name)
            deadline = time.monotonic() + 10
            while users.processes(uid, socket) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = subprocess.run(
                ["ps", "-ww", "-u", str(uid), "-o", "pid,args"], text=True, capture_output=True
            ).stdout
            assert not users.processes(uid, socket), left


def _serve_and_kill(name: str) -> str:
    """Start a private service as ``name`` in a Python process, SIGKILL that process once
    the service answers, and return the service's socket path."""
    with subprocess.Popen(
        [*users.user_python(name), "-c", SERVE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().split()
        assert len(line) == 2 and line[1].startswith("unix://"), proc.stderr.read()
        pid, socket = int(line[0]), line[1].removeprefix("unix://")
        os.kill(pid, signal.SIGKILL)
    return socket
