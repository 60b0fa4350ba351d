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
kept there (``pip wheel`` into it, then ``pip install --no-index --find-links``), so a
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

from buildpy import redact
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
