"""Django's collected static files, kept after one build and placed again by the next
while nothing collectstatic read has changed.

A Django application's phase runs ``manage.py collectstatic`` (s2i/assemble) even when
only a view changed: a container start and a Django start for every rebuild. In buildpy's
application phase, assemble runs it under s2i/record-inputs, which notes what it read from
the source (files, directory listings, lookups: settings, apps, static directories, and the
import system's view of each package) and Django's STATIC_ROOT. After the commit buildpy
keeps that record with an archive of STATIC_ROOT (``keep``). A later build whose
dependency layer and variables are the same, and whose source still gives every recorded
path the same content, listing and kind, places the source and the kept files without
running anything (``find``; ``members``), as a copy-only application phase does.

Nothing is kept when the record cannot be trusted (collectstatic ran a program, used the
network, read a build-only file or wrote outside STATIC_ROOT), when STATIC_ROOT is not
inside the source directory or is itself part of the source, or when what it holds is
not plain files and directories. The store (``$XDG_CACHE_HOME/buildpy/static``) keeps the
newest ``KEEP`` entries; ``buildpy cache prune`` empties it; ``buildpy cache export`` carries
the entry of the exported layer to another machine (``pack``, ``unpacked``, ``place``).
docs/reference/static-files.md says all of this for users.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from buildpy import background, cachesize, log, source
from buildpy.engine import Engine
from buildpy.errors import EngineError
from buildpy.plan import BuildPlan
from buildpy.session import build_variables, download_index, uses_downloads

_log = log.get(__name__)

RECORD_VARIABLE = "BUILDPY_RECORD_INPUTS"  # assemble: run collectstatic under record-inputs
INPUTS_MARKER = "BUILDPY_STATIC_INPUTS"  # assemble's line with record-inputs' record
DISABLE_VARIABLE = "DISABLE_COLLECTSTATIC"
STORE = cachesize.STATE_DIR / "static"
KEEP = 16
_FORMAT = "1"
_INPUTS = "inputs.json"
_FILES = "files.tar"


@dataclass(frozen=True)
class View:
    """What the source gives the recorded paths: file digests ("-": not in the upload),
    directory listings (None: no directory), kinds ("d", "f", "l", or "-")."""

    reads: dict[str, str]
    listed: dict[str, list[str] | None]
    looked: dict[str, str]

    @classmethod
    def of(
        cls,
        root: Path,
        rules: source.IgnoreRules,
        reads: list[str],
        listed: list[str],
        looked: list[str],
    ) -> View:
        return cls(
            {path: _digest(root, rules, path) for path in reads},
            {path: source.listing(root, rules, path) for path in listed},
            {path: _kind(root, rules, path) for path in looked},
        )

    def as_json(self) -> dict[str, Any]:
        return {"reads": self.reads, "listed": self.listed, "looked": self.looked}

    def first_difference(self, other: View) -> str | None:
        """The first path whose content, listing or kind differs, or None."""
        for mine, theirs in (
            (self.reads, other.reads),
            (self.listed, other.listed),
            (self.looked, other.looked),
        ):
            for path in sorted(mine):
                if mine[path] != theirs.get(path):
                    return path
        return None


@dataclass(frozen=True)
class Kept:
    """A kept collectstatic result: where STATIC_ROOT is (relative to the source
    directory), how many inputs it was checked against, and its archive."""

    static_root: str
    inputs: int
    archive: bytes

    def members(self, dest: str) -> list[source.Member]:
        """The kept files as archive members under ``dest/STATIC_ROOT``."""
        parent = PurePosixPath(dest) / PurePosixPath(self.static_root).parent
        members = []
        with tarfile.open(fileobj=io.BytesIO(self.archive), mode="r:") as archive:
            for info in archive:
                name = str(parent / info.name)
                if info.isdir():
                    members.append(source.Member(name + "/", b"", info.mode, int(info.mtime)))
                else:
                    handle = archive.extractfile(info)
                    data = handle.read() if handle is not None else b""
                    members.append(source.Member(name, data, info.mode, int(info.mtime)))
        return members


def name_for(plan: BuildPlan, dependency_image: str, builder_env: Mapping[str, str]) -> str | None:
    """The store's name for what this build's collectstatic makes on this dependency layer
    (``key`` of every variable it sees: the image's and the build's application phase, as
    ``BuildSession.build_env`` gives them); None when assemble would skip collectstatic
    (any non-empty DISABLE_COLLECTSTATIC). The build and ``buildpy plan`` both ask here."""
    downloads = download_index(plan, builder_env) if uses_downloads(plan) else None
    env = {**plan.image_env, **build_variables(plan, downloads, "application")}
    return None if env.get(DISABLE_VARIABLE) else key(dependency_image, env)


def key(dependency_image: str, env: Mapping[str, str]) -> str:
    """The store's name for results made on this dependency layer with these variables
    (all that collectstatic saw besides the source: the image's and the build's)."""
    text = json.dumps([_FORMAT, dependency_image, sorted(env.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def find(name: str, root: Path, rules: source.IgnoreRules) -> Kept | None:
    """The kept result named ``name`` if the source still gives every recorded path what
    it gave then; None (and a line saying which path changed) otherwise."""
    kept, changed = _look_up(name, root, rules, with_files=True)
    if changed is not None:
        _log.info("collectstatic runs", path=changed)
    if kept is not None:
        with suppress(OSError):  # replaced or pruned meanwhile: what was read still holds
            os.utime(STORE / name)  # the newest entries are kept
    return kept


def forecast(name: str, root: Path, rules: source.IgnoreRules) -> str:
    """For ``buildpy plan``: whether the build would place kept files, or why collectstatic
    runs. Reads no archive and changes nothing."""
    kept, changed = _look_up(name, root, rules, with_files=False)
    if kept is not None:
        return f"placed as collectstatic left them ({kept.inputs} inputs unchanged)"
    if changed is not None:
        return f"collectstatic runs: {changed} changed since it last ran"
    return "collectstatic runs: nothing kept for this dependency layer and these variables"


def _look_up(
    name: str, root: Path, rules: source.IgnoreRules, with_files: bool
) -> tuple[Kept | None, str | None]:
    """The kept result if it still holds (its archive read only ``with_files``), else the
    first recorded path that changed (None when there is no usable entry). Record and
    archive come from the one directory, opened once, even while another build replaces
    the entry."""
    try:
        with _entry(name) as read:
            saved = json.loads(read(_INPUTS))
            then = View(saved["reads"], saved["listed"], saved["looked"])
            static_root = str(saved["static_root"])
            now = View.of(root, rules, list(then.reads), list(then.listed), list(then.looked))
            changed = then.first_difference(now)
            if changed is not None:
                return None, changed
            archive = read(_FILES) if with_files else b""
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    count = len(then.reads) + len(then.listed) + len(then.looked)
    return Kept(static_root, count, archive), None


@contextmanager
def _entry(name: str) -> Iterator[Callable[[str], bytes]]:
    """Read the entry ``name``'s files through its directory, opened once: what is read
    comes from one entry even while another build replaces it. OSError when it is gone."""
    directory = os.open(STORE / name, os.O_RDONLY | os.O_DIRECTORY)

    def read(part: str) -> bytes:
        with open(os.open(part, os.O_RDONLY, dir_fd=directory), "rb") as handle:
            return handle.read()

    try:
        yield read
    finally:
        os.close(directory)


def keep(
    name: str,
    said: str,
    root: Path,
    rules: source.IgnoreRules,
    engine: Engine,
    container: str,
) -> bool:
    """Keep what collectstatic made in ``container`` with its record (assemble's
    ``INPUTS_MARKER`` line, ``said``); False, and why at debug level, when it cannot be."""
    reason, record = _usable(said, root, rules)
    if record is None:
        _log.debug("static files not kept", reason=reason)
        return False
    view, static_root, home = record
    STORE.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=STORE))
    try:
        with open(staging / _FILES, "wb") as archive:
            found = engine.archive(container, f"{home}/{static_root}", archive)
        if not found:
            _log.debug("static files not kept", reason="STATIC_ROOT is missing")
            return False
        with open(staging / _FILES, "rb") as written:
            plain = _plain(written)
        if not plain:
            _log.debug("static files not kept", reason="STATIC_ROOT holds more than files")
            return False
        document = {"static_root": static_root, **view.as_json()}
        (staging / _INPUTS).write_text(json.dumps(document), encoding="utf-8")
        _replace(staging, name)
    except (OSError, EngineError) as exc:
        _log.debug("static files not kept", reason=str(exc))
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _trim()
    return True


def _replace(staging: Path, name: str) -> None:
    """Make a staged entry (a directory in STORE) the entry called ``name``."""
    entry = STORE / name
    shutil.rmtree(entry, ignore_errors=True)
    os.replace(staging, entry)


# ----------------------------------------------------------------------------- carried


def pack(name: str, dest: Path) -> bool:
    """Write the kept result ``name``, record and archive, as one tar at ``dest`` (for
    ``buildpy cache export``); False when the store has no such entry."""
    try:
        with _entry(name) as read:
            parts = {part: read(part) for part in (_INPUTS, _FILES)}
    except OSError:
        return False
    with tarfile.open(dest, "w") as packed:
        for part, data in parts.items():
            info = tarfile.TarInfo(part)
            info.size, info.mode = len(data), 0o600
            packed.addfile(info, io.BytesIO(data))
    return True


def unpacked(path: Path) -> tuple[bytes, bytes]:
    """The record and archive of a ``pack`` tar, for ``place``; ValueError saying what is
    wrong with it (``buildpy cache import`` asks before it changes anything)."""
    try:
        with tarfile.open(path, mode="r:") as packed:
            infos = {info.name: info for info in packed.getmembers()}
            if set(infos) != {_INPUTS, _FILES} or not all(i.isfile() for i in infos.values()):
                raise ValueError(f"it must hold {_INPUTS} and {_FILES}, and nothing else")
            record, files = (_member(packed, infos[part]) for part in (_INPUTS, _FILES))
    except (OSError, tarfile.TarError) as exc:
        raise ValueError(f"it cannot be read as a tar: {exc}") from exc
    try:
        saved = json.loads(record)
        View(dict(saved["reads"]), dict(saved["listed"]), dict(saved["looked"]))
        static_root = saved["static_root"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"its {_INPUTS} is not a collectstatic record") from exc
    if not _relative(static_root) or static_root == ".":
        raise ValueError(f"its STATIC_ROOT {static_root!r} is not inside the source directory")
    if not _plain(io.BytesIO(files)):
        raise ValueError(f"its {_FILES} holds more than the files of one directory")
    return record, files


def _member(packed: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = packed.extractfile(info)
    return handle.read() if handle is not None else b""


def place(name: str, record: bytes, files: bytes) -> None:
    """Put what ``unpacked`` gave into the store as the entry ``name``, as if a build on
    this machine had kept it; OSError when it cannot be."""
    STORE.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=STORE))
    try:
        (staging / _FILES).write_bytes(files)
        (staging / _INPUTS).write_bytes(record)
        _replace(staging, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _trim()


@contextmanager
def keeping(
    name: str | None, said: str | None, plan: BuildPlan, engine: Engine, container: str
) -> Iterator[None]:
    """``keep`` on a background thread while the block runs (the commit); waits for it at
    the end, unless the block was interrupted. Podman 4.3 serves the archive after the
    commit, not beside it (a 2.7 MB archive with a commit: 285-293 ms in all together,
    223-290 ms one after the other, 4 tries each), so here it saves nothing."""
    if name is None or said is None:
        yield
        return
    worker = background.Running(
        lambda: _keep_quietly(name, said, plan.root, plan.rules, engine, container),
        name="buildpy-keep-static",
    )
    yield
    worker.result()  # not after an error or interrupt: the daemon thread ends with the process


def _keep_quietly(*args: Any) -> None:
    """``keep``, for a thread: a failure costs a later collectstatic run, never the build."""
    try:
        keep(*args)
    except Exception as exc:  # anything at all: the build goes on
        _log.debug("static files not kept", reason=repr(exc))


def _usable(
    said: str, root: Path, rules: source.IgnoreRules
) -> tuple[str, tuple[View, str, str] | None]:
    """The host's view of the recorded paths, STATIC_ROOT relative to the source
    directory, and that directory, or why the record is not usable."""
    try:
        record = json.loads(said)
        home = str(record["root"])
        static_root = record["static_root"]
        reads: dict[str, str] = dict(record["reads"])
        listed, looked = list(record["listed"]), list(record["looked"])
        untracked = list(record["untracked"])
    except (ValueError, KeyError, TypeError):
        return "the record cannot be read", None
    if untracked:
        return f"collectstatic {untracked[0]}", None
    inside = static_root.startswith(home + "/") if isinstance(static_root, str) else False
    if not inside:
        return "STATIC_ROOT is not inside the source directory", None
    relative = static_root[len(home) + 1 :]
    if not all(_relative(path) for path in (relative, *reads, *listed, *looked)):
        return "the record names a path outside the source directory", None
    if source.lookup(root, rules, relative) is not None:
        return "STATIC_ROOT is part of the source", None
    view = View.of(root, rules, list(reads), listed, list(looked))
    if view.reads != reads:  # the source changed since it was uploaded
        return "a file collectstatic read has changed since the upload", None
    return "", (view, relative, home)


def _relative(path: object) -> bool:
    """Whether a recorded path stays inside the source directory ("." is the directory)."""
    if not isinstance(path, str) or path.startswith("/"):
        return False
    return path == "." or all(part not in ("", ".", "..") for part in path.split("/"))


def _plain(archive: BinaryIO) -> bool:
    """Whether an archive holds only directories and regular files, all below one top."""
    try:
        with tarfile.open(fileobj=archive, mode="r:") as opened:
            infos = opened.getmembers()
    except tarfile.TarError:
        return False
    tops = {info.name.split("/", 1)[0] for info in infos}
    return len(tops) == 1 and all(
        (info.isdir() or info.isfile()) and _relative(info.name) for info in infos
    )


def _trim() -> None:
    """Keep the newest ``KEEP`` entries (by their last use)."""
    try:
        entries = sorted(
            (p for p in STORE.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        return
    for old in entries[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def prune() -> int:
    """Remove every kept result; how many there were."""
    try:
        entries = [p for p in STORE.iterdir() if p.is_dir()]
    except OSError:
        return 0
    for entry in entries:
        shutil.rmtree(entry, ignore_errors=True)
    return len(entries)


def _digest(root: Path, rules: source.IgnoreRules, relpath: str) -> str:
    """record-inputs' digest of a file as the upload has it; "-" when it has none."""
    if source.lookup(root, rules, relpath) is None:
        return "-"
    try:
        with open(root / relpath, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()[:16]
    except OSError:
        return "-"


def _kind(root: Path, rules: source.IgnoreRules, relpath: str) -> str:
    st = source.lookup(root, rules, relpath)
    if st is None:
        return "-"
    if stat.S_ISDIR(st.st_mode):
        return "d"
    return "l" if stat.S_ISLNK(st.st_mode) else "f"
