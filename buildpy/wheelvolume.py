"""One build's copy of its ``--wheelhouse``: a named volume, filled once, mounted read-only.

A bind mount of the host directory would need the service to see the client's
files (a remote Podman, ``CONTAINER_HOST=ssh://…``, cannot) and, on SELinux-enforcing
hosts, a label on them that the container may read (buildpy never relabels a
user's files). So the wheelhouse travels as the source does: its files go as one
tar stream through the API into a volume made for this build, via a helper
container that is created and never started (Podman's archive upload works on
created containers and writes through their volume mounts). Every working
container then mounts the volume read-only at ``WHEELHOUSE_TARGET``, the place
the installers' variables name (under /dev/shm, so not even the mount point
reaches an image).

The volume is made and filled when a container that runs first asks for it
(``mounts``): a rebuild that reuses the dependency layer and only places the
source runs nothing, and uploads nothing.

The volume and the helper are named like working containers
(``leftovers.container_name``: host, PID and start time of this process), and the
volume carries ``VOLUME_LABEL``, so when buildpy is killed outright the next build
(or ``buildpy cache prune``) removes them. Otherwise ``WheelhouseVolume``'s
``with`` block removes the volume after success, failure and Ctrl-C alike.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from buildpy import log
from buildpy.container import WorkingContainer, cleanup
from buildpy.engine import ContainerSpec, Engine, VolumeMount
from buildpy.errors import UsageError
from buildpy.indexes import WHEELHOUSE_TARGET
from buildpy.leftovers import VOLUME_KIND, VOLUME_LABEL, container_name

_log = log.get(__name__)

_BLOCK = 512
_CHUNK = 1 << 20


class WheelhouseVolume:
    """The volume holding one build's wheelhouse; gone when the ``with`` block ends."""

    def __init__(self, engine: Engine, directory: Path, image: str) -> None:
        self._engine = engine
        self._directory = directory
        self._image = image  # what the helper container is created from (never run)
        self._name: str | None = None

    def __enter__(self) -> WheelhouseVolume:
        return self

    def mounts(self) -> tuple[VolumeMount, ...]:
        """What a working container that runs assemble mounts: the volume, made and
        filled on the first call."""
        if self._name is None:
            name = container_name(VOLUME_KIND)
            self._engine.ensure_volume(name, {VOLUME_LABEL: "wheelhouse"})
            self._name = name
            try:
                self._fill(name)
            except BaseException:
                self.__exit__()
                raise
        return (VolumeMount(self._name, WHEELHOUSE_TARGET, read_only=True),)

    def _fill(self, volume: str) -> None:
        helper = ContainerSpec(
            image=self._image,
            command=("true",),
            user="0",
            volumes=(VolumeMount(volume, WHEELHOUSE_TARGET),),
            network="none",
            name=container_name("upload"),
        )
        stream = _Counted(wheelhouse_stream(self._directory))
        with WorkingContainer(self._engine, helper) as container:
            seconds = container.upload(WHEELHOUSE_TARGET, lambda uid, gid: stream)
        _log.info(
            "wheelhouse uploaded",
            volume=volume,
            files=stream.files,
            bytes=stream.bytes,
            seconds=round(seconds, 2),
        )

    def __exit__(self, *exc_info: object) -> None:
        if self._name is None:
            return
        name, self._name = self._name, None
        cleanup(
            partial(self._engine.remove_volume, name, True),
            "could not remove the build's wheelhouse volume",
            f"remove it with `podman volume rm -f {name}`",
            volume=name,
        )


class _Counted(Iterator[bytes]):
    """A tar stream that counts what it sends (for the log line)."""

    def __init__(self, records: Iterator[tuple[bytes, bool]]) -> None:
        self._records = records
        self.files = 0
        self.bytes = 0

    def __next__(self) -> bytes:
        chunk, is_file = next(self._records)
        self.files += is_file
        self.bytes += len(chunk)
        return chunk


def wheelhouse_stream(directory: Path) -> Iterator[tuple[bytes, bool]]:
    """The wheelhouse as an uncompressed tar, each chunk with whether it starts a file.

    Every regular file and directory under ``directory``, a symlink as the file it
    names (the volume cannot hold its target; a symlinked directory is not entered);
    readable by every user, since any uid may run assemble (files 0644, directories
    0755), owned by root. Other kinds (sockets, FIFOs) are left out.
    """
    for path, relpath in _files(directory):
        try:
            st = path.stat()
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        if stat.S_ISDIR(st.st_mode):
            yield _header(relpath, tarfile.DIRTYPE, 0o755, st), False
        elif stat.S_ISREG(st.st_mode):
            yield _header(relpath, tarfile.REGTYPE, 0o644, st), True
            yield from ((chunk, False) for chunk in _content(path, st.st_size))
    yield b"\0" * (2 * _BLOCK), False


def _files(directory: Path) -> Iterator[tuple[Path, str]]:
    """(path, archive name) of everything under ``directory``, parents first, sorted."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        raise _unreadable(directory, exc) from exc
    for entry in entries:
        path = Path(entry.path)
        yield path, entry.name
        if entry.is_dir(follow_symlinks=False):
            for inner, relpath in _files(path):
                yield inner, f"{entry.name}/{relpath}"


def _header(name: str, kind: bytes, mode: int, st: os.stat_result) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, int(st.st_mtime)
    info.size = st.st_size if kind == tarfile.REGTYPE else 0
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _content(path: Path, size: int) -> Iterator[bytes]:
    """The file's bytes in chunks, padded to a whole block; an error when it changes size."""
    left = size
    try:
        with open(path, "rb") as handle:
            while left:
                chunk = handle.read(min(left, _CHUNK))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if left:
        raise UsageError(
            f"--wheelhouse: {path} changed while it was being uploaded",
            "stop whatever writes to the wheelhouse and build again",
        )
    yield b"\0" * (-size % _BLOCK)


def _unreadable(path: Path, exc: OSError) -> UsageError:
    return UsageError(
        f"--wheelhouse: cannot read {path}: {exc.strerror or exc}",
        "make the wheelhouse's files readable, or copy the wheelhouse somewhere they are",
    )
