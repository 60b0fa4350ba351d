"""Fuzz targets: each takes raw bytes and fails (raises) only on a bug.

* ``env_file``: ``parse_env_text`` raises nothing but ``EnvFileError``; what parses
  renders back to text that parses to the same values; any dict of valid keys and
  renderable values survives render and parse.
* ``ignore_rules``: ``IgnoreRules.from_text`` raises nothing but ``SourceError``;
  ``ignored`` raises nothing, answers the same for a path however it is written
  (``a/b``, ``/a/b``, ``a/b/``), for the same rules written with CRLF or a byte order
  mark, and for everything below a directory it ignores.
* ``tar_writer``: ``tar_stream`` over a small tree made from the bytes is a tar that
  ``tarfile`` reads back with the same names, kinds, contents and link targets, and is
  the same bytes whatever the chunk size.

Run by ``test_fuzz.py``: with atheris (coverage-guided, in a subprocess:
``python fuzz_main.py TARGET -runs=N ...``) when it is installed, else through
hypothesis on random bytes.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from buildpy import environment, source
from buildpy.errors import EnvFileError, SourceError

# --------------------------------------------------------------------------- env files


def env_file(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        values = environment.parse_env_text(text, "fuzz")
    except EnvFileError:
        pass
    else:
        assert environment.parse_env_text(environment.render_env_text(values), "x") == values
    generated = _env_values(text)
    assert environment.parse_env_text(environment.render_env_text(generated), "x") == generated


def _env_values(text: str) -> dict[str, str]:
    """A dict of valid keys and values an env file can hold, made from ``text``."""
    values = {}
    for item in text.split("\x1f")[:8]:
        key, _, value = item.partition("\x1e")
        key = re.sub(r"[^A-Za-z0-9_]", "", key) or "K"
        if key[0].isdigit():
            key = "_" + key
        values[key] = value.replace("\n", "").replace("\0", "")
    return values


# --------------------------------------------------------------------------- ignore rules

# More runs of stars than this in one pattern backtrack polynomially in the length of a
# name (an open bug, a strict xfail in test_source.py): such inputs are skipped, so that
# a fuzz run stays bounded in time and finds what else there is.
MAX_STARS = 3


def ignore_rules(data: bytes) -> None:
    patterns, _, paths = data.partition(b"\0")
    text = patterns.decode("utf-8", "surrogateescape")
    if any(len(re.findall(r"\*+", line)) > MAX_STARS for line in text.split("\n")):
        return  # known slow: test_many_stars_in_one_segment_match_in_linear_time
    try:
        rules = source.IgnoreRules.from_text(text)
    except SourceError:
        return
    variants = [source.IgnoreRules.from_text(text)]
    if "\r" not in text:
        variants.append(source.IgnoreRules.from_text(text.replace("\n", "\r\n")))
    if not text.startswith("\ufeff"):
        variants.append(source.IgnoreRules.from_text("\ufeff" + text))
    for raw in paths.split(b"\n")[:16]:
        parts = [p for p in os.fsdecode(raw).split("/") if p not in ("", ".", "..")]
        if not parts:
            continue
        path = "/".join(parts)
        for is_dir in (False, True):
            answer = rules.ignored(path, is_dir)
            for written in (f"/{path}", f"{path}/", f"/{path}/"):
                assert rules.ignored(written, is_dir) == answer, (text, written)
            for other in variants:
                assert other.ignored(path, is_dir) == answer, (text, path)
        if rules.ignored(path, True):
            assert rules.ignored(f"{path}/x", False), (text, path)
            assert rules.ignored(f"{path}/x/y", True), (text, path)


# --------------------------------------------------------------------------- tar writer

_NAME_BYTES = b"abcXYZ019_-. #'\"\\*?[]!~\t\xc3\xa9\xff\xfe"
SCRATCH = "BUILDPY_FUZZ_SCRATCH"  # the directory tar_writer makes its trees in


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        value = self.data[self.at] if self.at < len(self.data) else 0
        self.at += 1
        return value

    def more(self) -> bool:
        return self.at < len(self.data)

    def take(self, size: int) -> bytes:
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk


def _name(reader: _Reader) -> str:
    size = reader.byte() % 12 + 1
    raw = bytes(_NAME_BYTES[b % len(_NAME_BYTES)] for b in reader.take(size)) or b"n"
    if raw in (b".", b".."):
        raw += b"_"
    return os.fsdecode(raw)


def _make_tree(root: Path, reader: _Reader) -> dict[str, tuple[str, bytes | str]]:
    """Files, directories and symlinks from the bytes; what each relpath should hold."""
    made: dict[str, tuple[str, bytes | str]] = {}
    here = ""
    while reader.more() and len(made) < 24:
        op, name = reader.byte() % 5, _name(reader)
        rel = f"{here}{name}"
        if rel in made or op == 4:
            here = here.rsplit("/", 2)[0] + "/" if here.count("/") > 1 else ""
            continue
        path = root / rel
        if op == 0 or op == 3:
            content = reader.take(reader.byte() * 7)
            path.write_bytes(content)
            path.chmod(0o755 if reader.byte() % 2 else 0o644)
            made[rel] = ("file", content)
        elif op == 1:
            path.mkdir()
            made[rel] = ("dir", b"")
            here = rel + "/"
        else:
            target = _name(reader) if reader.byte() % 2 else "/etc/" + _name(reader)
            path.symlink_to(target)
            made[rel] = ("symlink", target)
    return made


def tar_writer(data: bytes) -> None:
    reader = _Reader(data)
    chunk = reader.byte() * 13 + 1
    root = Path(os.environ.get(SCRATCH) or tempfile.gettempdir()) / f"fuzz-tree-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    made = _make_tree(root, reader)
    layout = source.Layout("src", 1001, 0)
    rules = source.IgnoreRules()
    whole = b"".join(source.tar_stream(root, rules=rules, layout=layout))
    assert whole == b"".join(source.tar_stream(root, rules=rules, layout=layout, chunk_size=chunk))
    found: dict[str, tuple[str, bytes | str]] = {}
    with tarfile.open(fileobj=io.BytesIO(whole), errors="surrogateescape") as archive:
        for member in archive:
            assert member.name == "src" or member.name.startswith("src/"), member.name
            assert (member.uid, member.gid) == (1001, 0)
            rel = member.name[len("src/") :]
            if member.isdir():
                found[rel] = ("dir", b"")
            elif member.issym():
                found[rel] = ("symlink", member.linkname)
            else:
                handle = archive.extractfile(member)
                assert handle is not None
                found[rel] = ("file", handle.read())
    found.pop("", None)  # src itself
    assert found == made, (found, made)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "env-file parser": env_file,
    "ignore matcher": ignore_rules,
    "tar writer": tar_writer,
}
