"""The small interface a build needs from a container engine.

``build`` talks only to an ``Engine``; ``podman`` is the one implementation
for real use and tests of pure logic use a hand-written fake. Values crossing
this boundary are plain frozen dataclasses, never podman-py objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class ImageInfo:
    """What a build needs to know about an image."""

    id: str
    ref: str
    user: str = ""
    workdir: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()  # every name the image has in local storage
    layers: tuple[str, ...] = ()  # the diff IDs of its layers, base first (sha256:...)
    size: int = 0  # bytes, as Podman reports it (0: not known)


@dataclass(frozen=True)
class Mount:
    """A host file or directory bind-mounted into the working container only."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class SecretMount:
    """A Podman secret (see ``Engine.create_secret``) mounted as the file ``target``.

    The file is Podman's copy in the container's own userdata directory in Podman's
    storage, never a host path; ``uid``, ``gid`` and ``mode`` are the file's inside the
    container.
    """

    name: str
    target: str
    uid: int = 0
    gid: int = 0
    mode: int = 0o400


@dataclass(frozen=True)
class VolumeMount:
    """A named volume mounted into the working container only (read-only when asked)."""

    name: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ImageSummary:
    """One line of an image listing."""

    id: str
    tags: tuple[str, ...]
    size: int
    created: str
    labels: Mapping[str, str] = field(default_factory=dict)
    parent: str = ""  # the image it was committed from (Podman's ParentId), when known


# What a container engine adds to every container's environment (Podman: TERM=xterm,
# container=podman), which a commit would keep in the image.
ENGINE_VARIABLES = ("TERM", "container")


@dataclass(frozen=True)
class ContainerSpec:
    """A working container. ``env`` and ``labels`` are committed into the image;
    ``unset_env`` names variables the container must not have from its image or from
    the engine's defaults (``ENGINE_VARIABLES``), so the commit cannot keep them.
    Working containers are thrown away once committed, so the engine may skip syncing
    their files to disk (Podman: ``volatile``)."""

    image: str
    command: tuple[str, ...]
    user: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    secrets: tuple[SecretMount, ...] = ()
    network: str | None = None
    name: str | None = None
    unset_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommitSpec:
    """How a container becomes an image: Dockerfile-style changes and a name."""

    changes: tuple[str, ...] = ()
    repository: str | None = None
    tag: str | None = None


Progress = Callable[[str], object]  # one line of a pull's or push's progress


class Engine(Protocol):
    """Operations on images and containers. Errors are ``buildpy.errors`` types."""

    def find_image(self, ref: str) -> ImageInfo | None:
        """Inspect a local image; None when there is none by that name (never pulls)."""
        ...

    def images(self, repository: str) -> list[ImageSummary]:
        """Local images named ``repository:TAG``, whatever the tag."""
        ...

    def tag(self, image: str, ref: str) -> None:
        """Give an image another name (moving the name from any image that had it)."""
        ...

    def remove_image(self, ref: str, force: bool = True) -> bool:
        """Remove an image; True when removed or already gone, False when in use (no force)."""
        ...

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        """Create the named volume unless it exists; True when it was created."""
        ...

    def volumes(self, label: str) -> list[tuple[str, str]]:
        """(name, mount point) of the volumes carrying ``label``."""
        ...

    def remove_volume(self, name: str, force: bool = True) -> bool:
        """Remove a volume; True when removed or already gone, False when in use (no force)."""
        ...

    def containers(self, prefix: str) -> list[tuple[str, str]]:
        """(ID, name) of every container, in any state, whose name starts with ``prefix``."""
        ...

    def create_secret(self, name: str, data: bytes) -> None:
        """Store ``data`` (1 to 511999 bytes) as the secret ``name``; an error when the
        name is taken. Containers created afterwards may mount it (``SecretMount``)."""
        ...

    def remove_secret(self, name: str) -> bool:
        """Remove a secret (containers that mount it keep their copy); True when removed
        or already gone."""
        ...

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; return its ID."""
        ...

    def upload(self, container: str, path: str, archive: Iterable[bytes]) -> None:
        """Stream a tar archive into ``path`` inside the container. Several may stream
        into one container at once (from threads of their own), with distinct members."""
        ...

    def read_file(self, container: str, path: str) -> bytes | None:
        """A small file's content from the container, or None when missing."""
        ...

    def copy_file(self, container: str, path: str, dest: BinaryIO) -> bool:
        """Stream one file out of the container into ``dest``; False when it is missing."""
        ...

    def archive(self, container: str, path: str, dest: BinaryIO) -> bool:
        """Stream ``path`` (a directory and all it holds) out of the container into
        ``dest`` as a tar archive whose names start with the path's last component;
        False when it is missing."""
        ...

    def run(self, container: str, output: Callable[[bytes], object]) -> int:
        """Start the container, hand its output (stdout and stderr) to ``output`` as it
        comes, and return its exit status once it has exited."""
        ...

    def commit(self, container: str, spec: CommitSpec) -> str:
        """Commit the container; return the new image ID."""
        ...

    def remove(self, container: str) -> None:
        """Remove the container, running or not; no error when it is gone."""
        ...

    def pull(self, ref: str, tls_verify: bool | None, progress: Progress) -> str:
        """Pull ``ref`` from its registry (always asking it); return the image ID.
        ``tls_verify`` None leaves TLS to registries.conf. Raises ``PullFailed``."""
        ...

    def push(self, ref: str, tls_verify: bool | None, progress: Progress) -> None:
        """Push the local image ``ref`` to the registry its name says. Raises
        ``PublishFailed`` (the local image stays)."""
        ...

    def save_image(self, ref: str, archive_format: str, dest: BinaryIO) -> None:
        """Stream the image into ``dest`` as an ``oci-archive`` or ``docker-archive``
        (which records ``ref`` as its name, when ``ref`` is a name)."""
        ...

    def close(self) -> None: ...


class ImageArchives(Engine, Protocol):
    """An engine that also moves images through archive files (``buildpy cache export``
    and ``import``); builds never need these."""

    def image_archive(self, ref: str) -> AbstractContextManager[BinaryIO]:
        """A docker-archive of one image (``podman save``), read as a stream (where
        ``save_image`` writes one to a file). Layer files
        are named ``HEX.tar`` after their diff IDs; the archive names the image by ``ref``
        unless ``ref`` is an ID."""
        ...

    def load_image(self, archive: BinaryIO) -> tuple[str, ...]:
        """Load a docker-archive (``podman load``); return the names Podman reports. A
        layer whose file is empty is taken from local storage, and the load fails when
        local storage lacks it."""
        ...
