"""A cache directory: the plain files ``buildpy cache export`` writes and ``import`` reads.

What CI systems carry between jobs (GitLab's ``cache:``, GitHub's ``actions/cache``)
is a directory, so buildpy's cache travels as one: image archives, the download
cache's wheels as a tar, and ``buildpy-cache.json``, the manifest, which says what
each file is, its size and SHA-256, and the builder image everything was made
against. This module knows the directory and nothing of engines:

* ``read`` and ``verify``: a directory's manifest, then every file against it; a
  directory that is not buildpy's, or damaged, is a ``CacheDirError``;
* ``staging``: a new directory is written beside the old one and takes its place in
  one rename, so a reader never sees half of an export, and what the new export
  does not hold is gone (a CI cache does not grow with every change);
* ``take``: an archive of an earlier export that is still wanted is hard-linked into
  the new one instead of being written again.

Besides images and wheels, a directory may carry one kept collectstatic result (see
``staticfiles``): an archive of the store's entry, named by its key.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from buildpy import __version__, cache, log
from buildpy.errors import CacheDirError
from buildpy.source import CACHE_MANIFEST

_log = log.get(__name__)

MANIFEST = CACHE_MANIFEST  # the source walk skips directories that hold one
FORMAT = 1
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_IMAGE_ID = re.compile(r"^(?:sha256:)?[0-9a-z]{1,64}$")  # Podman: hex; the fake: "result1"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_INDEX = re.compile(r"^(?:[0-9a-f]{16})?$")  # cache.index_digest, or empty (unknown)
_STATIC_NAME = re.compile(r"^[0-9a-f]{32}$")  # staticfiles.key
REFRESH = "export the cache again (`buildpy cache export DIR SOURCE`), or delete DIR"


@dataclass(frozen=True)
class CachedFile:
    """One file of the directory: its name (no path), size and SHA-256 (hex)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class CachedImage:
    """An image archive: the image's ID, the cache names it gets, its layer's key."""

    file: CachedFile
    id: str
    names: tuple[str, ...]
    key: str


@dataclass(frozen=True)
class Downloads:
    """The download cache's wheels, as a tar of ``wheels/NAME.whl``, and the digest of the
    package index they came from (``cache.index_digest``; empty in older exports, whose
    wheels are not imported: their index is unknown)."""

    file: CachedFile
    wheels: int
    index: str = ""


@dataclass(frozen=True)
class StaticFiles:
    """A kept collectstatic result (``staticfiles.pack``), and its name in the store."""

    file: CachedFile
    name: str


@dataclass(frozen=True)
class Manifest:
    """What a cache directory holds, and the builder image it was made against."""

    builder_ref: str
    builder_id: str
    images: tuple[CachedImage, ...] = ()
    downloads: Downloads | None = None
    buildpy: str = __version__
    created: str = ""
    static: StaticFiles | None = None  # absent from exports before 2026-12-06

    @property
    def files(self) -> tuple[CachedFile, ...]:
        found = tuple(image.file for image in self.images)
        found += (self.downloads.file,) if self.downloads else ()
        return found + ((self.static.file,) if self.static else ())

    def image(self, image_id: str) -> CachedImage | None:
        return next((image for image in self.images if image.id == image_id), None)

    def to_json(self) -> str:
        created = self.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
        document = {
            "format": FORMAT,
            "buildpy": self.buildpy,
            "created": created,
            "builder": {"ref": self.builder_ref, "id": self.builder_id},
            "images": [
                {**_file_json(i.file), "id": i.id, "names": list(i.names), "key": i.key}
                for i in self.images
            ],
            "downloads": None
            if self.downloads is None
            else {
                **_file_json(self.downloads.file),
                "wheels": self.downloads.wheels,
                "index": self.downloads.index,
            },
        }
        if self.static is not None:
            document["static"] = {**_file_json(self.static.file), "name": self.static.name}
        return json.dumps(document, indent=2) + "\n"


def _file_json(file: CachedFile) -> dict[str, Any]:
    return {"file": file.name, "size": file.size, "sha256": file.sha256}


# ----------------------------------------------------------------------------- reading


def read(directory: Path) -> Manifest | None:
    """The manifest of ``directory``; None when there is no directory or it is empty (a
    first CI run), ``CacheDirError`` when it is not a buildpy cache or the manifest is bad."""
    path = directory / MANIFEST
    try:
        if not directory.exists() or not (path.exists() or any(directory.iterdir())):
            return None
        text = path.read_text(encoding="utf-8") if path.exists() else None
    except OSError as exc:  # not a directory, or unreadable
        raise CacheDirError(f"cannot read {directory}: {exc.strerror or exc}", REFRESH) from exc
    if text is None:
        raise CacheDirError(
            f"{directory} has no {MANIFEST}: it is not a buildpy cache directory",
            "give the directory `buildpy cache export` wrote",
        )
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise CacheDirError(f"cannot read {path}: {exc}", REFRESH) from exc
    return parse(document, str(path))


def parse(document: Any, where: str) -> Manifest:
    """A manifest from its JSON document; ``CacheDirError`` naming what is wrong."""
    fields = _Fields(document, where)
    version = fields.get("format", int)
    if version != FORMAT:
        raise CacheDirError(
            f"{where}: format {version}, but this buildpy ({__version__}) reads format {FORMAT}",
            REFRESH,
        )
    builder = _Fields(fields.get("builder", dict), f"{where}: builder")
    downloads = fields.get("downloads", (dict, type(None)))
    static = document.get("static")  # optional: older exports have none
    manifest = Manifest(
        builder_ref=builder.get("ref", str),
        builder_id=builder.matching("id", _IMAGE_ID),
        images=tuple(_image(item, where) for item in fields.get("images", list)),
        downloads=None if downloads is None else _downloads(downloads, where),
        buildpy=fields.get("buildpy", str),
        created=fields.get("created", str),
        static=None if static is None else _static(static, where),
    )
    names = [file.name for file in manifest.files]
    if len(set(names)) != len(names):
        raise CacheDirError(f"{where}: a file is listed twice", REFRESH)
    return manifest


def _image(item: Any, where: str) -> CachedImage:
    fields = _Fields(item, f"{where}: images")
    names = tuple(fields.get("names", list))
    prefix = f"{cache.DEPENDENCY_REPOSITORY}:"
    if not all(isinstance(name, str) and name.startswith(prefix) for name in names):
        raise CacheDirError(f"{where}: images may only be named {prefix}*, not {names}", REFRESH)
    return CachedImage(
        _file(fields), fields.matching("id", _IMAGE_ID), names, fields.get("key", str)
    )


def _downloads(item: Any, where: str) -> Downloads:
    fields = _Fields(item, f"{where}: downloads")
    index = item.get("index", "") if isinstance(item, Mapping) else ""
    if not isinstance(index, str) or not _INDEX.match(index):
        raise CacheDirError(f"{where}: downloads: 'index' is not valid: {index!r}", REFRESH)
    return Downloads(_file(fields), fields.get("wheels", int), index)


def _static(item: Any, where: str) -> StaticFiles:
    fields = _Fields(item, f"{where}: static")
    return StaticFiles(_file(fields), fields.matching("name", _STATIC_NAME))


def _file(fields: _Fields) -> CachedFile:
    name = fields.matching("file", _FILE_NAME)
    if name == MANIFEST:
        raise CacheDirError(f"{fields.where}: {MANIFEST} cannot be an archive", REFRESH)
    return CachedFile(name, fields.get("size", int), fields.matching("sha256", _SHA256))


class _Fields:
    """Typed access to one JSON object of the manifest; a wrong one is a CacheDirError."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, Mapping):
            raise CacheDirError(f"{where}: expected an object", REFRESH)
        self.value, self.where = value, where

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        found = self.value.get(key)
        if not isinstance(found, kind) or isinstance(found, bool):
            raise CacheDirError(f"{self.where}: {key!r} is missing or of the wrong type", REFRESH)
        return found

    def matching(self, key: str, pattern: re.Pattern[str]) -> str:
        found: str = self.get(key, str)
        if not pattern.match(found):
            raise CacheDirError(f"{self.where}: {key!r} is not valid: {found!r}", REFRESH)
        return found


# ----------------------------------------------------------------------------- checking


def digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def describe(path: Path) -> CachedFile:
    """A file written into a cache directory, as the manifest lists it."""
    return CachedFile(path.name, path.stat().st_size, digest(path))


def problem(directory: Path, file: CachedFile) -> str | None:
    """What is wrong with one listed file, or None when it is as the manifest says."""
    path = directory / file.name
    if path.is_symlink() or not path.is_file():
        return f"{file.name} is missing (or not a regular file)"
    size = path.stat().st_size
    if size != file.size:
        return f"{file.name} has {size} bytes, the manifest says {file.size}"
    if digest(path) != file.sha256:
        return f"{file.name} does not match its SHA-256 in the manifest"
    return None


def verify(directory: Path, manifest: Manifest) -> None:
    """Every listed file present, of its size and SHA-256; else ``CacheDirError``."""
    problems = [p for p in (problem(directory, f) for f in manifest.files) if p is not None]
    if problems:
        raise CacheDirError(
            f"{directory} is damaged: {'; '.join(problems)}; nothing was imported", REFRESH
        )


# ----------------------------------------------------------------------------- writing


def write(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")


def previous(directory: Path) -> Manifest | None:
    """The manifest of an earlier export into ``directory``, when it can be read."""
    try:
        return read(directory)
    except CacheDirError as exc:
        _log.info("the earlier cache cannot be reused", reason=exc.message)
        return None


def take(directory: Path, file: CachedFile, dest: Path) -> bool:
    """Put an earlier export's file at ``dest`` (a hard link, else a copy) when it is
    still as its manifest says; False when it is not."""
    if problem(directory, file) is not None:
        return False
    try:
        os.link(directory / file.name, dest)
    except OSError:
        shutil.copyfile(directory / file.name, dest)
    return True


@contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A new directory beside ``target`` that takes its place when the block succeeds.

    ``target`` may be missing, empty, or a cache directory; any other directory is
    refused (``cache export .`` must never replace a project). On failure the new
    directory is removed and ``target`` is as it was.
    """
    if target.exists() and not _replaceable(target):
        raise CacheDirError(
            f"{target} exists and is not a buildpy cache directory (no {MANIFEST});"
            " refusing to replace it",
            "name a new directory, or the one an earlier `buildpy cache export` wrote",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    try:
        yield work
        work.chmod(0o755)  # mkdtemp makes it 0700; a cache is for other jobs to read
        _swap(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _replaceable(target: Path) -> bool:
    return target.is_dir() and ((target / MANIFEST).is_file() or not any(target.iterdir()))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap(new: Path, target: Path) -> None:
    """Put ``new`` where ``target`` is, in one step where the system can (renameat2's
    RENAME_EXCHANGE; ``new`` then holds the old content), else with two renames."""
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / target.name)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the C library or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
