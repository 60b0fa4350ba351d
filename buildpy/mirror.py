"""What buildpy's s2i/assemble and s2i/run look at, taken from the source: for ``buildpy plan``.

Inside the image the scripts decide from the files in ``$HOME`` (the source, as
``.s2iignore`` leaves it) and from variables. ``assemble_mirror`` and ``run_mirror``
repeat those decisions in Python; this module gives them the source (``SourceView``),
the variables with their origins (``Variables``), and an answer to the one question
only the built image can answer for sure, "is Django (or gunicorn) installed?":
whether the files the installer reads name it (``names``).

tests/integration/test_s2i_apps.py builds every app in tests/apps and checks that what
the plan says is what the image does, so the mirror cannot drift from the scripts.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from buildpy import redact
from buildpy.environment import Resolved
from buildpy.source import IgnoreRules, read_file

DEFAULT_HOME = "/opt/app-root/src"


@dataclass(frozen=True)
class Step:
    """One thing a script will run, as a person would type it, and why."""

    command: str
    reason: str


@dataclass(frozen=True)
class Variables:
    """The variables a script sees, each with where its value comes from."""

    resolved: Mapping[str, Resolved] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()  # never shown (--build-env)

    def value(self, name: str) -> str:
        found = self.resolved.get(name)
        return found.value if found is not None else ""

    def is_set(self, name: str) -> bool:
        """Set to a non-empty value: what the scripts' ``[ -n "${NAME:-}" ]`` tests."""
        return bool(self.value(name))

    def cite(self, name: str) -> str:
        """``NAME=value (origin)`` for a reason, the value masked as in the variable list."""
        found = self.resolved.get(name)
        if found is None:
            return f"{name} unset"
        value, _ = redact.shown(name, found.value, hidden=name in self.hidden)
        return f"{name}={value} ({found.place})"


@dataclass(frozen=True)
class SourceView:
    """The source as assemble leaves it in ``$HOME``: only what ``.s2iignore`` keeps."""

    root: Path
    rules: IgnoreRules = field(default_factory=IgnoreRules)
    home: str = DEFAULT_HOME

    def locate(self, path: str, directory: str = "") -> str | None:
        """``path`` (absolute, or relative to ``directory``, itself relative to ``$HOME`` or
        absolute) as a path relative to the source root; "." for ``$HOME`` itself; None
        when it lies outside the source, where buildpy cannot look."""
        joined = posixpath.normpath(str(PurePosixPath(self.home, directory or ".", path or ".")))
        home = posixpath.normpath(self.home)
        if joined == home:
            return "."
        if not joined.startswith(home.rstrip("/") + "/"):
            return None
        return joined[len(home.rstrip("/")) + 1 :]

    def is_file(self, relpath: str) -> bool:
        return self._kept(relpath, is_dir=False) and (self.root / relpath).is_file()

    def is_dir(self, relpath: str) -> bool:
        if relpath == ".":
            return True
        return self._kept(relpath, is_dir=True) and (self.root / relpath).is_dir()

    def is_executable(self, relpath: str) -> bool:
        """The owner may execute it (the upload keeps the mode; the owner is the user)."""
        return self.is_file(relpath) and bool((self.root / relpath).stat().st_mode & 0o100)

    def text(self, relpath: str) -> str:
        """A file's text; empty when it is not there."""
        if not self.is_file(relpath):
            return ""
        return read_file(self.root / relpath).decode("utf-8", errors="replace")

    def files_named(self, name: str, depth: int = 2) -> list[str]:
        """``find $HOME -maxdepth DEPTH -name NAME``: the top one first, then the rest sorted."""
        found = [name] if self.is_file(name) else []
        if depth > 1 and self.root.is_dir():
            for child in sorted(self.root.iterdir()):
                candidate = f"{child.name}/{name}"
                if self.is_dir(child.name) and self.is_file(candidate):
                    found.append(candidate)
        return found

    def _kept(self, relpath: str, is_dir: bool) -> bool:
        return not self.rules.ignored(relpath, is_dir=is_dir)


def names(files: Mapping[str, bytes], read: Sequence[str], package: str) -> str | None:
    """The first of the files ``read`` that names ``package`` as something to install."""
    pattern = _package_pattern(package)
    for name in read:
        data = files.get(name)
        if data is not None and pattern.search(_without_comments(data)):
            return name
    return None


def _package_pattern(package: str) -> re.Pattern[str]:
    """The distribution name as a whole word, ``-``, ``_`` and ``.`` alike (PEP 503)."""
    words = [re.escape(part) for part in re.split(r"[-_.]+", package)]
    return re.compile(r"(?<![\w.-])" + r"[-_.]+".join(words) + r"(?![\w.-])", re.IGNORECASE)


def _without_comments(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    kept = (line.split(" #", 1)[0] for line in text.splitlines())
    return "\n".join(line for line in kept if not line.lstrip().startswith("#"))
