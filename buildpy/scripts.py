"""Where assemble and run come from: the source's .s2i/bin, else the builder's label.

S2I's rules, kept: scripts in ``.s2i/bin`` of the source win, one by one, and
are placed in ``/tmp/scripts``; the rest come from the builder image's
``io.openshift.s2i.scripts-url`` label (``image://PATH`` only: buildpy never
downloads scripts during a build).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from buildpy.errors import BuilderImageError

SCRIPTS_URL_LABELS = ("io.openshift.s2i.scripts-url", "io.s2i.scripts-url")
SOURCE_SCRIPTS_DIR = ".s2i/bin"
UPLOAD_DIR = "/tmp"
SOURCE_DEST = "/tmp/src"
SCRIPTS_DEST = "/tmp/scripts"
KNOWN = ("assemble", "run", "save-artifacts", "usage")


@dataclass(frozen=True)
class Scripts:
    """Paths, inside the container, of the scripts a build uses."""

    assemble: str
    run: str
    save_artifacts: str = ""


def source_scripts(root: Path) -> dict[str, Path]:
    """The S2I scripts the source provides in .s2i/bin, by name."""
    bindir = root / SOURCE_SCRIPTS_DIR
    return {name: bindir / name for name in KNOWN if (bindir / name).is_file()}


def scripts_url(labels: Mapping[str, str]) -> tuple[str, str] | None:
    """The builder's scripts-url label and its value, or None when unlabelled."""
    return next(((label, labels[label]) for label in SCRIPTS_URL_LABELS if labels.get(label)), None)


def image_scripts_dir(labels: Mapping[str, str], image_ref: str) -> str | None:
    """The directory named by the builder's scripts-url label, or None when unlabelled."""
    found = scripts_url(labels)
    if found is None:
        return None
    label, url = found
    if url.startswith("image://"):
        path = url[len("image://") :].rstrip("/")
        if path.startswith("/"):
            return path or "/"
    raise BuilderImageError(
        f"builder image {image_ref} has {label}={url!r}; buildpy only uses"
        " image:///PATH scripts (it never downloads scripts during a build)",
        "put the scripts in the source's .s2i/bin, or use a builder whose label"
        " reads image:///usr/libexec/s2i",
    )


def choose(labels: Mapping[str, str], provided: set[str], image_ref: str) -> Scripts:
    """Choose assemble and run: the source's own first, else the image's."""
    image_dir = image_scripts_dir(labels, image_ref)
    paths = {}
    for name in ("assemble", "run"):
        if name in provided:
            paths[name] = f"{SCRIPTS_DEST}/{name}"
        elif image_dir is not None:
            paths[name] = f"{image_dir}/{name}"
        else:
            raise BuilderImageError(
                f"builder image {image_ref} has no io.openshift.s2i.scripts-url label"
                f" and the source has no {SOURCE_SCRIPTS_DIR}/{name}",
                "use an S2I builder image, or add the script to the source's .s2i/bin",
            )
    if "save-artifacts" in provided:
        save = f"{SCRIPTS_DEST}/save-artifacts"
    else:
        save = f"{image_dir}/save-artifacts" if image_dir else ""
    return Scripts(paths["assemble"], paths["run"], save)
