"""buildpy's own builder images: what each is made from, and building them once.

Each builder is a Containerfile in ``containerfiles/`` plus the S2I scripts in
``s2i/``, built through the Podman API on top of a locally made base image
(see ``scripts/make-base-image``). A builder is rebuilt only when its inputs
change: the image carries a digest of the Containerfile, the scripts, the
build arguments and the base image's ID in ``io.buildpy.builder.digest``.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from buildpy import log
from buildpy.config import builder_prefix
from buildpy.engine import ImageInfo
from buildpy.errors import BuilderImageError, UsageError

_log = log.get(__name__)

DIGEST_LABEL = "io.buildpy.builder.digest"
CONTEXT_DIRS = ("containerfiles", "s2i")


@dataclass(frozen=True)
class Builder:
    """One builder image definition."""

    name: str
    containerfile: str
    base: str
    args: Mapping[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{builder_prefix()}/{self.name}"


# Python 3.11 on bookworm and 3.13 on trixie, each full (compiler, -dev libraries, Node.js,
# Apache httpd) and minimal (Python and the S2I scripts only).
_PYTHONS = (("3.11", "bookworm"), ("3.13", "trixie"))
BUILDERS: dict[str, Builder] = {
    b.name: b
    for version, suite in _PYTHONS
    for variant, suffix in (("full", ""), ("minimal", "-minimal"))
    for b in (
        Builder(
            f"python-{version.replace('.', '')}{suffix}",
            "containerfiles/Containerfile",
            f"localhost/buildpy/base-{suite}",
            {"PYTHON_VERSION": version, "VARIANT": variant},
        ),
    )
}


class ImageBuilder(Protocol):
    """What building a builder needs from the engine."""

    def find_image(self, ref: str) -> ImageInfo | None: ...

    def build(
        self,
        context: bytes,
        containerfile: str,
        tag: str,
        args: Mapping[str, str],
        labels: Mapping[str, str],
    ) -> str: ...


def data_root() -> Path:
    """The directory holding containerfiles/ and s2i/ (the project checkout)."""
    root = Path(__file__).resolve().parent.parent
    if all((root / name).is_dir() for name in CONTEXT_DIRS):
        return root
    raise BuilderImageError(
        f"cannot find {' and '.join(CONTEXT_DIRS)} next to the buildpy package ({root})",
        "build builder images from a checkout of the buildpy repository",
    )


def context_tar(root: Path) -> bytes:
    """A deterministic tar of the build context: only containerfiles/ and s2i/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for top in CONTEXT_DIRS:
            for path in sorted([root / top, *(root / top).rglob("*")]):
                info = archive.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isfile():
                    with open(path, "rb") as handle:
                        archive.addfile(info, handle)
                else:
                    archive.addfile(info)
    return buffer.getvalue()


def digest(context: bytes, builder: Builder, base_id: str) -> str:
    """What decides a builder image's content."""
    h = hashlib.sha256(context)
    h.update(builder.containerfile.encode())
    for key, value in sorted(builder.args.items()):
        h.update(f"\0{key}={value}".encode())
    h.update(base_id.encode())
    return h.hexdigest()


def lookup(name: str) -> Builder:
    try:
        return BUILDERS[name.rsplit("/", 1)[-1]]
    except KeyError:
        raise UsageError(
            f"unknown builder {name!r}", f"known builders: {', '.join(sorted(BUILDERS))}"
        ) from None


def ensure(
    engine: ImageBuilder, builder: Builder, *, base: str | None = None, force: bool = False
) -> tuple[str, bool]:
    """Build ``builder`` unless an image with the same digest exists; return (id, built)."""
    base_ref = base or builder.base
    base_image = engine.find_image(base_ref)
    if base_image is None:
        raise BuilderImageError(
            f"base image {base_ref} is not in local storage",
            "make it with `scripts/make-base-image` (`make setup` does), or pass --base IMAGE",
        )
    context = context_tar(data_root())
    wanted = digest(context, builder, base_image.id)
    existing = None if force else engine.find_image(builder.tag)
    if existing is not None and existing.labels.get(DIGEST_LABEL) == wanted:
        _log.info("builder image is up to date", image=builder.tag)
        return existing.id, False
    _log.info("building builder image", image=builder.tag, base=base_ref)
    args = {**builder.args, "BASE_IMAGE": base_ref}
    image_id = engine.build(
        context, builder.containerfile, builder.tag, args, {DIGEST_LABEL: wanted}
    )
    return image_id, True


def state(engine: ImageBuilder, builder: Builder, context: bytes) -> str:
    """Whether ``builder`` is built and current, for ``builder list``: ``current`` (its
    digest label matches its inputs: ``context``, the build arguments, its base image's
    ID), ``outdated`` (``ensure`` would build it again), ``missing``, or ``no base``."""
    existing = engine.find_image(builder.tag)
    if existing is None:
        return "missing"
    base_image = engine.find_image(builder.base)
    if base_image is None:
        return "no base"
    wanted = digest(context, builder, base_image.id)
    return "current" if existing.labels.get(DIGEST_LABEL) == wanted else "outdated"
