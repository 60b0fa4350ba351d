"""A second, empty container storage with its own Podman service: a fresh CI runner.

``empty_storage`` starts ``podman --root R --runroot RR system service`` on a socket in
a temporary directory, so nothing of the machine's own storage is visible to it, and
loads only the builder image into it, from an archive kept under
``~/.cache/buildpy/builders/`` by the builder's ID (made once with ``podman save``,
reused by later runs and CI). Root Podman instances share the network's address
database (netavark keeps it outside the run root), so containers of both storages
can publish ports side by side. At the end its containers are removed, the service
stopped, anything still mounted under it unmounted, and the directory deleted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from buildpy.service import ping_unix

ARCHIVES = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildpy" / "builders"


# The podman CLI on this host's storage even when CONTAINER_HOST is set (a developer's
# own service): what needs local storage (--root, mounts, serving) cannot be remote.
LOCAL_PODMAN = ("env", "-u", "CONTAINER_HOST", "podman")


@dataclass(frozen=True)
class Storage:
    root: Path
    runroot: Path
    url: str  # CONTAINER_HOST for buildpy

    @property
    def podman(self) -> list[str]:
        """The podman command for this storage, run without CONTAINER_HOST wherever it is
        used (set, it makes the CLI a remote client, which takes no --root)."""
        return [*LOCAL_PODMAN, "--root", str(self.root), "--runroot", str(self.runroot)]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.podman, *args], capture_output=True, text=True, check=check)

    def names(self) -> list[str]:
        listed = self.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        return sorted(listed.split())


def builder_archive(ref: str) -> Path:
    """``podman save`` of a builder in the machine's storage, kept by its ID."""
    found = subprocess.run(
        [*LOCAL_PODMAN, "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stem = ref.rsplit("/", 1)[-1].replace(":", "_")
    path = ARCHIVES / f"{stem}@{found[:12]}.tar"
    if not path.is_file():
        ARCHIVES.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        subprocess.run([*LOCAL_PODMAN, "save", "-q", "-o", str(partial), ref], check=True)
        partial.rename(path)
        for older in ARCHIVES.glob(f"{stem}@*.tar"):  # one archive per builder name
            if older != path:
                older.unlink(missing_ok=True)
    return path


@contextmanager
def empty_storage(workdir: Path, builder: str) -> Iterator[Storage]:
    """Storage holding ``builder`` only, served on its own socket (see the module doc)."""
    storage = Storage(workdir / "root", workdir / "run", f"unix://{workdir}/podman.sock")
    archive = builder_archive(builder)
    command = [*storage.podman, "system", "service", "--time=0", storage.url]
    try:
        with (
            open(workdir / "service.log", "wb") as log,
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log) as proc,
        ):  # leaving the block waits for the service to end
            try:
                _await(proc, workdir / "podman.sock")
                storage.run("load", "-q", "-i", str(archive))
                yield storage
            finally:
                storage.run("rm", "-af", "-t", "0", check=False)
                proc.terminate()
    finally:
        _unmount_under(workdir)
        if os.getuid() != 0:  # rootless: its layers belong to the user's subordinate ids
            subprocess.run([*LOCAL_PODMAN, "unshare", "rm", "-rf", str(workdir)], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def _await(proc: subprocess.Popen[bytes], sock: Path) -> None:
    deadline = time.monotonic() + 30
    while not (sock.exists() and ping_unix(str(sock))):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the second Podman service did not start (status {proc.poll()})")
        time.sleep(0.05)


def _unmount_under(path: Path) -> None:
    """Storage drivers leave a bind mount of their own directory behind."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False)
