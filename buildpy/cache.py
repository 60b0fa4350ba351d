"""What buildpy keeps between builds: dependency images and the download cache volume.

Dependency images are ordinary local images named
``localhost/buildpy-cache/dependencies:KEY`` (found by that name: app images built
on one inherit its labels, so a label would not tell them apart);
the download cache is the volume ``buildpy-downloads``, mounted during assemble
only (under /dev/shm, so not even its mount point reaches an image). Both are
listed by ``buildpy cache ls`` and removed by ``buildpy cache prune``.

The download cache is kept per package index: each build uses the subdirectory
``index-DIGEST`` of the volume, DIGEST being ``index_digest`` of the index settings
the build's installers see. buildpy's assemble installs requirements from the wheels
kept there (``pip wheel`` into it, then ``pip install --no-index --find-links``; on an
empty cache, ``pip wheel`` alongside the install), so a
cache shared between indexes would let a wheel fetched from index A stand in for a
package of the same name on index B, and let a build whose index cannot be reached
succeed from another index's wheels (dependency confusion). Credentials are left out of
the digest: the same index with another token (CI jobs get a new one each run) is
the same index. A wheelhouse build (``--wheelhouse``) uses no index and no download cache.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from buildpy import cachesize, log, redact
from buildpy.engine import Engine, ImageSummary, VolumeMount

CACHE_LABEL = "io.buildpy.cache"
KEY_LABEL = "io.buildpy.dependencies.key"
BUILDER_LABEL = "io.buildpy.dependencies.builder"
FIXED_LABEL = "io.buildpy.dependencies.fixed"
LINES_LABEL = "io.buildpy.dependencies.requirements"
OWNER_LABEL = "io.buildpy.dependencies.owner"  # uid:gid of the builder's user
INPUTS_LABEL = "io.buildpy.dependencies.inputs"  # digests of source location and inputs
DEPENDENCY_REPOSITORY = "localhost/buildpy-cache/dependencies"
_log = log.get(__name__)
DOWNLOADS_VOLUME = "buildpy-downloads"
DOWNLOADS_TARGET = "/dev/shm/buildpy-cache"
# The variables that say where installers look for packages: what ``index_digest`` reads.
INDEX_VARIABLES = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_CONFIG_FILE",
    "PIPENV_PYPI_MIRROR",
    "MICROPIPENV_DEFAULT_INDEX_URLS",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "BUILDPY_INDEX_URL",
)
NO_INDEX_VARIABLES = ("PIP_NO_INDEX", "UV_NO_INDEX")
# pip's options in a requirements file that name where packages come from.
_INDEX_OPTION = re.compile(
    r"^\s*(?:-i|--index-url|--extra-index-url|-f|--find-links)(?:\s*=\s*|\s+)(\S+)"
)
_NO_INDEX_OPTION = re.compile(r"^\s*--no-index(?:\s|$)")


def index_digest(env: Mapping[str, str], files: Sequence[tuple[str, bytes]] = ()) -> str:
    """A digest of where this build's installers look for packages.

    Read from ``env`` (the container's environment as assemble sees it) and the option
    lines of the dependency ``files``: the set of index and find-links locations, each with
    its credentials masked, and whether the index is switched off. A set, not a list of
    variables: ``--index-url X`` (which sets every installer's variable) and
    ``--build-env PIP_INDEX_URL=X`` name the same index, and pip searches all of its
    indexes alike. Same indexes, same digest; any other index, another.
    """
    places: set[str] = set()
    for name in INDEX_VARIABLES:
        places.update(re.split(r"[\s,]+", env.get(name, "").strip()))
    if any(
        env.get(name, "").lower() not in ("", "0", "false", "no", "off")
        for name in NO_INDEX_VARIABLES
    ):
        places.add("--no-index")
    for _, data in files:
        for line in data.decode("utf-8", errors="replace").splitlines():
            found = _INDEX_OPTION.match(line)
            if found:
                places.add(found.group(1))
            elif _NO_INDEX_OPTION.match(line):
                places.add("--no-index")
    shown = sorted({redact.mask(place).rstrip("/") for place in places} - {""})
    return hashlib.sha256("\0".join(["buildpy-download-index-v1", *shown]).encode()).hexdigest()[
        :16
    ]


def download_directory(digest: str) -> str:
    """The download cache of one index (see ``index_digest``), inside the container."""
    return f"{DOWNLOADS_TARGET}/index-{digest}"


def download_variables(digest: str) -> dict[str, str]:
    """Where installers keep what they download from the index ``digest``, during assemble
    only."""
    directory = download_directory(digest)
    return {
        "PIP_CACHE_DIR": f"{directory}/pip",
        "PIPENV_CACHE_DIR": f"{directory}/pipenv",
        "BUILDPY_WHEEL_CACHE": f"{directory}/wheels",
        "UV_CACHE_DIR": f"{directory}/uv",
    }


def dependency_tag(key: str) -> str:
    return f"{DEPENDENCY_REPOSITORY}:{key[:32]}"


def growth_tag(fixed: str) -> str:
    """The newest dependency image made with these fixed inputs: where a layer may grow from.

    A second name found by one inspect: listing images to find it costs time that grows
    with every image in local storage (0.05 s here with 90 images).
    """
    return f"{DEPENDENCY_REPOSITORY}:grow-{fixed[:32]}"


def source_tag(location: str, builder_ref: str) -> str:
    """The dependency image last made or used for this source with this builder: what
    ``buildpy plan`` compares a new layer's inputs with (one inspect, no listing)."""
    digest = hashlib.sha256(f"{location}\0{builder_ref}".encode()).hexdigest()
    return f"{DEPENDENCY_REPOSITORY}:from-{digest[:32]}"


def downloads(engine: Engine) -> VolumeMount:
    """The download cache volume, created on first use."""
    ensure_downloads(engine)
    return VolumeMount(DOWNLOADS_VOLUME, DOWNLOADS_TARGET)


def ensure_downloads(engine: Engine) -> bool:
    """Create the download cache volume unless it exists; True when it was created."""
    return engine.ensure_volume(DOWNLOADS_VOLUME, {CACHE_LABEL: "downloads"})


@dataclass(frozen=True)
class CacheListing:
    images: tuple[ImageSummary, ...]
    volumes: tuple[tuple[str, str], ...]


def listing(engine: Engine) -> CacheListing:
    # By name, not by label: app images inherit the labels of the layer they start from.
    images = engine.images(DEPENDENCY_REPOSITORY)
    return CacheListing(tuple(images), tuple(engine.volumes(CACHE_LABEL)))


def prune(engine: Engine) -> tuple[CacheListing, CacheListing]:
    """Remove cached dependency images and the download cache; return (removed, kept).

    What a running build uses is kept (Podman refuses to remove it without force),
    so pruning never breaks a build in progress.
    """
    found = listing(engine)
    images = tuple(i for i in found.images if remove_names(engine, i.id, i.tags))
    volumes = tuple(v for v in found.volumes if engine.remove_volume(v[0], force=False))
    kept = CacheListing(
        tuple(i for i in found.images if i not in images),
        tuple(v for v in found.volumes if v not in volumes),
    )
    return CacheListing(images, volumes), kept


def remove_names(engine: Engine, image_id: str, tags: Sequence[str]) -> bool:
    """Remove an image by each of its names (Podman refuses removal by ID of an image with
    two names); the last name takes the image, unless a container uses it (False)."""
    if not tags:
        return engine.remove_image(image_id, force=False)
    growth = sorted(tags, key=lambda tag: ":grow-" not in tag)  # the growth name first
    return all([engine.remove_image(tag, force=False) for tag in growth])


# ----------------------------------------------------------------------------- size limit


@dataclass(frozen=True)
class CachedLayer:
    """A dependency image with what it adds beyond the image it was made from (its
    builder, or the cached layer it grew from) and when a build last used it."""

    image: ImageSummary
    adds: int
    last_used: float  # Unix time; its creation when no build recorded a use

    def entry(self, cached: set[str]) -> cachesize.Entry:
        parent = self.image.parent if self.image.parent in cached else None
        return cachesize.Entry(
            self.image.id, self.adds, self.last_used, parent, self.image.labels.get(KEY_LABEL, "")
        )


def layers(engine: Engine, images: Sequence[ImageSummary] | None = None) -> list[CachedLayer]:
    """The cached dependency images with their sizes and last uses.

    Podman 4.3 reports no shared size (``SharedSize`` is 0), so what a layer adds is its
    size less its parent's (Podman's ``ParentId``: the image its container was made from):
    the parent's size from the same listing, else by inspecting it. An image with no known
    parent (loaded by ``cache import``) is measured against its builder (label
    ``io.buildpy.dependencies.builder``).
    """
    found = list(engine.images(DEPENDENCY_REPOSITORY) if images is None else images)
    sizes = {image.id: image.size for image in found}
    uses = cachesize.last_uses()

    def base_size(image: ImageSummary) -> int:
        ref = image.parent or image.labels.get(BUILDER_LABEL, "")
        if not ref:
            return 0
        if ref not in sizes:
            info = engine.find_image(ref)
            sizes[ref] = info.size if info is not None else 0
        return sizes[ref]

    return [
        CachedLayer(image, max(0, image.size - base_size(image)), uses.get(image.id, _epoch(image)))
        for image in found
    ]


def evict(engine: Engine, limit: int, keep: str) -> list[CachedLayer]:
    """Bring the dependency cache to ``limit`` bytes (what layers add), least recently used
    first; never ``keep`` (the layer this build uses), nor a layer a build is using (its
    lock, ``cachesize.in_use``; Podman also refuses to remove an image a container uses).
    Returns what was removed."""
    if sum(cachesize.recorded_sizes().values()) <= limit:
        return []  # what the state file knows fits: no listing (see cachesize)
    found = layers(engine)
    cached = {layer.image.id for layer in found}
    cachesize.record_sizes({layer.image.id: layer.adds for layer in found})
    entries = [layer.entry(cached) for layer in found]
    by_id = {layer.image.id: layer for layer in found}
    protected = {keep}
    removed: list[CachedLayer] = []
    while True:
        remaining = [e for e in entries if e.id not in {r.image.id for r in removed}]
        chosen = cachesize.choose(remaining, limit, frozenset(protected))
        if not chosen:
            break
        victim = chosen[0]
        with cachesize.unused(victim.key) as free:
            layer = by_id[victim.id]
            if free and remove_names(engine, victim.id, layer.image.tags):
                removed.append(layer)
            else:
                protected.add(victim.id)  # in use: kept, and the next one is tried
    # what was removed, and what this storage no longer has (removed by hand, pruned)
    gone = {layer.image.id for layer in removed} | (set(cachesize.last_uses()) - cached)
    cachesize.forget(sorted(gone))
    if removed:
        _log.info(
            "dependency cache over its limit: least recently used layers removed",
            removed=[
                layer.image.tags[0] if layer.image.tags else layer.image.id for layer in removed
            ],
            freed_mb=round(sum(layer.adds for layer in removed) / 1e6, 1),
            limit_mb=round(limit / 1e6, 1),
        )
    return removed


def _epoch(image: ImageSummary) -> float:
    try:
        return datetime.fromisoformat(image.created).timestamp()
    except ValueError:
        return 0.0
