"""Find a Podman service to talk to, or start a short-lived private one.

Order: ``CONTAINER_HOST`` when set (used as given, never second-guessed); else
the standard socket (root: /run/podman/podman.sock, rootless:
$XDG_RUNTIME_DIR/podman/podman.sock, or where Podman puts it without a login
session) when it answers; else a private ``podman system service`` on a socket
in a fresh temporary directory, which lives exactly as long as the ``with``
block and dies with this process.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from buildpy import log
from buildpy.errors import EngineUnavailable

_log = log.get(__name__)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def ping_unix(path: str, timeout: float = 2.0) -> bool:
    """True when a Podman service answers ``GET /_ping`` on a unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply[:16]


def default_sockets(env: Mapping[str, str], uid: int) -> list[str]:
    """Standard socket paths for this user, most likely first.

    Without XDG_RUNTIME_DIR (``su``, ``runuser``, CI shell executors: no login session),
    rootless Podman takes /run/user/UID when that exists and is the user's, else
    $TMPDIR/podman-run-UID (checked with Podman 4.3), and `podman system service`
    listens below it.
    """
    if uid == 0:
        return ["/run/podman/podman.sock"]
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return [f"{runtime_dir}/podman/podman.sock"]
    tmp = env.get("TMPDIR") or "/tmp"
    return [f"/run/user/{uid}/podman/podman.sock", f"{tmp}/podman-run-{uid}/podman/podman.sock"]


def runtime_dir_is_private(socket_path: str, uid: int) -> bool:
    """True when the runtime directory above ``.../podman/podman.sock`` is uid's alone.

    A directory under /tmp could have been made by another user, who could then answer
    on the socket and receive the build's source: Podman refuses such a directory too.
    """
    try:
        st = os.lstat(Path(socket_path).parent.parent)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022


def standard_socket(
    env: Mapping[str, str], uid: int, ping: Callable[[str], bool] = ping_unix
) -> str | None:
    """The first standard socket that is the user's own and answers, or None."""
    for path in default_sockets(env, uid):
        if runtime_dir_is_private(path, uid) and ping(path):
            return path
    return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """In the service's process: get SIGTERM when buildpy dies, however it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass


@contextmanager
def private_service(podman: str = "podman") -> Iterator[str]:
    """Run ``podman system service`` on a temporary socket; yield its unix:// URL."""
    binary = shutil.which(podman)
    if binary is None:
        raise EngineUnavailable(
            "Podman is not installed (no `podman` on PATH) and no Podman service answers",
            "install it (Debian/Ubuntu: `apt-get install podman`; RHEL: `dnf install podman`)"
            " or point CONTAINER_HOST at a running service",
        )
    workdir = Path(tempfile.mkdtemp(prefix="buildpy-podman-"))
    sock = workdir / "podman.sock"
    errlog = workdir / "service.log"
    with open(errlog, "wb") as err:
        proc = subprocess.Popen(
            [binary, "system", "service", "--time=0", f"unix://{sock}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # Ctrl-C reaches buildpy, which then cleans up in order
            preexec_fn=_die_with_parent,
        )
    try:
        _await_socket(proc, str(sock), errlog)
        _log.debug("podman service started", socket=str(sock), pid=proc.pid)
        yield f"unix://{sock}"
    finally:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _await_socket(proc: subprocess.Popen[bytes], sock: str, errlog: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.01
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = errlog.read_text(errors="replace").strip().splitlines()[-5:]
            raise EngineUnavailable(
                f"`podman system service` exited with status {proc.returncode}: "
                + (" | ".join(tail) or "no output"),
                "run `podman info` to see what Podman needs on this host",
            )
        if os.path.exists(sock) and ping_unix(sock):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise EngineUnavailable(
        f"`podman system service` did not answer on {sock} within {START_TIMEOUT:.0f} s",
        "run `podman info` to check the installation",
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def connect(
    env: Mapping[str, str] | None = None,
    *,
    uid: int | None = None,
    podman: str = "podman",
    ping: Callable[[str], bool] = ping_unix,
    candidates: Sequence[str] | None = None,
) -> Iterator[str]:
    """Yield the base URL of a Podman service, starting a private one if needed."""
    env = os.environ if env is None else env
    host = env.get("CONTAINER_HOST")
    if host:
        if host.startswith("unix://") and not ping(host[len("unix://") :]):
            raise EngineUnavailable(
                f"no Podman service answers at CONTAINER_HOST={host}",
                "start it (`podman system service --time=0 " + host + " &`)"
                " or unset CONTAINER_HOST to let buildpy start a private service",
            )
        yield host
        return
    if candidates is None:
        found = standard_socket(env, _uid(uid), ping)
    else:
        found = next((path for path in candidates if ping(path)), None)
    if found is not None:
        _log.debug("using podman service", socket=found)
        yield f"unix://{found}"
        return
    with private_service(podman) as url:
        yield url


def _uid(uid: int | None) -> int:
    return os.getuid() if uid is None else uid
