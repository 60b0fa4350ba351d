"""Find a Podman service to talk to, or start a short-lived private one.

Order: ``CONTAINER_HOST`` when set (pinged first; exit 5 when it does not answer); else
the standard socket (root: /run/podman/podman.sock, rootless:
$XDG_RUNTIME_DIR/podman/podman.sock, or where Podman puts it without a login
session) when it answers; else a private ``podman system service`` on a socket
in a fresh temporary directory, which lives exactly as long as the ``with``
block and dies with this process.

``CONTAINER_HOST=ssh://user@host[:port]/path/to/podman.sock`` is reached through
one ``ssh -N -L`` tunnel from a local socket to that path, made the same way and
with the same lifetime, logging in with the key ``CONTAINER_SSHKEY`` names (as
for ``podman --remote``) or ssh's own defaults and ``~/.ssh/config``, in batch
mode, with the host key checked against known_hosts. buildpy then talks to the
local socket exactly as to a local service. podman-py's own ssh transport is not
used: it closes its tunnel as soon as a response without a length arrives, so
the attach stream (assemble's output) came back empty; it also starts one ssh
per connection and does not check host keys.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from buildpy import leftovers, log
from buildpy.errors import EngineUnavailable

_log = log.get(__name__)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def ping_unix(path: str, timeout: float = 2.0) -> bool:
    """True when a Podman service answers ``GET /_ping`` on a unix socket."""
    return _ping(socket.AF_UNIX, path, timeout)


def ping_tcp(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Podman service answers ``GET /_ping`` at host:port."""
    return _ping(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port), timeout)


def _ping(family: int, address: str | tuple[str, int], timeout: float) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply[:16]


def answers(host: str, ping: Callable[[str], bool] = ping_unix) -> bool:
    """Whether the service at a ``CONTAINER_HOST`` URL answers; ssh:// is taken on trust
    (its connection errors are translated when first used)."""
    url = urlsplit(host)
    if url.scheme == "unix":
        return ping(url.path)
    if url.scheme == "tcp":
        return url.hostname is not None and ping_tcp(url.hostname, url.port or 80)
    return url.scheme == "ssh"


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


def _die_with_parent() -> Callable[[], None]:
    """What a process of buildpy's own runs before its program: get SIGTERM when buildpy
    dies, however it dies. libc is loaded here, in buildpy (ctypes is imported only when
    such a process starts, not by every build), so the child only calls it."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return lambda: None

    def in_the_child() -> None:  # pragma: no cover - runs in the child
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return in_the_child


def _nothing() -> None:
    return None


@contextmanager
def private_service(
    podman: str = "podman", meanwhile: Callable[[], object] = _nothing
) -> Iterator[str]:
    """Run ``podman system service`` on a temporary socket; yield its unix:// URL.
    ``meanwhile`` runs while the service starts (see ``connect``)."""
    binary = shutil.which(podman)
    if binary is None:
        raise EngineUnavailable(
            "Podman is not installed (no `podman` on PATH) and no Podman service answers",
            "install it (Debian/Ubuntu: `apt-get install podman`; RHEL: `dnf install podman`)"
            " or point CONTAINER_HOST at a running service",
        )

    def failed(why: str) -> EngineUnavailable:
        return EngineUnavailable(
            f"`podman system service` {why}",
            "run `buildpy doctor` to see what Podman needs on this host and how to fix it",
        )

    def command(sock: Path) -> list[str]:
        return [binary, "system", "service", "--time=0", f"unix://{sock}"]

    with _socket_process("podman", command, failed, meanwhile, own_tmpdir=True) as url:
        _log.debug("podman service started", url=url)
        yield url


@contextmanager
def ssh_tunnel(
    host: str, identity: str | None, ssh: str = "ssh", meanwhile: Callable[[], object] = _nothing
) -> Iterator[str]:
    """Forward a temporary local socket to the Podman socket an ssh:// URL names;
    yield the local socket's unix:// URL. ``meanwhile`` runs while ssh connects."""
    url = urllib.parse.urlparse(host)
    if identity is not None and not os.path.isfile(os.path.expanduser(identity)):
        raise EngineUnavailable(
            f"CONTAINER_SSHKEY={identity} is not a file",
            "name the private key that logs in to the Podman host, or unset it to use ssh's",
        )
    binary = shutil.which(ssh)
    if binary is None:
        raise EngineUnavailable(
            f"CONTAINER_HOST={host} needs the ssh client, and there is no `{ssh}` on PATH",
            "install it (Debian/Ubuntu: `apt-get install openssh-client`)",
        )
    key = ["-i", os.path.expanduser(identity)] if identity else []

    def failed(why: str) -> EngineUnavailable:
        return EngineUnavailable(
            f"no Podman service reached at CONTAINER_HOST={host}: ssh {why}",
            "check user, host and port; that CONTAINER_SSHKEY names a key the host takes; that"
            " the host key is in known_hosts (log in once with ssh); and that Podman listens"
            f" at {url.path} there (`podman system service --time=0 unix://{url.path}`)",
        )

    def command(sock: Path) -> list[str]:
        forward = ["-L", f"{sock}:{url.path}", f"ssh://{url.netloc}"]
        return [binary, "-N", *_SSH_OPTIONS, *key, *forward]

    with _socket_process("ssh", command, failed, meanwhile) as local:
        _log.debug("ssh tunnel to podman", host=url.netloc, socket=url.path)
        yield local


_SSH_OPTIONS = (
    *("-o", "BatchMode=yes"),  # never a prompt: a key, an agent, or a clear failure
    *("-o", "ExitOnForwardFailure=yes"),
    *("-o", "ConnectTimeout=10"),
    *("-o", "ServerAliveInterval=30"),
)


@contextmanager
def _socket_process(
    kind: str,
    command: Callable[[Path], list[str]],
    failed: Callable[[str], EngineUnavailable],
    meanwhile: Callable[[], object],
    own_tmpdir: bool = False,
) -> Iterator[str]:
    """Run ``command(SOCK)`` for a socket in a new temporary directory until the block
    ends; yield ``unix://SOCK`` once a Podman service answers there (else raise
    ``failed(why)``), having run ``meanwhile`` while the process started. With
    ``own_tmpdir``, the process gets a TMPDIR removed with it. Both directories are
    named for this process (``leftovers.dir_prefix``): if it is killed outright, a
    later build removes them (``leftovers.sweep_dirs``)."""
    workdir = Path(tempfile.mkdtemp(prefix=leftovers.dir_prefix(kind)))
    sock = workdir / "podman.sock"
    errlog = workdir / "process.log"
    scratch = _scratch_dir() if own_tmpdir else None
    with open(errlog, "wb") as err:
        proc = subprocess.Popen(
            [*_GROUP_KEEPER, *command(sock)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # Ctrl-C reaches buildpy, which then cleans up in order
            preexec_fn=_die_with_parent(),
            env=None if scratch is None else {**os.environ, "TMPDIR": str(scratch)},
        )
    try:
        meanwhile()
        why = _await_socket(proc, str(sock), errlog)
        if why is not None:
            raise failed(why)
        yield f"unix://{sock}"
    finally:
        _stop(proc)
        for path in (workdir, scratch):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)


# What runs the process: a shell that passes SIGTERM on to its whole process group (the
# session ``start_new_session`` gives it) and waits for it. Rootless Podman re-executes
# itself to enter the user's namespace; when it made that namespace (the user's first
# Podman process, no pause process yet), the process that serves outlived a buildpy killed
# outright for as long as a request stayed open, as a build's do (in 6 of 9 tries).
# Given SIGTERM itself, it ends at once. The shell gets the death signal
# (``_die_with_parent``), and ``_stop`` signals it.
_GROUP_KEEPER = (
    "/bin/sh",
    "-c",
    'trap \'trap "" TERM; kill -TERM 0; wait; exit 143\' TERM; "$@" & wait $!',
    "sh",
)


def _scratch_dir() -> Path | None:
    """Where the private service keeps its large temporary files, removed with it.

    Podman exports an image to a temporary file before sending it, and pulls layers
    into temporary files; a service stopped mid-way (Ctrl-C during --output or a pull)
    leaves them in /var/tmp, hundreds of MB each time. Given a TMPDIR of its own, they
    go where buildpy removes them. Not for rootless Podman without XDG_RUNTIME_DIR,
    which derives its run directory from TMPDIR: the service keeps the caller's, as the
    user's own `podman` in that shell would, and so finds the credentials `podman login`
    left there. (A run directory of buildpy's own choosing, tried, let a build with
    another TMPDIR remove a killed build's running container, but lost those logins.)
    """
    if os.getuid() != 0 and not os.environ.get("XDG_RUNTIME_DIR"):
        return None
    prefix = leftovers.dir_prefix("scratch")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=leftovers.scratch_base()))


def _await_socket(proc: subprocess.Popen[bytes], sock: str, errlog: Path) -> str | None:
    """None once a Podman service answers on ``sock``; else why not."""
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.01
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with status {proc.returncode}: {_tail(errlog) or 'no output'}"
        if os.path.exists(sock):
            if ping_unix(sock):
                return None
            said = _tail(errlog)
            if "open failed" in said:  # an ssh tunnel whose far end has no socket
                return f"reached the host, but not the socket: {said}"
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    return f"did not answer on {sock} within {START_TIMEOUT:.0f} s"


def _tail(errlog: Path) -> str:
    return " | ".join(errlog.read_text(errors="replace").strip().splitlines()[-5:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, which the shell passes to the whole group; SIGKILL to the group after
    ``STOP_TIMEOUT``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # the shell is not reaped: its group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def connect(
    env: Mapping[str, str] | None = None,
    *,
    uid: int | None = None,
    podman: str = "podman",
    ping: Callable[[str], bool] = ping_unix,
    candidates: Sequence[str] | None = None,
    meanwhile: Callable[[], object] = _nothing,
) -> Iterator[str]:
    """Yield the base URL of a Podman service, starting a private one if needed.

    ``meanwhile`` runs once before the URL is yielded: while a private service or an ssh
    tunnel starts, a process of its own on another core (a service took 35 ms to answer
    here), so the caller's own start-up work, such as importing the client, costs no
    time of its own there.
    """
    env = os.environ if env is None else env
    host = env.get("CONTAINER_HOST")
    if host and host.startswith("ssh://"):
        with ssh_tunnel(host, env.get("CONTAINER_SSHKEY") or None, meanwhile=meanwhile) as local:
            yield local
        return
    if host:
        if not answers(host, ping):
            raise EngineUnavailable(
                f"no Podman service answers at CONTAINER_HOST={host}",
                "start it (`podman system service --time=0 " + host + " &`)"
                " or unset CONTAINER_HOST to let buildpy start a private service"
                " (`buildpy doctor` checks the whole set-up)",
            )
        meanwhile()
        yield host
        return
    if candidates is None:
        found = standard_socket(env, _uid(uid), ping)
    else:
        found = next((path for path in candidates if ping(path)), None)
    if found is not None:
        _log.debug("using podman service", socket=found)
        meanwhile()
        yield f"unix://{found}"
        return
    with private_service(podman, meanwhile) as url:
        yield url


def _uid(uid: int | None) -> int:
    return os.getuid() if uid is None else uid
