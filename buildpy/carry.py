"""Carry buildpy's cache to another machine through a directory (``buildpy cache export``
and ``import``), for CI runners whose container storage starts empty.

**Export** keeps what one application's next build can use, and nothing else: the
dependency image for the source's current inputs (and the image its growth name
points to, when that is another one), and the wheels of the download cache that
those images have installed. Each image is a docker-archive whose builder layers
are *empty files*: the builder image is not carried (on a runner it comes from a
registry or a cache of its own), and Podman takes layers it already has from
local storage, so an archive holds only what the dependency phase added (about
8 MB for Flask instead of the 255 MB of the whole image). The manifest names the
builder image's ID; see ``cachedir`` for the directory and its atomic replacement.

**Import** checks everything before it changes anything: the manifest, each file's
size and SHA-256, what each archive holds (its image ID; no names outside the
cache's repository), and that local storage has the very builder image the cache
was made against. Then it loads the archives, names the images, and merges the
wheels into the download cache volume; when a step fails, what this import
loaded (and the volume, if it made it) is removed again.

Wheels move through a short-lived container with the volume mounted, as Podman
4.3's API cannot export or import a volume: on export a Python script in the
dependency image picks the cached wheels whose name and version are installed
there; on import a shell script copies each wheel the volume lacks into it under a
temporary name and renames it, so a build never sees half a wheel.

A Django application's kept collectstatic result for the exported layer (``staticfiles``:
the static files and the record of what collectstatic read) travels too, so the
runner's first build can place them instead of running collectstatic. Import puts it
into the runner's store last, after the images: a failure there costs one
collectstatic run, never the import.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from buildpy import cache, cachedir, layer, log, session, staticfiles
from buildpy.cachedir import CachedImage, Downloads, Manifest, StaticFiles
from buildpy.container import WorkingContainer
from buildpy.engine import ContainerSpec, ImageArchives, ImageInfo, VolumeMount
from buildpy.errors import BuilderImageError, CacheDirError, EngineError
from buildpy.leftovers import container_name
from buildpy.plan import BuildPlan

_log = log.get(__name__)

DOWNLOADS_FILE = "downloads.tar"
STATIC_FILE = "static-files.tar"
SELECTED = "/tmp/buildpy-wheels.tar"  # written by SELECT_WHEELS in the helper container
COUNT_MARKER = "BUILDPY_WHEELS"

# python3 -c SELECT_WHEELS WHEELS SELECTED: the cached wheels of what this image has installed.
SELECT_WHEELS = """
import importlib.metadata as metadata, os, re, sys, tarfile

def norm(text):
    return re.sub(r"[-_.]+", "_", text).lower()

have = {(norm(d.metadata["Name"] or ""), norm(d.version)) for d in metadata.distributions()}
source, out = sys.argv[1:3]
names = sorted(os.listdir(source)) if os.path.isdir(source) else []
chosen = [n for n in names if n.endswith(".whl") and tuple(map(norm, n.split("-")[:2])) in have]
with tarfile.open(out, "w") as tar:
    for name in chosen:
        tar.add(os.path.join(source, name), arcname="wheels/" + name)
print("BUILDPY_WHEELS=%d" % len(chosen))
"""
# sh -c PLACE_WHEELS NAME FROM TO: each wheel TO lacks, copied in under a temporary name
# first (assemble removes leftover .incoming.* directories), then renamed into place;
# group-writable, as assemble leaves the cache (umask 002).
PLACE_WHEELS = """
set -eu
umask 002
from=$1 to=$2 count=0
mkdir -p "$to"
stage=$(mktemp -d "$to/.incoming.import.XXXXXX")
for wheel in "$from"/*.whl; do
    [ -f "$wheel" ] || continue
    name=${wheel##*/}
    if [ ! -e "$to/$name" ]; then
        cp "$wheel" "$stage/$name"
        mv "$stage/$name" "$to/$name"
        count=$((count + 1))
    fi
done
rmdir "$stage"
echo "BUILDPY_WHEELS=$count"
"""


@dataclass(frozen=True)
class Exported:
    manifest: Manifest
    kept: tuple[str, ...]  # IDs of images whose archives were taken over from the last export
    reason: str | None  # why no dependency image was exported


@dataclass(frozen=True)
class Imported:
    manifest: Manifest | None  # None: there was nothing to import
    loaded: tuple[CachedImage, ...] = ()
    present: tuple[CachedImage, ...] = ()  # already in local storage: only named
    wheels: int = 0  # added to the download cache
    static: StaticFiles | None = None  # the kept collectstatic result put into the store


# ----------------------------------------------------------------------------- export


def export(engine: ImageArchives, plan: BuildPlan, builder: ImageInfo, directory: Path) -> Exported:
    """Replace ``directory`` with the cache this plan's next build can use."""
    wanted, reason = _dependency_images(engine, plan, builder)
    earlier = cachedir.previous(directory)
    if earlier is not None and earlier.builder_id != builder.id:
        earlier = None
    with cachedir.staging(directory) as work:
        images, kept = [], []
        for info, names in wanted:
            old = earlier.image(info.id) if earlier else None
            if old is not None and cachedir.take(directory, old.file, work / old.file.name):
                images.append(CachedImage(old.file, info.id, names, old.key))
                kept.append(info.id)
            else:
                images.append(_save(engine, info, names, builder, work))
        index = session.download_index(plan, builder.env)
        downloads = _save_downloads(engine, builder, wanted[0][0], work, index) if wanted else None
        static = _save_static(plan, builder, wanted[0][0], work) if wanted else None
        manifest = Manifest(builder.ref, builder.id, tuple(images), downloads, static=static)
        cachedir.write(work, manifest)
    return Exported(manifest, tuple(kept), reason)


def _dependency_images(
    engine: ImageArchives, plan: BuildPlan, builder: ImageInfo
) -> tuple[list[tuple[ImageInfo, tuple[str, ...]]], str | None]:
    """The dependency image for the plan's inputs, with the names it is to get, and the
    one its growth name points to when that is another image; or why there is none."""
    reason = layer.split_reason(plan, builder)
    if reason is not None:
        return [], f"this source builds in one phase: {reason}"
    tag, growth = layer.names(plan, builder)
    current = engine.find_image(tag)
    if current is None:
        return [], f"local storage has no {tag} for this source: build it first"
    if growth in current.names:
        return [(current, (tag, growth))], None
    grows = engine.find_image(growth)
    others = [(grows, (growth,))] if grows is not None and grows.id != current.id else []
    return [(current, (tag,)), *others], None


def _save(
    engine: ImageArchives,
    info: ImageInfo,
    names: tuple[str, ...],
    builder: ImageInfo,
    work: Path,
) -> CachedImage:
    path = work / f"dependencies-{info.id.split(':')[-1][:16]}.tar"
    try:
        with engine.image_archive(info.id) as stream, open(path, "wb") as out:
            thin(stream, out, builder.layers)
    except tarfile.TarError as exc:  # the stream broke off, or is not a tar
        raise EngineError(f"the archive Podman sent for image {_short(info.id)}: {exc}") from exc
    return CachedImage(
        cachedir.describe(path), info.id, names, info.labels.get(cache.KEY_LABEL, "")
    )


def thin(archive: BinaryIO, out: BinaryIO, base: Sequence[str]) -> None:
    """Copy a docker-archive stream, leaving the files of the ``base`` layers (diff IDs)
    empty: a load takes those layers from local storage."""
    emptied = {f"{diff.split(':')[-1]}.tar" for diff in base}
    with (
        tarfile.open(fileobj=archive, mode="r|") as source,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as copy,
    ):
        for member in source:
            if member.isfile() and member.name in emptied:
                member.size = 0
                copy.addfile(member)
            else:
                copy.addfile(member, source.extractfile(member) if member.isfile() else None)


def _helper_in(
    engine: ImageArchives, image: str, builder: ImageInfo, command: tuple[str, ...]
) -> WorkingContainer:
    """A short-lived container with the download cache mounted, as the builder's user."""
    spec = ContainerSpec(
        image=image,
        command=command,
        user=builder.user,
        volumes=(VolumeMount(cache.DOWNLOADS_VOLUME, cache.DOWNLOADS_TARGET),),
        network="none",
        name=container_name("cache"),
    )
    return WorkingContainer(engine, spec)


def _save_downloads(
    engine: ImageArchives, builder: ImageInfo, image: ImageInfo, work: Path, index: str
) -> Downloads | None:
    """The cached wheels of what ``image`` has installed, from the download cache of the
    plan's package index ``index``; None without a download cache (mounting a missing
    volume would make one, unlabelled)."""
    if cache.DOWNLOADS_VOLUME not in {name for name, _ in engine.volumes(cache.CACHE_LABEL)}:
        return None
    path = work / DOWNLOADS_FILE
    command = ("python3", "-c", SELECT_WHEELS, _wheels(index), SELECTED)
    with _helper_in(engine, image.id, builder, command) as container:
        count = _count(container, "collect the download cache's wheels")
        with open(path, "wb") as out:
            if not engine.copy_file(container.id, SELECTED, out):
                raise EngineError(f"the wheels collected in the container ({SELECTED}) are missing")
    return Downloads(cachedir.describe(path), count, index)


def _save_static(
    plan: BuildPlan, builder: ImageInfo, dependencies: ImageInfo, work: Path
) -> StaticFiles | None:
    """The collectstatic result kept for this layer and the plan's variables, if any."""
    name = staticfiles.name_for(plan, dependencies.id, builder.env)
    if name is None or not staticfiles.pack(name, work / STATIC_FILE):
        return None
    return StaticFiles(cachedir.describe(work / STATIC_FILE), name)


def _wheels(index: str) -> str:
    """The wheel directory of the download cache of the package index ``index``."""
    return cache.download_variables(index)["BUILDPY_WHEEL_CACHE"]


def _count(container: WorkingContainer, action: str) -> int:
    """Run a helper; the count it printed, or EngineError with its last output."""
    status, output = container.run_quietly()
    lines = output.decode(errors="replace").splitlines()
    said = [line.split("=", 1)[1] for line in lines if line.startswith(f"{COUNT_MARKER}=")]
    if status != 0 or not said or not said[-1].strip().isdigit():
        tail = " | ".join(lines[-5:]) or "no output"
        raise EngineError(f"could not {action} (status {status}): {tail}")
    return int(said[-1])


# ----------------------------------------------------------------------------- import


def import_cache(engine: ImageArchives, directory: Path) -> Imported:
    """Verify ``directory`` whole, then load it; on failure, undo what was loaded."""
    manifest = cachedir.read(directory)
    if manifest is None:
        return Imported(None)
    cachedir.verify(directory, manifest)
    for image in manifest.images:
        check_archive(directory / image.file.name, image)
    if manifest.downloads is not None:
        check_downloads(directory / manifest.downloads.file.name)
    static = None if manifest.static is None else check_static(directory, manifest.static)
    builder = _builder(engine, manifest, directory)
    loaded: list[CachedImage] = []
    present: list[CachedImage] = []
    with _undone_on_failure(engine) as undo:
        for image in manifest.images:
            if engine.find_image(image.id) is None:
                _load(engine, directory / image.file.name, image, undo)
                loaded.append(image)
            else:
                present.append(image)
            for name in image.names:
                engine.tag(image.id, name)
        wheels = 0
        if manifest.downloads is not None and manifest.downloads.index:
            path = directory / manifest.downloads.file.name
            wheels = _place_downloads(engine, builder, path, manifest.downloads.index, undo)
        elif manifest.downloads is not None:
            _log.info(
                "not importing the wheels: the export does not say which index they came from"
            )
    placed = manifest.static if static is not None and _place_static(*static) else None
    return Imported(manifest, tuple(loaded), tuple(present), wheels, placed)


def check_archive(path: Path, image: CachedImage) -> None:
    """The archive holds the manifest's image, and names nothing outside the cache."""
    try:
        with tarfile.open(path) as archive:
            handle = archive.extractfile("manifest.json")
            items = json.loads(handle.read() if handle else b"")
    except (OSError, KeyError, tarfile.TarError, ValueError) as exc:
        raise CacheDirError(f"{path} is not an image archive: {exc}", cachedir.REFRESH) from exc
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise CacheDirError(
            f"{path}: its manifest.json is not a docker-archive's", cachedir.REFRESH
        )
    config = f"{image.id.split(':')[-1]}.json"
    tags = [tag for item in items for tag in item.get("RepoTags") or ()]
    if [item.get("Config") for item in items] != [config] or any(
        not str(tag).startswith(f"{cache.DEPENDENCY_REPOSITORY}:") for tag in tags
    ):
        raise CacheDirError(f"{path} does not hold image {image.id} alone", cachedir.REFRESH)


def check_downloads(path: Path) -> None:
    """The download cache's tar holds wheels under wheels/ and nothing else."""
    try:
        with tarfile.open(path) as archive:
            members = archive.getmembers()
    except (OSError, tarfile.TarError) as exc:
        raise CacheDirError(f"{path} is not a tar archive: {exc}", cachedir.REFRESH) from exc
    for member in members:
        parts = member.name.split("/")
        wheel = member.isfile() and len(parts) == 2 and parts[1].endswith(".whl")
        if not (wheel and parts[0] == "wheels" and parts[1][:1] not in ("", ".")) and not (
            member.isdir() and member.name == "wheels"
        ):
            raise CacheDirError(f"{path}: unexpected member {member.name!r}", cachedir.REFRESH)


def check_static(directory: Path, static: StaticFiles) -> tuple[str, bytes, bytes]:
    """The name, record and archive of the kept collectstatic result, which must be one
    ``staticfiles.pack`` made; what import places later is what was checked here."""
    path = directory / static.file.name
    try:
        record, files = staticfiles.unpacked(path)
    except ValueError as exc:
        raise CacheDirError(
            f"{path} is not a kept collectstatic result: {exc}", cachedir.REFRESH
        ) from exc
    return static.name, record, files


def _place_static(name: str, record: bytes, files: bytes) -> bool:
    try:
        staticfiles.place(name, record, files)
    except OSError as exc:
        _log.warning("the static files were not imported: collectstatic runs once", error=str(exc))
        return False
    return True


def _builder(engine: ImageArchives, manifest: Manifest, directory: Path) -> ImageInfo:
    """The builder image the cache was made against, by ID; else why it cannot be used."""
    found = engine.find_image(manifest.builder_id)
    if found is not None:
        return found
    named = engine.find_image(manifest.builder_ref)
    made = (
        f"the cache in {directory} was made against {manifest.builder_ref}"
        f" ({_short(manifest.builder_id)})"
    )
    if named is None:
        raise BuilderImageError(
            f"{made}, which is not in local storage; nothing was imported",
            "build or load that builder image first (`buildpy builder build`, `podman load`):"
            " the cache does not carry it",
        )
    raise CacheDirError(
        f"{made}, but here {manifest.builder_ref} is {_short(named.id)}: its dependency layers"
        " would never be used; nothing was imported",
        "build without the cache, then `buildpy cache export` replaces it",
    )


def _short(image_id: str) -> str:
    return image_id.split(":")[-1][:12]


class _Undo:
    """What an import has made so far, to remove again if a later step fails."""

    def __init__(self, engine: ImageArchives) -> None:
        self.engine = engine
        self.images: list[CachedImage] = []
        self.volume = False

    def run(self) -> None:
        for image in reversed(self.images):
            cache.remove_names(self.engine, image.id, image.names)
            self.engine.remove_image(image.id, force=False)
        if self.volume:
            self.engine.remove_volume(cache.DOWNLOADS_VOLUME, force=False)


@contextmanager
def _undone_on_failure(engine: ImageArchives) -> Iterator[_Undo]:
    undo = _Undo(engine)
    try:
        yield undo
    except BaseException:
        try:
            undo.run()
        except Exception as exc:  # the import's own error matters more
            _log.warning("could not remove what the failed import loaded", error=str(exc))
        raise


def _load(engine: ImageArchives, path: Path, image: CachedImage, undo: _Undo) -> None:
    with open(path, "rb") as archive:
        engine.load_image(archive)
    if engine.find_image(image.id) is None:
        raise EngineError(f"loading {path.name} gave no image {_short(image.id)}")
    undo.images.append(image)


def _place_downloads(
    engine: ImageArchives, builder: ImageInfo, path: Path, index: str, undo: _Undo
) -> int:
    """Merge the wheels into the download cache of the package index ``index``; the number
    added."""
    undo.volume = cache.ensure_downloads(engine)
    wheels = _wheels(index)
    command = ("/bin/sh", "-c", PLACE_WHEELS, "buildpy-cache-import", "/tmp/wheels", wheels)
    with _helper_in(engine, builder.id, builder, command) as container:
        container.upload("/tmp", lambda uid, gid: _chunks(path))
        return _count(container, "add the wheels to the download cache")


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk
