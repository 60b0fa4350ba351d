"""A hand-written Engine for unit tests of the build's pure logic."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Callable

from buildpy.engine import CommitSpec, ContainerSpec, ImageInfo
from buildpy.errors import BuilderImageError

BUILDER = ImageInfo(
    id="sha256:builder",
    ref="localhost/buildpy/python-311",
    user="1001",
    workdir="/opt/app-root/src",
    env={"PATH": "/usr/bin", "HOME": "/opt/app-root/src"},
    labels={"io.openshift.s2i.scripts-url": "image:///usr/libexec/s2i"},
)


@dataclass
class FakeEngine:
    """Records what the build asked for; scripted exit status and output."""

    images: dict[str, ImageInfo] = field(default_factory=lambda: {BUILDER.ref: BUILDER})
    status: int = 0
    output: list[bytes] = field(default_factory=lambda: [b"---> assembling\n"])
    files: dict[str, bytes] = field(default_factory=dict)
    on_logs: Callable[[], None] | None = None
    created: list[ContainerSpec] = field(default_factory=list)
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    commits: list[CommitSpec] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def image(self, ref: str) -> ImageInfo:
        if ref not in self.images:
            raise BuilderImageError(f"builder image {ref} is not in local storage")
        return self.images[ref]

    def create(self, spec: ContainerSpec) -> str:
        self.created.append(spec)
        return f"ctr{len(self.created)}"

    def upload(self, container: str, path: str, archive: Iterable[bytes]) -> None:
        self.uploads.append((path, b"".join(archive)))

    def read_file(self, container: str, path: str) -> bytes | None:
        return self.files.get(path)

    def start(self, container: str) -> None:
        self.started.append(container)

    def logs(self, container: str) -> Iterator[bytes]:
        if self.on_logs is not None:
            self.on_logs()
        yield from self.output

    def wait(self, container: str) -> int:
        return self.status

    def commit(self, container: str, spec: CommitSpec) -> str:
        self.commits.append(spec)
        return "sha256:result"

    def remove(self, container: str) -> None:
        self.removed.append(container)

    def close(self) -> None:
        pass

    def uploaded_members(self) -> dict[str, tarfile.TarInfo]:
        """Name -> TarInfo of everything in the (last) uploaded archive."""
        _, data = self.uploads[-1]
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            return {m.name: m for m in archive.getmembers()}

    def uploaded_file(self, name: str) -> bytes:
        _, data = self.uploads[-1]
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            handle = archive.extractfile(name)
            assert handle is not None
            return handle.read()
