"""Where assemble and run come from: --scripts-url, the source's .s2i/bin, the builder's label.

S2I's rules, kept, one script at a time: a script at ``--scripts-url`` wins, then
one in the source's ``.s2i/bin``, then the one the builder image's
``io.openshift.s2i.scripts-url`` label names. Scripts from this host
(``--scripts-url file://DIR`` and ``.s2i/bin``) are uploaded to ``/tmp/scripts``
and run from there, so the committed image holds its run script; ``image:///PATH``
names scripts already in the builder. buildpy never downloads scripts during a
build (``http(s)://`` is refused): a build's inputs are the source, the builder and
files on this host, so it can be repeated offline and runs nothing unreviewed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from buildpy.errors import BuilderImageError, UsageError

SCRIPTS_URL_LABELS = ("io.openshift.s2i.scripts-url", "io.s2i.scripts-url")
SOURCE_SCRIPTS_DIR = ".s2i/bin"
UPLOAD_DIR = "/tmp"
SOURCE_DEST = "/tmp/src"
SCRIPTS_DEST = "/tmp/scripts"
KNOWN = ("assemble", "run", "save-artifacts", "usage")
URL_OPTION = "--scripts-url"
URL_HINT = (
    "write --scripts-url image:///PATH (scripts inside the builder) or --scripts-url"
    " file://DIR (a directory on this host holding assemble, run, ...)"
)


@dataclass(frozen=True)
class Scripts:
    """Paths, inside the container, of the scripts a build uses."""

    assemble: str
    run: str
    save_artifacts: str = ""


@dataclass(frozen=True)
class ScriptsURL:
    """``--scripts-url``, checked: ``image:///PATH`` (``image_dir``) or ``file://DIR``
    (``files``: the scripts found in DIR, by name)."""

    url: str
    image_dir: str | None = None
    files: Mapping[str, Path] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"{URL_OPTION} {self.url}"

    def gives(self, name: str) -> bool:
        """Whether the script ``name`` comes from here (S2I: an image:// URL gives all)."""
        return self.image_dir is not None or name in self.files


def parse_url(url: str) -> ScriptsURL:
    """Check ``--scripts-url`` and find its scripts: no engine, nothing downloaded.

    ``file:///abs/dir`` and ``file://rel/dir`` (relative to the current directory, as
    s2i reads it) must be a directory holding at least one of assemble, run,
    save-artifacts; ``image:///PATH`` must be absolute."""
    parts = urlsplit(url)
    if parts.scheme == "image":
        path = (parts.netloc + parts.path).rstrip("/")
        if parts.netloc or not parts.path.startswith("/"):
            raise UsageError(
                f"{URL_OPTION} {url!r}: image:// needs an absolute path inside the builder",
                "write three slashes: image:///usr/libexec/s2i",
            )
        return ScriptsURL(url, image_dir=path or "/")
    if parts.scheme == "file":
        return _file_url(url, Path(parts.netloc + parts.path))
    if parts.scheme in ("http", "https"):
        raise UsageError(
            f"{URL_OPTION} {url!r}: buildpy never downloads scripts during a build (a build's"
            " inputs are the source, the builder and files on this host: it can be repeated"
            " offline and runs nothing unreviewed)",
            "download the scripts, read them, and pass --scripts-url file://DIR",
        )
    raise UsageError(f"{URL_OPTION} {url!r}: not an image:// or file:// URL", URL_HINT)


def _file_url(url: str, directory: Path) -> ScriptsURL:
    if not directory.is_dir():
        raise UsageError(
            f"{URL_OPTION} {url!r}: {directory} is not a directory",
            "give the directory that holds assemble, run, ...; a relative file://DIR is"
            " read from the current directory, file:///DIR is absolute",
        )
    found = {name: directory / name for name in KNOWN if (directory / name).is_file()}
    if not set(found) & {"assemble", "run", "save-artifacts"}:
        raise UsageError(
            f"{URL_OPTION} {url!r}: {directory} holds no assemble, run or save-artifacts",
            "put the S2I scripts there (executable files named assemble, run, ...)",
        )
    return ScriptsURL(url, files=found)


def uploaded(given: ScriptsURL | None, source: Mapping[str, Path]) -> dict[str, Path]:
    """The scripts of this host that go to /tmp/scripts, by name: --scripts-url's
    file:// ones beat the source's .s2i/bin; an image:// URL leaves .s2i/bin unused."""
    if given is None:
        return dict(source)
    if given.image_dir is not None:
        return {}
    return {**{k: v for k, v in source.items() if k != "usage"}, **given.files}


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


def choose(
    labels: Mapping[str, str],
    provided: set[str],
    image_ref: str,
    given: ScriptsURL | None = None,
) -> Scripts:
    """Choose assemble, run and save-artifacts: ``--scripts-url`` (``given``) first, then
    the uploaded ones (``provided``: .s2i/bin's and file:// ones), else the image's."""
    if given is not None and given.image_dir is not None:
        return Scripts(*(f"{given.image_dir}/{name}" for name in KNOWN[:3]))
    image_dir = image_scripts_dir(labels, image_ref)
    paths = {}
    for name in ("assemble", "run"):
        if name in provided:
            paths[name] = f"{SCRIPTS_DEST}/{name}"
        elif image_dir is not None:
            paths[name] = f"{image_dir}/{name}"
        else:
            raise _missing(name, image_ref, given)
    if "save-artifacts" in provided:
        save = f"{SCRIPTS_DEST}/save-artifacts"
    else:
        save = f"{image_dir}/save-artifacts" if image_dir else ""
    return Scripts(paths["assemble"], paths["run"], save)


def _missing(name: str, image_ref: str, given: ScriptsURL | None) -> BuilderImageError:
    message = (
        f"builder image {image_ref} has no io.openshift.s2i.scripts-url label"
        f" and the source has no {SOURCE_SCRIPTS_DIR}/{name}"
    )
    if given is None:
        return BuilderImageError(
            message, "use an S2I builder image, or add the script to the source's .s2i/bin"
        )
    return BuilderImageError(
        f"{message}, nor has {given.origin}",
        f"add {name} to the {URL_OPTION} directory, or use an S2I builder image",
    )


def origin(name: str, given: ScriptsURL | None, source: Mapping[str, Path]) -> str | None:
    """Where the script ``name`` comes from when not from the builder's label: the
    ``--scripts-url`` or the source's .s2i/bin; None for the builder's own."""
    if given is not None and given.gives(name):
        return given.origin
    if name in source:
        return f"{SOURCE_SCRIPTS_DIR}/{name} in the source"
    return None
