"""Which source files go in the build, streamed as a deterministic tar.

``.s2iignore`` at the source root uses gitignore patterns (see
``docs/reference/s2iignore.md``), translated by pathspec: one pattern per line; ``#``
comments; ``!`` re-includes; the last matching pattern wins; a trailing ``/`` matches
directories only; a ``/`` at the start or in the middle anchors the pattern at the source
root; ``*``, ``?`` and ``[...]`` never match ``/``; ``**`` spans directories. An ignored
directory drops its whole subtree: as in git, nothing below it can be re-included,
because it is never read.

Where buildpy differs from git, on purpose:

* leading whitespace is dropped as well as trailing (git keeps leading spaces); a UTF-8
  byte-order mark and CRLF line ends are accepted;
* a ``[`` without a closing ``]`` is a literal ``[`` (git: the pattern matches nothing);
* a bad pattern fails the build with the line number (git skips it silently): a range
  from high to low such as ``[z-a]``, or a ``\\`` at the end that escapes nothing.

Names that are not UTF-8 are matched through surrogateescape, the way ``os`` decodes
them. ``.s2iignore`` itself is not ignored unless it says so. Symlinks are matched as
files.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import tarfile
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

from buildpy.errors import SourceError

if TYPE_CHECKING:  # pathspec is imported where rules are parsed: most sources have none
    from pathspec import PathSpec, RegexPattern

__all__ = [
    "IGNORE_FILE",
    "Entry",
    "IgnoreRules",
    "Layout",
    "Member",
    "SourceStats",
    "SplitArchive",
    "TarStream",
    "TreeSize",
    "UploadStopped",
    "check_tree",
    "members_stream",
    "read_file",
    "source_root",
    "split_tar_stream",
    "tar_stream",
    "tree_archive",
    "upload_parts",
    "walk",
]

IGNORE_FILE = ".s2iignore"
CACHE_MANIFEST = "buildpy-cache.json"  # cachedir.MANIFEST: what marks a cache directory
_BLOCK = 512
_SKIP_HINT = f"or list it in {IGNORE_FILE} to leave it out of the build"

Warn = Callable[[str], None]


# --------------------------------------------------------------------------- ignore rules

# pathspec (its gitignore patterns, as documented) turns each pattern into a regex; the
# rest is ours. Not pathspec.GitIgnoreSpec: it answers "is this file ignored?" from the
# whole path, and gets directories themselves wrong ("a/**" would drop the directory a,
# "!*" then "a/" would keep it), while the walker needs directories and already prunes.

# "a/**" is everything below a, but pathspec's regex for it matches a itself: "a/**/*" is
# the same to git and is not.
_TRAILING_STARS = re.compile(r"(^|/)\*\*(/?)\Z")
# In a regex: an escaped character, or a whole [...] class.
_ESCAPE_OR_CLASS = re.compile(r"\\.|\[\^?\]?(?:\\.|[^]\\])*\]", re.DOTALL)


# In a glob: an escaped character, a whole [...] class, or a run of two or more stars.
_GLOB_STARS = re.compile(r"\\.|\[[!^]?\]?[^]]*\]|\*{2,}", re.DOTALL)


def _collapse_stars(pattern: str) -> str:
    """Each run of stars as git's wildmatch reads it: ``**`` when the run is a whole path
    segment, else one ``*``. Each star would otherwise become a ``[^/]*`` of its own,
    and a run of them backtracks exponentially (found by fuzzing: 18 stars took 13 s
    on a 13-character name)."""
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern

    def one(found: re.Match[str]) -> str:
        run = found[0]
        if not run.startswith("*"):
            return run  # an escape or a class, kept as it is
        start, end = found.span()
        whole = (start == 0 or body[start - 1] == "/") and (end == len(body) or body[end] == "/")
        return "**" if whole else "*"

    return ("!" if negated else "") + _GLOB_STARS.sub(one, body)


def _no_slash_in_classes(regex: str) -> str:
    """Keep every ``[...]`` in ``regex`` from matching ``/``.

    pathspec copies a glob class into the regex as it is, so ``[!x]`` or ``[.-0]`` could
    match ``/``; in gitignore (fnmatch with FNM_PATHNAME) a class never does.
    """
    return _ESCAPE_OR_CLASS.sub(
        lambda m: m[0] if m[0].startswith("\\") else f"(?:(?!/){m[0]})", regex
    )


def _compile(line: str, lineno: int) -> RegexPattern | None:
    """One ``.s2iignore`` line as a pattern that matches a path itself, not its contents.

    The walker looks at each directory before its contents and drops an ignored one whole,
    as git does, so a pattern only has to say whether it matches the path it is given:
    ``\\Z`` stops pathspec's regex at the path's end (alone, ``foo`` also matches
    ``foo/bar``).
    """
    text = line.removesuffix("\r").lstrip()
    if not text.endswith("\\ "):  # "\ " keeps a trailing space, as in git
        text = text.rstrip()
    if text.startswith("#") or not text.removeprefix("!").strip("/"):
        return None  # blank, a comment, or only slashes (which match nothing in git either)
    text = _TRAILING_STARS.sub(r"\1**/*\2", _collapse_stars(text))
    from pathspec import RegexPattern
    from pathspec.patterns.gitignore.basic import GitIgnoreBasicPattern

    try:
        regex, include = GitIgnoreBasicPattern.pattern_to_regex(text)
        if regex is None:
            return None
        with warnings.catch_warnings():
            # re warns that "[[" or "&&" in a class may mean a set operation one day;
            # today they are literal characters, as in a glob.
            warnings.simplefilter("ignore", FutureWarning)
            compiled = re.compile(rf"(?:{_no_slash_in_classes(regex)})\Z", re.DOTALL)
    except (ValueError, re.error) as exc:  # pathspec's GitIgnorePatternError, or re's
        if isinstance(exc, re.error):  # without its position, which is in our regex
            reason = exc.msg
        else:
            reason = "a \\ at the end or before / escapes nothing"
        raise SourceError(
            f"{IGNORE_FILE}, line {lineno}: bad pattern {line.strip()!r} ({reason})",
            "fix the pattern: a character range goes from low to high, e.g. [a-z]; "
            "write \\\\ for a literal backslash",
        ) from exc
    return RegexPattern(compiled, include)


class IgnoreRules:
    """The parsed rules of one ``.s2iignore``; matches posix paths relative to the root."""

    def __init__(self, patterns: Sequence[RegexPattern] = ()) -> None:
        self._spec: PathSpec[RegexPattern] | None = None  # no rules: nothing to import
        if patterns:
            from pathspec import PathSpec

            # The simple backend: re2 and hyperscan, when installed, would recompile the
            # regexes, and they have no lookahead.
            self._spec = PathSpec(patterns, backend="simple")

    @classmethod
    def from_text(cls, text: str) -> IgnoreRules:
        """Parse ``.s2iignore`` text (a bad pattern raises SourceError)."""
        lines = text.removeprefix("\ufeff").split("\n")
        patterns = (_compile(line, n) for n, line in enumerate(lines, start=1))
        return cls([pattern for pattern in patterns if pattern is not None])

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        """Read ``root/.s2iignore``; a missing file means no rules."""
        path = root / IGNORE_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise SourceError(
                f"cannot read {path}: {exc.strerror or exc}", "make it readable, or remove it"
            ) from exc
        # surrogateescape: patterns may name files whose names are not UTF-8.
        return cls.from_text(data.decode("utf-8", "surrogateescape"))

    def __bool__(self) -> bool:
        return self._spec is not None

    def ignored_here(self, relpath: str, is_dir: bool) -> bool:
        """Whether the rules exclude ``relpath`` itself, not looking at its parents."""
        # pathspec tells a directory by its trailing "/"; separators=(): a backslash is
        # part of a name, not a separator.
        if self._spec is None:
            return False
        subject = relpath + "/" if is_dir else relpath
        return bool(self._spec.match_file(subject, separators=()))

    def ignored(self, relpath: str, is_dir: bool) -> bool:
        """Whether ``relpath`` is left out: it, or a directory above it, is excluded."""
        parts = relpath.strip("/").split("/")
        for depth in range(1, len(parts)):
            if self.ignored_here("/".join(parts[:depth]), True):
                return True
        return self.ignored_here("/".join(parts), is_dir)


# --------------------------------------------------------------------------- walking


@dataclass(frozen=True)
class Entry:
    """One thing under the source root; ``relpath`` is posix and relative to the root."""

    relpath: str
    path: Path
    kind: Literal["dir", "file", "symlink"]
    mode: int  # permission bits only
    mtime: int  # whole seconds
    size: int = 0  # regular files only
    target: str | None = None  # symlinks only


def _mtime(st: os.stat_result) -> int:
    """Whole seconds, rounded down (also for mtimes before 1970)."""
    return st.st_mtime_ns // 1_000_000_000


def _check_root(root: Path) -> os.stat_result:
    try:
        st = root.stat()
    except FileNotFoundError as exc:
        raise SourceError(
            f"source directory {root} does not exist",
            "check the path; a relative path starts at the current directory",
        ) from exc
    except OSError as exc:
        raise SourceError(
            f"cannot read source directory {root}: {exc.strerror or exc}",
            "check the path and its permissions",
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise SourceError(
            f"source {root} is not a directory", "pass the directory that holds your application"
        )
    return st


def read_file(path: Path) -> bytes:
    """A file of the source, read whole; SourceError (with what to do) when it cannot be."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(
            f"cannot read {path}: {exc.strerror or exc}",
            f"make it readable (chmod u+r) {_SKIP_HINT}",
        ) from exc


def source_root(path: Path) -> Path:
    """The application's directory, resolved; SourceError when it is missing, no directory,
    or cannot be listed."""
    _check_root(path)
    _list_dir(path)
    return path.resolve()


@dataclass(frozen=True)
class TreeSize:
    """What the upload will hold of the tree: regular files and their bytes."""

    files: int = 0
    bytes: int = 0


def check_tree(root: Path, rules: IgnoreRules, *, warn: Warn | None = None) -> TreeSize:
    """Walk the tree as the upload will: SourceError for what cannot be read, ``warn``
    for what is skipped or huge; return its size. Done before any container exists, so
    such a tree costs none; the upload walks it again (without warnings) and still fails
    on what changed."""
    files = size = 0
    for entry in walk(root, rules, warn=warn):
        if entry.kind == "file":
            files += 1
            size += entry.size
    return TreeSize(files, size)


def _list_dir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        raise SourceError(
            f"cannot read directory {path}: {exc.strerror or exc}",
            f"make it readable (chmod u+rx) {_SKIP_HINT}",
        ) from exc


def _make_entry(item: os.DirEntry[str], relpath: str, warn: Warn | None) -> Entry | None:
    path = Path(item.path)
    try:
        st = item.stat(follow_symlinks=False)
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    except OSError as exc:
        raise SourceError(
            f"cannot read {path}: {exc.strerror or exc}",
            f"it may have changed during the build; retry, {_SKIP_HINT}",
        ) from exc
    mode, mtime = stat.S_IMODE(st.st_mode) & 0o777, _mtime(st)
    if stat.S_ISDIR(st.st_mode):
        return Entry(relpath, path, "dir", mode, mtime)
    if target is not None:
        return Entry(relpath, path, "symlink", mode, mtime, target=target)
    if stat.S_ISREG(st.st_mode):
        if not os.access(path, os.R_OK):
            raise SourceError(
                f"cannot read {path}: Permission denied",
                f"make it readable (chmod u+r) {_SKIP_HINT}",
            )
        if warn is not None:
            _warn_if_large(relpath, st, warn)
        return Entry(relpath, path, "file", mode, mtime, size=st.st_size)
    if warn is not None:
        warn(f"skipping {relpath}: sockets, FIFOs and device files cannot be archived")
    return None


LARGE_FILE = 256 * 1024 * 1024


def _warn_if_large(relpath: str, st: os.stat_result, warn: Warn) -> None:
    """A file that will take long to upload, or far more room in the image than on disk."""
    on_disk = st.st_blocks * 512
    if st.st_size >= LARGE_FILE and on_disk < st.st_size // 2:
        warn(
            f"{relpath} is sparse: {st.st_size / 2**20:.0f} MiB long but {on_disk / 2**20:.0f}"
            f" MiB on disk; it is uploaded, and stored in the image, in full ({_SKIP_HINT})"
        )
    elif st.st_size >= LARGE_FILE:
        warn(
            f"{relpath} is {st.st_size / 2**20:.0f} MiB: uploading it takes a while ({_SKIP_HINT})"
        )


def walk(root: Path, rules: IgnoreRules, *, warn: Warn | None = None) -> Iterator[Entry]:
    """Yield the non-ignored entries under ``root`` (not ``root`` itself).

    Order: sorted by name bytes at each level, parents before children. Symlinks are
    entries and never followed; sockets, FIFOs and devices are skipped (``warn`` is told).
    A directory that ``buildpy cache export`` wrote (it holds ``buildpy-cache.json``) is
    skipped with all it holds: CI keeps it in the checkout, and it belongs in no image.
    A missing root raises SourceError at once; unreadable directories/files raise it
    while iterating.
    """
    _check_root(root)
    return _walk(root, rules, warn)


def _is_cache_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CACHE_MANIFEST))


def _walk(root: Path, rules: IgnoreRules, warn: Warn | None) -> Iterator[Entry]:
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = [("", iter(_list_dir(root)))]
    while stack:
        prefix, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        relpath = prefix + item.name
        is_dir = item.is_dir(follow_symlinks=False)
        if rules.ignored_here(relpath, is_dir) or (is_dir and _is_cache_dir(item.path)):
            continue
        entry = _make_entry(item, relpath, warn)
        if entry is None:
            continue
        yield entry
        if entry.kind == "dir":
            stack.append((relpath + "/", iter(_list_dir(entry.path))))


def lookup(root: Path, rules: IgnoreRules, relpath: str) -> os.stat_result | None:
    """``relpath`` as the upload has it: its lstat, or None when the upload leaves it out
    (missing, ignored, below an ignored directory or a cache directory, or a socket,
    FIFO or device). ``"."`` is the root."""
    if relpath in (".", ""):
        return _check_root(root)
    parts = relpath.split("/")
    for depth in range(1, len(parts) + 1):
        here = "/".join(parts[:depth])
        try:
            st = os.lstat(root / here)
        except OSError:
            return None
        is_dir = stat.S_ISDIR(st.st_mode)
        if depth < len(parts) and not is_dir:
            return None
        if rules.ignored_here(here, is_dir) or (is_dir and _is_cache_dir(str(root / here))):
            return None
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return None
    return st


def listing(root: Path, rules: IgnoreRules, relpath: str) -> list[str] | None:
    """The names the upload holds in directory ``relpath`` (sorted as the walk sends
    them), or None when ``relpath`` is no directory of the upload."""
    st = lookup(root, rules, relpath)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return None
    prefix = "" if relpath in (".", "") else relpath + "/"
    names = []
    for item in _list_dir(root / prefix if prefix else root):
        is_dir = item.is_dir(follow_symlinks=False)
        if rules.ignored_here(prefix + item.name, is_dir) or (is_dir and _is_cache_dir(item.path)):
            continue
        if is_dir or item.is_file(follow_symlinks=False) or item.is_symlink():
            names.append(item.name)
    return names


# --------------------------------------------------------------------------- tar


@dataclass(frozen=True)
class Member:
    """An in-memory archive member at archive path ``name`` (not under ``dest``).

    A name ending in ``/`` is a directory (``data`` must be empty). ``mtime`` defaults
    to 0 so that output stays reproducible.
    """

    name: str
    data: bytes
    mode: int = 0o644
    mtime: int = 0


@dataclass(frozen=True)
class SourceStats:
    """What one :func:`tar_stream` sent: regular files (tree and extras), archive bytes."""

    files: int
    bytes: int


def _archive_path(name: str, what: str) -> str:
    """Validate a relative archive path and return it without a trailing slash."""
    clean = name.rstrip("/")
    parts = clean.split("/")
    if not clean or clean.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{what} must be a relative path without '.' or '..', got {name!r}")
    return clean


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _group_like_owner(mode: int, is_dir: bool) -> int:
    """Group 0 gets read and write, and execute where the owner has it (as fix-permissions)."""
    mode |= 0o060
    if is_dir or mode & 0o100:
        mode |= 0o010
    return mode


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def _open_regular(entry: Entry) -> tuple[int, os.stat_result]:
    """Open a file found by walk without following a symlink swapped in since."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(entry.path, flags)
    except OSError as exc:
        raise SourceError(
            f"cannot read {entry.path}: {exc.strerror or exc}",
            f"make it readable (chmod u+r) {_SKIP_HINT}",
        ) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise SourceError(
            f"{entry.path} changed while the source was being archived",
            f"stop whatever writes to the source and retry, {_SKIP_HINT}",
        )
    return fd, st


@dataclass(frozen=True)
class Layout:
    """Where the tree lands in the archive (``dest``), who owns every member, and whether
    group 0 gets the owner's access (as S2I's fix-permissions gives it, for arbitrary
    UIDs in group 0)."""

    dest: str = "src"
    uid: int = 1001
    gid: int = 0
    group_like_owner: bool = False


class _Archive:
    """Builds tar records and hands the bytes out in chunks of about ``chunk_size``."""

    def __init__(self, owner: Layout, chunk_size: int) -> None:
        self.uid, self.gid, self.chunk_size = owner.uid, owner.gid, chunk_size
        self.group_like_owner = owner.group_like_owner
        self.buf = bytearray()
        self.total = 0
        self.files = 0
        self.dirs: set[str] = set()  # directories written, filled only when extras need it

    def add(self, data: bytes) -> Iterator[bytes]:
        self.buf += data
        self.total += len(data)
        if len(self.buf) >= self.chunk_size:
            yield self.take()

    def take(self) -> bytes:
        chunk = bytes(self.buf)
        self.buf.clear()
        return chunk

    def room(self) -> int:
        return max(self.chunk_size - len(self.buf), 1)

    def header(
        self, name: str, kind: bytes, mode: int, mtime: int, size: int = 0, linkname: str = ""
    ) -> Iterator[bytes]:
        if self.group_like_owner and kind != tarfile.SYMTYPE:
            mode = _group_like_owner(mode, kind == tarfile.DIRTYPE)
        block = ustar_header(name, kind, mode, self.uid, self.gid, size, mtime, linkname)
        if block is None:  # a long or non-ASCII name, a large number: PAX records
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.size = kind, mode, mtime, size
            info.uid, info.gid, info.uname, info.gname = self.uid, self.gid, "", ""
            info.linkname = linkname
            block = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        return self.add(block)

    def end(self) -> Iterator[bytes]:
        """The end-of-archive blocks, then whatever is still buffered."""
        yield from self.add(b"\0" * (2 * _BLOCK))
        if self.buf:
            yield self.take()

    def parent_dirs(self, path: str) -> Iterator[bytes]:
        """Entries (0o755, mtime 0) for the directories above ``path`` not yet written."""
        for name in _parents(path):
            if name not in self.dirs:
                self.dirs.add(name)
                yield from self.header(name, tarfile.DIRTYPE, 0o755, 0)


_USTAR_MAGIC = b"ustar\x0000"
_OWNERS_AND_DEVICES = bytes(32 + 32 + 8 + 8 + 155)  # uname, gname, devmajor, devminor, prefix


def ustar_header(
    name: str, kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, linkname: str
) -> bytes | None:
    """The block tarfile writes (PAX format, no user or group names) for an entry that
    needs no PAX record, made directly: tarfile's general path was about a quarter of the
    archive's CPU for a tree of small files. None when the entry needs PAX records (a name
    or link over 100 bytes or not ASCII, a number too large for its field)."""
    if kind == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    if not (name.isascii() and linkname.isascii() and len(name) <= 100 and len(linkname) <= 100):
        return None
    if not (0 <= uid < 8**7 and 0 <= gid < 8**7 and 0 <= size < 8**11 and 0 <= mtime < 8**11):
        return None
    block = b"%s%07o\0%07o\0%07o\0%011o\0%011o\0        %s%s%s%s" % (
        name.encode().ljust(100, b"\0"),
        mode & 0o7777,
        uid,
        gid,
        size,
        mtime,
        kind,
        linkname.encode().ljust(100, b"\0"),
        _USTAR_MAGIC,
        _OWNERS_AND_DEVICES,
    )
    block = block.ljust(_BLOCK, b"\0")
    # the checksum: the sum of the block's bytes with its own field as eight spaces
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]


def _file_records(out: _Archive, entry: Entry, name: str) -> Iterator[bytes]:
    fd, st = _open_regular(entry)
    with os.fdopen(fd, "rb", buffering=0) as f:
        mode = stat.S_IMODE(st.st_mode) & 0o777
        yield from out.header(name, tarfile.REGTYPE, mode, _mtime(st), st.st_size)
        remaining = st.st_size
        while remaining:
            # A whole chunk read while nothing is buffered goes out as read: no copies.
            whole = not out.buf and remaining >= out.chunk_size
            data = f.read(out.chunk_size if whole else min(remaining, out.room()))
            if not data:
                break
            remaining -= len(data)
            if whole:
                out.total += len(data)
                yield data
            else:
                yield from out.add(data)
        if remaining or f.read(1):
            raise SourceError(
                f"{entry.path} changed size while being archived",
                f"stop whatever writes to it and retry, {_SKIP_HINT}",
            )
    out.files += 1
    yield from out.add(_padding(st.st_size))


def _entry_records(out: _Archive, entry: Entry, name: str) -> Iterator[bytes]:
    if entry.kind == "file":
        return _file_records(out, entry, name)
    kind = tarfile.DIRTYPE if entry.kind == "dir" else tarfile.SYMTYPE
    return out.header(name, kind, entry.mode, entry.mtime, linkname=entry.target or "")


def _member_records(out: _Archive, member: Member) -> Iterator[bytes]:
    name = _archive_path(member.name, "a member name")
    yield from out.parent_dirs(name)
    if member.name.endswith("/"):
        out.dirs.add(name)
        yield from out.header(name, tarfile.DIRTYPE, member.mode & 0o7777, member.mtime)
        return
    size = len(member.data)
    yield from out.header(name, tarfile.REGTYPE, member.mode & 0o7777, member.mtime, size)
    out.files += 1
    yield from out.add(member.data)
    yield from out.add(_padding(size))


class TarStream(Iterator[bytes]):
    """The chunks of one archive, and once they have all been read, what they held."""

    def __init__(self, chunks: Iterator[bytes], out: _Archive) -> None:
        self._chunks = chunks
        self._out = out
        self.stats: SourceStats | None = None  # set when the stream is exhausted

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.stats = SourceStats(files=self._out.files, bytes=self._out.total)
            raise


def tar_stream(
    root: Path,
    *,
    rules: IgnoreRules,
    layout: Layout = Layout(),
    extra: Sequence[Member] = (),
    chunk_size: int = 1 << 20,
    warn: Warn | None = None,
) -> TarStream:
    """An uncompressed PAX tar of ``root`` under ``layout.dest/``, then the ``extra`` members.

    Deterministic for the same tree and arguments. Entries belong to the layout's owner with empty
    user/group names; permission bits and whole-second mtimes come from disk; symlinks
    are kept, hard links become regular files. Yielded chunks are at most about
    ``chunk_size`` plus one header. Once iterated to the end, the stream's ``stats`` says
    how many regular files and bytes it sent.

    Raises at once: SourceError for a missing root, ValueError for a bad ``dest``, member
    or ``chunk_size``. Raises while iterating: SourceError as :func:`walk` does, and for a
    file that changes while being read (the archive is never silently corrupt).
    """
    dest, root_st = _checked(root, layout, extra, chunk_size)
    out = _Archive(layout, chunk_size)
    return TarStream(_stream(out, (root, root_st), rules, dest, extra, warn), out)


def _checked(
    root: Path, layout: Layout, extra: Sequence[Member], chunk_size: int
) -> tuple[str, os.stat_result]:
    """The archive's arguments checked: ``dest`` cleaned, and the root's stat."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    dest = _archive_path(layout.dest, "dest")
    for member in extra:
        _archive_path(member.name, "a member name")
        if member.name.endswith("/") and member.data:
            raise ValueError(f"directory member {member.name!r} cannot have data")
    return dest, _check_root(root)


def _stream(
    out: _Archive,
    root: tuple[Path, os.stat_result],
    rules: IgnoreRules,
    dest: str,
    extra: Sequence[Member],
    warn: Warn | None,
) -> Iterator[bytes]:
    path, root_st = root
    yield from _tree_records(out, root_st, dest, walk(path, rules, warn=warn), extra)
    yield from out.end()


def _tree_records(
    out: _Archive,
    root_st: os.stat_result,
    dest: str,
    entries: Iterable[Entry],
    extra: Sequence[Member],
) -> Iterator[bytes]:
    """``dest`` and the parents above it, the entries under it, then the extras."""
    yield from out.parent_dirs(dest)
    out.dirs.add(dest)
    root_mode = stat.S_IMODE(root_st.st_mode) & 0o777
    yield from out.header(dest, tarfile.DIRTYPE, root_mode, _mtime(root_st))
    for entry in entries:
        name = f"{dest}/{entry.relpath}"
        if extra and entry.kind == "dir":
            out.dirs.add(name)
        yield from _entry_records(out, entry, name)
    for member in extra:
        yield from _member_records(out, member)


# A tree at least this large goes up in parallel streams (``upload_parts``). At 32 MiB
# splitting neither helped nor hurt on a 2-core host (benchmarks/README.md), at 128 MiB
# it took a quarter off; smaller trees go in one stream.
SPLIT_BYTES = 32 * 2**20
MAX_PARTS = 4


def upload_parts(size: TreeSize, cpus: int | None = None) -> int:
    """How many streams to send a tree of ``size`` in at once: one per CPU (at most
    ``MAX_PARTS``) for a tree of ``SPLIT_BYTES`` or more, else one. On the receiving
    side each stream is unpacked by a process of its own; one such process was the
    bottleneck of a large upload."""
    if size.bytes < SPLIT_BYTES:
        return 1
    return max(1, min(MAX_PARTS, cpus if cpus is not None else os.cpu_count() or 1))


class _SharedWalk:
    """One walk of the tree, handed out to the parts that send it a file or symlink at a
    time: a part busy with a large file asks for nothing, so the parts carry about equal
    bytes. Directories are not handed out but kept, for the stream that follows the
    parts. ``stop`` (one of them failed) cuts every part short at its next chunk."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self._entries = entries
        self._lock = threading.Lock()
        self._stopped = False
        self.dirs: list[Entry] = []

    def take(self) -> Entry | None:
        """The next file or symlink, or None at the end (or once stopped)."""
        with self._lock:
            for entry in self._entries:
                if self._stopped:
                    break
                if entry.kind != "dir":
                    return entry
                self.dirs.append(entry)
            return None

    def stop(self) -> None:
        self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped


class UploadStopped(Exception):
    """A part of a split upload was cut short because another part failed."""


def _part_records(out: _Archive, walk: _SharedWalk, dest: str) -> Iterator[bytes]:
    """A part's records; whoever sends it stops the walk when sending fails."""
    while (entry := walk.take()) is not None:
        for chunk in _entry_records(out, entry, f"{dest}/{entry.relpath}"):
            if walk.stopped:
                raise UploadStopped("another part of the upload failed")
            yield chunk
    yield from out.end()


class SplitArchive:
    """The members of one :func:`tar_stream` as ``parts``, sent at the same time on
    connections of their own, then ``last``, sent once every part is in.

    The parts take the tree's files and symlinks from one walk, as each is ready for
    more; they hold no directories (the receiving side makes those a part needs).
    ``last`` holds every directory (``dest`` and the walk's), as the one stream would,
    then the extras: sent after the parts, it gives each directory its owner, mode and
    mtime (which the parts' files changed), and the extras land over the tree as they
    do in one stream. What lands is what one stream gives; which part carries which
    file depends on how fast each is sent.
    """

    def __init__(
        self,
        walk: _SharedWalk,
        dest_and_root: tuple[str, os.stat_result],  # as _checked gives them
        layout: Layout,
        extra: Sequence[Member],
        *,
        parts: int,
        chunk_size: int,
    ) -> None:
        self._chunk_size = chunk_size
        self._walk, (self._dest, self._root_st) = walk, dest_and_root
        self._layout, self._extra = layout, extra
        outs = [_Archive(layout, self._chunk_size) for _ in range(parts)]
        self.parts = tuple(TarStream(_part_records(o, walk, self._dest), o) for o in outs)
        self._last: TarStream | None = None

    @property
    def stats(self) -> SourceStats | None:
        """What all the streams sent, once the last has been read to its end."""
        every = [s.stats for s in (*self.parts, self._last) if s is not None and s.stats]
        if len(every) <= len(self.parts):  # the last not sent, or not all read
            return None
        return SourceStats(sum(s.files for s in every), sum(s.bytes for s in every))

    def stop(self) -> None:
        """Cut every part short: each raises UploadStopped instead of its next chunk
        (another part failed, or the build was interrupted)."""
        self._walk.stop()

    def last(self) -> TarStream:
        """The directories and the extras; ask once every part has been read to its end."""
        if any(part.stats is None for part in self.parts):
            raise RuntimeError("the last stream of a split archive goes after its parts")
        out = _Archive(self._layout, self._chunk_size)
        records = _tree_records(out, self._root_st, self._dest, self._walk.dirs, self._extra)
        self._last = TarStream(itertools.chain(records, out.end()), out)
        return self._last


def split_tar_stream(
    root: Path,
    *,
    rules: IgnoreRules,
    parts: int,
    layout: Layout = Layout(),
    extra: Sequence[Member] = (),
    chunk_size: int = 1 << 20,
) -> SplitArchive:
    """What :func:`tar_stream` sends, in ``parts`` streams and one after them
    (:class:`SplitArchive`). Raises as tar_stream does."""
    if parts < 1:
        raise ValueError("parts must be positive")
    checked = _checked(root, layout, extra, chunk_size)
    shared = _SharedWalk(_walk(root, rules, None))
    return SplitArchive(shared, checked, layout, extra, parts=parts, chunk_size=chunk_size)


def tree_archive(
    root: Path,
    *,
    rules: IgnoreRules,
    size: TreeSize,
    layout: Layout = Layout(),
    extra: Sequence[Member] = (),
) -> TarStream | SplitArchive:
    """The upload of a tree whose size ``check_tree`` gave: one stream, or as many as
    :func:`upload_parts` says for a large tree."""
    parts = upload_parts(size)
    if parts == 1:
        return tar_stream(root, rules=rules, layout=layout, extra=extra)
    return split_tar_stream(root, rules=rules, parts=parts, layout=layout, extra=extra)


def members_stream(members: Sequence[Member], *, uid: int = 1001, gid: int = 0) -> Iterator[bytes]:
    """An archive of in-memory members only, owned by uid/gid (parents added as needed)."""
    for member in members:
        _archive_path(member.name, "a member name")
    out = _Archive(Layout(uid=uid, gid=gid), 1 << 20)
    for member in members:
        yield from _member_records(out, member)
    yield from out.end()
