"""Working containers (and build volumes) that outlive their build, and how the next build
finds them.

Every exit path of a build removes its working containers, except the ones no
process can handle: SIGKILL, the OOM killer, a power cut. For those, each working
container's name says who made it: ``buildpy-KIND-hHOST-pPID-sSTART-RANDOM``, where
HOST is a digest of this machine's name, PID the building process and START that
process's start time (so a reused PID is not mistaken for the builder). A name is
used, not a label, because a container's labels are committed into the image.

A volume one build makes for itself (its ``--wheelhouse``, see ``wheelvolume``) is
named the same way and carries ``VOLUME_LABEL``.

``sweep`` removes the working containers, then the build volumes, made on this
machine by a process that is gone, and never one of a build still running (same PID
and start time). Builds run it in the background as they start, and ``buildpy cache
prune`` runs it too.

The temporary directories of a private Podman service or an ssh tunnel (its socket and
log, and the service's large temporary files, hundreds of MB when a pull or an export
is cut short) are named the same way (``dir_prefix``); ``sweep_dirs`` removes those of
this user whose process is gone, alongside ``sweep``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildpy import log
from buildpy.engine import Engine
from buildpy.errors import EngineError

_log = log.get(__name__)

VOLUME_LABEL = "io.buildpy.build-volume"  # not io.buildpy.cache: never listed or pruned as cache
VOLUME_KIND = "wheelhouse"  # build volumes are named container_name(VOLUME_KIND)
# buildpy-KIND-hHOST-pPID-sSTART-: who made a container or a temporary directory.
_OWNER = r"^buildpy-[a-z]+-h([0-9a-f]{8})-p([0-9]+)-s([0-9]+)-"
_NAME = re.compile(_OWNER + r"[0-9a-f]+$")  # a container's or volume's: a random suffix
_DIR = re.compile(_OWNER)  # a temporary directory's: mkdtemp's suffix


@dataclass(frozen=True)
class Maker:
    """The process that made a working container: host digest, PID, start time."""

    host: str
    pid: int
    start: int

    @classmethod
    def this_process(cls) -> Maker:
        return cls(host_digest(), os.getpid(), start_time(os.getpid()) or 0)


def host_digest(hostname: str | None = None) -> str:
    name = hostname if hostname is not None else socket.gethostname()
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # after "(comm)", which may hold spaces
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def container_name(kind: str = "build", maker: Maker | None = None) -> str:
    """A working container's name: buildpy-*, with who made it."""
    return dir_prefix(kind, maker) + secrets.token_hex(4)


def dir_prefix(kind: str, maker: Maker | None = None) -> str:
    """The start of a name that says who made the thing (``tempfile.mkdtemp``'s prefix
    for a temporary directory; a container's name adds a random suffix)."""
    made_by = maker or Maker.this_process()
    return f"buildpy-{kind}-h{made_by.host}-p{made_by.pid}-s{made_by.start}-"


def _maker(found: re.Match[str] | None) -> Maker | None:
    return None if found is None else Maker(found[1], int(found[2]), int(found[3]))


def scratch_base() -> Path:
    """Where large temporary files go: TMPDIR, else /var/tmp (Podman's own default)."""
    return Path(os.environ.get("TMPDIR") or "/var/tmp")


def sweep_dirs(bases: Iterable[Path] | None = None) -> list[str]:
    """Remove the temporary directories (``dir_prefix``) this user's builds on this
    machine left in ``bases`` (default: the temporary directory and ``scratch_base``)
    when killed outright; return their paths. Never raises."""
    if bases is None:
        bases = {Path(tempfile.gettempdir()), scratch_base()}
    host, uid = host_digest(), os.getuid()
    removed = []
    for base in bases:
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            maker = _maker(_DIR.match(entry.name))
            if maker is None or maker.host != host or is_alive(maker):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            _log.info("removed a temporary directory left by a killed build", path=entry.path)
            removed.append(entry.path)
    return removed


def is_volume(name: str) -> bool:
    """Whether a name ``sweep`` returns is a build volume's (else a working container's)."""
    return name.startswith(f"buildpy-{VOLUME_KIND}-")


def maker_of(name: str) -> Maker | None:
    """Who made a working container, from its name; None for any other name."""
    return _maker(_NAME.match(name))


def orphans(
    names: Sequence[tuple[str, str]],
    host: str,
    alive: Callable[[Maker], bool],
) -> list[tuple[str, str]]:
    """The (id, name) pairs of working containers made on ``host`` by a process that is gone."""
    found = []
    for container, name in names:
        maker = maker_of(name)
        if maker is not None and maker.host == host and not alive(maker):
            found.append((container, name))
    return found


def is_alive(maker: Maker) -> bool:
    """Whether the process that made a container still runs (the same one, not a reused PID)."""
    return start_time(maker.pid) == maker.start


def sweep(engine: Engine) -> list[str]:
    """Remove the working containers, then the build volumes, left on this machine by
    builds that are gone.

    Returns their names. Never raises: a sweep that fails costs disk space, not a build.
    """
    return _sweep_containers(engine) + _sweep_volumes(engine)


def _sweep_volumes(engine: Engine) -> list[str]:
    try:
        found = engine.volumes(VOLUME_LABEL)
        left = orphans([(name, name) for name, _ in found], host_digest(), is_alive)
    except EngineError as exc:
        _log.warning("could not look for leftover build volumes", error=str(exc))
        return []
    removed = []
    for name, _ in left:
        try:
            gone = engine.remove_volume(name, force=False)  # a container still using it: later
        except EngineError as exc:
            _log.warning("could not remove a leftover build volume", volume=name, error=str(exc))
            continue
        if gone:
            _log.info("removed a build volume left by a killed build", volume=name)
            removed.append(name)
    return removed


def _sweep_containers(engine: Engine) -> list[str]:
    try:
        left = orphans(engine.containers("buildpy-"), host_digest(), is_alive)
    except EngineError as exc:
        _log.warning("could not look for leftover working containers", error=str(exc))
        return []
    removed = []
    for container, name in left:
        try:
            engine.remove(container)
        except EngineError as exc:
            _log.warning(
                "could not remove a leftover working container", container=name, error=str(exc)
            )
            continue
        _log.info("removed a working container left by a killed build", container=name)
        removed.append(name)
    return removed
