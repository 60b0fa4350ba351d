"""What buildpy keeps between builds: dependency images and the download cache volume.

Dependency images are ordinary local images named
``localhost/buildpy-cache/dependencies:KEY`` (found by that name: app images built
on one inherit its labels, so a label would not tell them apart);
the download cache is the volume ``buildpy-downloads``, mounted during assemble
only (under /dev/shm, so not even its mount point reaches an image). Both are
listed by ``buildpy cache ls`` and removed by ``buildpy cache prune``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from buildpy.engine import Engine, ImageSummary, VolumeMount

CACHE_LABEL = "io.buildpy.cache"
KEY_LABEL = "io.buildpy.dependencies.key"
BUILDER_LABEL = "io.buildpy.dependencies.builder"
FIXED_LABEL = "io.buildpy.dependencies.fixed"
LINES_LABEL = "io.buildpy.dependencies.requirements"
OWNER_LABEL = "io.buildpy.dependencies.owner"  # uid:gid of the builder's user
INPUTS_LABEL = "io.buildpy.dependencies.inputs"  # digests of source location and inputs
DEPENDENCY_REPOSITORY = "localhost/buildpy-cache/dependencies"
DOWNLOADS_VOLUME = "buildpy-downloads"
DOWNLOADS_TARGET = "/dev/shm/buildpy-cache"
# Where installers keep what they download, during assemble only.
DOWNLOAD_VARIABLES = {
    "PIP_CACHE_DIR": f"{DOWNLOADS_TARGET}/pip",
    "PIPENV_CACHE_DIR": f"{DOWNLOADS_TARGET}/pipenv",
    "BUILDPY_WHEEL_CACHE": f"{DOWNLOADS_TARGET}/wheels",
    "UV_CACHE_DIR": f"{DOWNLOADS_TARGET}/uv",
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
