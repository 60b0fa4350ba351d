"""A hand-written Engine for unit tests of the build's pure logic (and ``tree``, a source).

mypy checks it against the ``ImageArchives`` protocol (an ``Engine`` that also saves and
loads image archives; ``_check`` below), and
tests/integration/test_engine_contract.py runs the same assertions against it
and against real Podman, so the fake cannot drift from what Podman does.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Callable, NoReturn

from buildpy.engine import (
    CommitSpec,
    ContainerSpec,
    ImageArchives,
    ImageInfo,
    ImageSummary,
    Progress,
)
from buildpy.errors import BuildpyError, EngineError, PublishFailed, PullFailed
from buildpy.registry import registry_hint, registry_host

ENGINE_DEFAULTS = {"TERM": "xterm", "container": "podman"}  # what Podman adds to every container
BUILDER = ImageInfo(
    id="sha256:builder",
    ref="localhost/buildpy/python-311",
    user="1001",
    workdir="/opt/app-root/src",
    env={"PATH": "/usr/bin", "HOME": "/opt/app-root/src"},
    labels={"io.openshift.s2i.scripts-url": "image:///usr/libexec/s2i"},
    layers=("sha256:base0", "sha256:base1"),
)


@dataclass
class FakeEngine:
    """Records what the build asked for; scripted exit status and output."""

    stored: dict[str, ImageInfo] = field(default_factory=lambda: {BUILDER.ref: BUILDER})
    status: int = 0
    output: list[bytes] = field(default_factory=lambda: [b"---> assembling\n"])
    files: dict[str, bytes] = field(default_factory=dict)
    on_run: Callable[[], None] | None = None
    created: list[ContainerSpec] = field(default_factory=list)
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    commits: list[CommitSpec] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    volumes_made: dict[str, dict[str, str]] = field(default_factory=dict)
    # what each volume holds: volume -> path inside it -> content, shared by every container
    # that mounts it (as Podman's are)
    volume_files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    removed_images: list[str] = field(default_factory=list)
    parents: dict[str, str] = field(default_factory=dict)  # image ID: its ParentId
    in_use: set[str] = field(default_factory=set)
    reads: list[tuple[str, str]] = field(default_factory=list)
    tagged: list[str] = field(default_factory=list)
    placed: dict[tuple[str, str], bytes] = field(default_factory=dict)  # uploaded files
    secrets: dict[str, bytes] = field(default_factory=dict)
    secrets_made: list[str] = field(default_factory=list)
    # registries: hosts that answer (over plain HTTP, as a loopback test registry does)
    # and the images they hold, by full name with tag
    registry_hosts: set[str] = field(default_factory=set)
    registry: dict[str, ImageInfo] = field(default_factory=dict)
    pulled: list[str] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)
    saved: list[tuple[str, str]] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)  # IDs of images loaded from archives
    expected: list[str] = field(default_factory=list)  # expect_image's refs

    def expect_image(self, ref: str) -> None:
        """PodmanEngine's: inspect ahead of ``find_image`` (here: nothing to do)."""
        self.expected.append(ref)

    def find_image(self, ref: str) -> ImageInfo | None:
        found = self.stored.get(ref) or self.stored.get(f"{ref}:latest")
        found = found or next((info for info in self.stored.values() if info.id == ref), None)
        if found is None:
            return None
        names = tuple(
            _tagged(name)
            for name, info in self.stored.items()
            if info.id == found.id and name != info.id  # an unnamed image is kept by its ID
        )
        return replace(found, ref=ref, names=names)

    def images(self, repository: str) -> list[ImageSummary]:
        """One entry per image, with all its names in that repository (as Podman lists)."""
        names: dict[str, list[str]] = {}
        for ref, info in self.stored.items():
            if ref.rsplit(":", 1)[0] == repository:
                names.setdefault(info.id, []).append(ref)
        infos = {info.id: info for info in self.stored.values()}
        return [
            ImageSummary(
                image,
                tuple(refs),
                infos[image].size or 1000,
                "now",
                dict(infos[image].labels),
                parent=self.parents.get(image, ""),
            )
            for image, refs in names.items()
        ]

    def tag(self, image: str, ref: str) -> None:
        self.tagged.append(ref)
        found = next(info for info in self.stored.values() if info.id == image)
        self.stored[ref] = found
        self.stored.pop(found.id, None)  # named now

    def remove_image(self, ref: str, force: bool = True) -> bool:
        """Podman's rules: by ID, an image with two names needs force (status 500); by
        name, only that name goes while others remain; a used image's last name stays
        without force (status 409, False)."""
        image = self.stored[ref].id if ref in self.stored else ref
        names = [name for name, info in self.stored.items() if info.id == image]
        if not force and ref == image and len(names) > 1:
            raise EngineError(f"unable to delete image {ref} by ID with more than one tag")
        if not force and ref in self.stored and len(names) > 1:
            del self.stored[ref]
            self.removed_images.append(ref)
            return True
        if not force and (image in self.in_use or ref in self.in_use):
            return False
        self.removed_images.append(ref)
        for name in names:
            del self.stored[name]
        return True

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        created = name not in self.volumes_made
        self.volumes_made.setdefault(name, dict(labels))
        return created

    def volumes(self, label: str) -> list[tuple[str, str]]:
        return [(n, f"/vol/{n}") for n, labels in self.volumes_made.items() if label in labels]

    def remove_volume(self, name: str, force: bool = True) -> bool:
        """Podman's rules: without force, a volume a container mounts (even one never
        started) stays (status 409, False)."""
        mounted = any(v.name == name for _, spec in self._live() for v in spec.volumes)
        if (name in self.in_use or mounted) and not force:
            return False
        self.volumes_made.pop(name, None)
        self.volume_files.pop(name, None)
        return True

    def _live(self) -> list[tuple[str, ContainerSpec]]:
        gone = set(self.removed)
        made = [(f"ctr{i}", spec) for i, spec in enumerate(self.created, 1)]
        return [(cid, spec) for cid, spec in made if cid not in gone]

    def _in_volume(self, container: str, path: str) -> tuple[str, str] | None:
        """(volume, path inside it) when ``path`` lies in a volume the container mounts."""
        if not container.startswith("ctr"):
            return None
        spec = self.created[int(container[3:]) - 1]
        for volume in spec.volumes:
            target = volume.target.rstrip("/")
            if path.startswith(f"{target}/"):
                return volume.name, path[len(target) + 1 :]
        return None

    def containers(self, prefix: str) -> list[tuple[str, str]]:
        named = [(cid, spec.name or "") for cid, spec in self._live()]
        return [(cid, name) for cid, name in named if name.startswith(prefix)]

    def create_secret(self, name: str, data: bytes) -> None:
        """Podman's rules: a name is used once, and a secret holds 1 to 511999 bytes."""
        if name in self.secrets or not 0 < len(data) < 512000:
            raise EngineError(f"cannot create secret {name}")
        self.secrets[name] = data
        self.secrets_made.append(name)

    def remove_secret(self, name: str) -> bool:
        self.secrets.pop(name, None)
        return True

    def create(self, spec: ContainerSpec) -> str:
        missing = [m.name for m in spec.secrets if m.name not in self.secrets]
        if missing:
            raise EngineError(f"no secret with name {missing[0]}")
        for volume in spec.volumes:  # Podman makes a named volume a container mounts
            self.volumes_made.setdefault(volume.name, {})
        self.created.append(spec)
        return f"ctr{len(self.created)}"

    def upload(self, container: str, path: str, archive: Iterable[bytes]) -> None:
        data = b"".join(archive)
        self.uploads.append((path, data))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    continue
                full = f"{path.rstrip('/')}/{member.name}"
                inside = self._in_volume(container, full)
                if inside is not None:
                    self.volume_files.setdefault(inside[0], {})[inside[1]] = handle.read()
                else:
                    self.placed[(container, full)] = handle.read()

    def _file(self, container: str, path: str) -> bytes | None:
        inside = self._in_volume(container, path)
        if inside is not None:
            return self.volume_files.get(inside[0], {}).get(inside[1])
        return self.placed.get((container, path), self.files.get(path))

    def read_file(self, container: str, path: str) -> bytes | None:
        self.reads.append((container, path))
        return self._file(container, path)

    def copy_file(self, container: str, path: str, dest: BinaryIO) -> bool:
        found = self._file(container, path)
        if found is None:
            return False
        dest.write(found)
        return True

    def archive(self, container: str, path: str, dest: BinaryIO) -> bool:
        """A tar of the files placed (or given in ``files``) below ``path``."""
        below = {
            name[len(path) + 1 :]: data
            for name, data in {
                **self.files,
                **{p: d for (c, p), d in self.placed.items() if c == container},
            }.items()
            if name.startswith(path + "/")
        }
        if not below:
            return False
        top = path.rstrip("/").rsplit("/", 1)[-1]
        with tarfile.open(fileobj=dest, mode="w|") as archive:
            archive.addfile(_dir_info(top))
            for name, data in sorted(below.items()):
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return True

    def run(self, container: str, output: Callable[[bytes], object]) -> int:
        self.started.append(container)
        if self.on_run is not None:
            self.on_run()
        for chunk in self.output:
            output(chunk)
        return self.status

    def commit(self, container: str, spec: CommitSpec) -> str:
        """Podman's rules: the image keeps its parent's labels and variables (a commit
        cannot remove one), with the container's over them; the container has the
        engine's own variables (``ENGINE_DEFAULTS``) unless its spec unsets them."""
        self.commits.append(spec)
        image_id = f"sha256:result{len(self.commits)}"
        if spec.repository:
            created = self.created[int(container[3:]) - 1]
            parent = self.find_image(created.image)
            labels = {**(parent.labels if parent else {}), **created.labels}
            for change in spec.changes:
                if change.startswith("LABEL "):
                    key, _, value = change[len("LABEL ") :].partition("=")
                    labels[key] = value
            defaults = {k: v for k, v in ENGINE_DEFAULTS.items() if k not in created.unset_env}
            env = {**defaults, **(parent.env if parent else {}), **created.env}
            self.stored[f"{spec.repository}:{spec.tag}"] = ImageInfo(
                id=image_id,
                ref=spec.repository,
                env=env,
                labels=labels,
                layers=(*(parent.layers if parent else ()), f"sha256:layer-{image_id[7:]}"),
            )
        return image_id

    def remove(self, container: str) -> None:
        self.removed.append(container)

    def pull(self, ref: str, tls_verify: bool | None, progress: Progress) -> str:
        self._ask_registry("pull", ref, tls_verify, PullFailed)
        found = self.registry.get(_tagged(ref))
        if found is None:
            _refuse("pull", ref, "manifest unknown: manifest unknown", PullFailed)
        progress(f"Trying to pull {_tagged(ref)}...")
        self.pulled.append(ref)
        self.stored[_tagged(ref)] = found
        return found.id

    def push(self, ref: str, tls_verify: bool | None, progress: Progress) -> None:
        found = self.find_image(ref)
        if found is None:
            _refuse("push", ref, f"{ref}: image not known", PublishFailed)
        self._ask_registry("push", ref, tls_verify, PublishFailed)
        progress("Writing manifest to image destination")
        self.pushed.append(ref)
        self.registry[_tagged(ref)] = found

    def save_image(self, ref: str, archive_format: str, dest: BinaryIO) -> None:
        """A tar shaped like Podman's archives: only the index that names the image."""
        found = self.find_image(ref)
        if found is None:
            raise EngineError(f"Podman could not save {ref} as {archive_format}: image not known")
        named = [] if ref == found.id else [_tagged(ref)]
        files: dict[str, object]
        if archive_format == "oci-archive":
            annotations = {"org.opencontainers.image.ref.name": named[0]} if named else {}
            files = {"oci-layout": {}, "index.json": {"manifests": [{"annotations": annotations}]}}
        elif archive_format == "docker-archive":
            files = {"manifest.json": [{"Config": found.id, "RepoTags": named}]}
        else:
            raise EngineError(f'Podman could not save {ref}: unknown format "{archive_format}"')
        self.saved.append((ref, archive_format))
        with tarfile.open(fileobj=dest, mode="w|") as archive:
            for name, content in files.items():
                data = json.dumps(content).encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))

    def _ask_registry(
        self, action: str, ref: str, tls_verify: bool | None, failure: type[BuildpyError]
    ) -> None:
        host = registry_host(ref) or "docker.io"
        if host not in self.registry_hosts:
            _refuse(action, ref, f"dial tcp {host}: connect: connection refused", failure)
        if tls_verify is not False:
            _refuse(action, ref, "http: server gave HTTP response to HTTPS client", failure)

    @contextmanager
    def image_archive(self, ref: str) -> Iterator[BinaryIO]:
        """A docker-archive as Podman writes one: layer files named by diff ID, holding
        (here) ``layer:DIFFID``; the config holds what ``load_image`` needs to restore."""
        found = self.find_image(ref)
        if found is None:
            raise EngineError(f"Podman could not save image {ref}: image not known")
        config = {k: v for k, v in asdict(found).items() if k not in ("ref", "names")}
        layers = {f"{diff[7:]}.tar": f"layer:{diff}".encode() for diff in found.layers}
        item = {
            "Config": f"{found.id[7:]}.json",
            "RepoTags": [] if ref == found.id else [_tagged(ref)],
            "Layers": list(layers),
        }
        files: dict[str, bytes] = dict(layers)
        files[f"{found.id[7:]}.json"] = json.dumps(config).encode()
        files["manifest.json"] = json.dumps([item]).encode()
        yield io.BytesIO(tar_of(files))

    def load_image(self, archive: BinaryIO) -> tuple[str, ...]:
        """Podman's checks: every layer file holds its diff ID's content, or is empty and
        local storage has that layer; nothing is stored when one fails."""
        try:
            with tarfile.open(fileobj=archive) as tar:
                files = {m.name: _read(tar, m) for m in tar.getmembers() if m.isfile()}
            (item,) = json.loads(files["manifest.json"])
            config: dict[str, Any] = json.loads(files[item["Config"]])
        except (tarfile.TarError, KeyError, ValueError) as exc:
            raise EngineError(f"Podman could not load an image archive: {exc}") from exc
        known = {layer for info in self.stored.values() for layer in info.layers}
        for name in item["Layers"]:
            diff = f"sha256:{name[: -len('.tar')]}"
            stored = files[name] == b"" and diff in known
            if files[name] != f"layer:{diff}".encode() and not stored:
                raise EngineError(f"Podman could not load an image archive: {diff} did not match")
        info = ImageInfo(ref="", **{**config, **{k: tuple(config[k]) for k in _TUPLES}})
        names = tuple(item["RepoTags"]) or (info.id,)
        for name in names:
            self.stored[name] = info
        self.loaded.append(info.id)
        return names

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


def _refuse(action: str, ref: str, message: str, failure: type[BuildpyError]) -> NoReturn:
    """Fail as PodmanEngine does: the registry's words, and the hint they call for."""
    raise failure(f"could not {action} {ref}: {message}", registry_hint(message, ref))


def _tagged(name: str) -> str:
    """A name as Podman lists it: with its tag, ``latest`` when none was given."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


_TUPLES = ("entrypoint", "cmd", "layers")


def tar_of(files: Mapping[str, bytes]) -> bytes:
    """A tar of in-memory files (for uploads and archives in tests)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    return handle.read() if handle is not None else b""


def _check(engine: FakeEngine) -> ImageArchives:
    return engine  # mypy: the fake implements every method of the protocol, typed alike


def tree(root: Path, files: dict[str, str]) -> Path:
    """Write a source tree: relative path to text."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o775
    return info
