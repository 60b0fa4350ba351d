"""Which files decide a project's dependencies, and the key of its dependency layer. Pure.

A build can run in two phases when the builder supports it: first only the
files that decide dependencies go into a container that installs them, and
the result is kept as a dependency image, keyed by a hash of the builder
image, those files and the variables that change installation. A later build
with the same key skips straight to the second phase.

Some projects cannot split: a requirements file that installs the project
itself (``-e .``, ``./pkg``, ``file:`` links) or a Pipfile with a local
``path`` needs the whole source, so those are built in one phase, with the
reason said in the build output.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildpy import redact
from buildpy.source import IgnoreRules, read_file

# Names at the source root that installers read to decide what to install.
ROOT_FILES = (
    "Pipfile",
    "Pipfile.lock",
    "poetry.lock",
    "pyproject.toml",
    "pylock.toml",
    "setup.cfg",
    "setup.py",
    "uv.lock",
    ".python-version",
)
ROOT_GLOBS = ("requirements*.txt", "constraints*.txt", "requirements/*.txt", "requirements/*.in")
# Variables whose value changes what gets installed, or how.
INSTALL_VARIABLES = (
    "ENABLE_PIPENV",
    "ENABLE_MICROPIPENV",
    "PIN_PIPENV_VERSION",
    "PIN_UV_VERSION",
    "UPGRADE_PIP_TO_LATEST",
    "DISABLE_SETUP_PY_PROCESSING",
    "DISABLE_PYPROJECT_TOML_PROCESSING",
)
INSTALL_PREFIXES = ("PIP_", "PIPENV_", "MICROPIPENV_", "UV_", "POETRY_")
# Installation variables that change how packages are fetched, not which ones: out of the
# key (a CA bundle's path or a longer timeout reinstalls nothing), and never in a layer's
# environment (assemble gets them as build-only values, so a reused layer carries none).
UNKEYED_VARIABLES = frozenset(
    {
        "PIP_CERT",
        "PIP_CLIENT_CERT",
        "PIP_CACHE_DIR",
        "PIP_NO_CACHE_DIR",
        "PIP_DEFAULT_TIMEOUT",
        "PIP_TIMEOUT",
        "PIP_RETRIES",
        "PIP_PROGRESS_BAR",
        "PIP_NO_COLOR",
        "PIP_NO_INPUT",
        "PIP_DISABLE_PIP_VERSION_CHECK",
        "PIP_QUIET",
        "PIP_VERBOSE",
        "PIPENV_CACHE_DIR",
        "PIPENV_VERBOSITY",
        "PIPENV_NOSPIN",
        "PIPENV_TIMEOUT",
        "PIPENV_INSTALL_TIMEOUT",
        "UV_CACHE_DIR",
        "UV_HTTP_TIMEOUT",
        "UV_HTTP_RETRIES",
        "UV_NO_PROGRESS",
        "POETRY_CACHE_DIR",
    }
)

_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)(?:\s+|=)(\S+)")
_EDITABLE = re.compile(r"^\s*(?:-e|--editable)(?:\s+|=)(\S+)")
_LOCAL_PATH = re.compile(r"^(?:\.{1,2}(?:/|$)|/|file:|git\+file:)")
_AT_FILE = re.compile(r"@\s*file:")
_PIPFILE_PATH = re.compile(r"""\bpath\s*=\s*["']""")
# uv.lock: a package from the source tree other than the project itself (".").
_UV_LOCAL = re.compile(r'source = \{ (?:editable|path|directory|virtual) = "(?!\.")([^"]+)"')
# poetry.lock: a package from a local directory or file.
_POETRY_LOCAL = re.compile(r'^type = "(directory|file)"\s*$', re.MULTILINE)


@dataclass(frozen=True)
class DependencyFiles:
    """The files that decide dependencies (read once, here), or why the project cannot
    be split."""

    contents: tuple[tuple[str, bytes], ...]
    needs_full_source: str | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """Their relative posix paths, sorted."""
        return tuple(name for name, _ in self.contents)


def select(root: Path, rules: IgnoreRules | None = None) -> DependencyFiles:
    """The dependency files present under ``root`` and not ignored, with their contents.

    The dependency phase must see exactly the files the application phase sees: a file
    ``.s2iignore`` leaves out is no dependency file either. An unreadable one is a
    ``SourceError``: the build would install from it.
    """
    rules = rules if rules is not None else IgnoreRules()
    found = {name for name in ROOT_FILES if (root / name).is_file()}
    for pattern in ROOT_GLOBS:
        found.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    found = {name for name in found if not rules.ignored(name, is_dir=False)}
    data = {name: read_file(root / name) for name in found}
    pending = sorted(n for n in found if n.endswith((".txt", ".in")))
    reason = None
    while pending:
        name = pending.pop()
        text = _text(data[name])
        reason = reason or requirements_need_source(text, name)
        for included in includes(text):
            rel = _normalise(Path(name).parent / included)
            if rel is None or rel in found or rules.ignored(rel, is_dir=False):
                continue
            if (root / rel).is_file():
                found.add(rel)
                data[rel] = read_file(root / rel)
                pending.append(rel)
    if "Pipfile" in found and reason is None:
        reason = pipfile_needs_source(_text(data["Pipfile"]))
    if reason is None:
        reason = lock_needs_source({name: data[name] for name in found})
    return DependencyFiles(tuple(sorted(data.items())), reason)


def requirements_need_source(text: str, name: str = "requirements.txt") -> str | None:
    """Why this requirements file needs the whole source, or None when it does not."""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        editable = _EDITABLE.match(line)
        target = editable.group(1) if editable else line
        if _LOCAL_PATH.match(target) or _AT_FILE.search(line):
            return f"{name} line {lineno} installs from the source tree ({line})"
    return None


def pipfile_needs_source(text: str) -> str | None:
    """Why this Pipfile needs the whole source (a local ``path`` package), or None."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if _PIPFILE_PATH.search(line) and not line.lstrip().startswith("#"):
            return f"Pipfile line {lineno} installs a local path ({line.strip()})"
    return None


def lock_needs_source(files: Mapping[str, bytes]) -> str | None:
    """Why uv.lock or poetry.lock needs the whole source (a package from a path in it)."""
    uv = _UV_LOCAL.search(_text(files.get("uv.lock", b"")))
    if uv:
        return f"uv.lock installs {uv.group(1)} from the source tree"
    poetry = _POETRY_LOCAL.search(_text(files.get("poetry.lock", b"")))
    if poetry:
        return f"poetry.lock installs a package from a local {poetry.group(1)}"
    return None


def includes(text: str) -> list[str]:
    """Files a requirements file pulls in with -r or -c."""
    return [m.group(1) for m in map(_INCLUDE.match, text.splitlines()) if m]


def with_includes(files: Mapping[str, bytes], name: str) -> list[str]:
    """``name`` and the files it pulls in with -r or -c, as far as ``files`` has them."""
    if name not in files:
        return []
    found, pending = [name], [name]
    while pending:
        current = pending.pop()
        for included in includes(_text(files[current])):
            rel = _normalise(Path(current).parent / included)
            if rel is not None and rel in files and rel not in found:
                found.append(rel)
                pending.append(rel)
    return found


def install_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables installers read: what or how dependencies are installed."""
    return {
        key: value
        for key, value in sorted(env.items())
        if key in INSTALL_VARIABLES or key.startswith(INSTALL_PREFIXES)
    }


def layer_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The installation variables that decide what a layer holds (its environment)."""
    return {k: v for k, v in install_variables(env).items() if k not in UNKEYED_VARIABLES}


def fetch_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The installation variables that only change how packages are fetched."""
    return {k: v for k, v in install_variables(env).items() if k in UNKEYED_VARIABLES}


def key_variables(env: Mapping[str, str]) -> dict[str, str]:
    """``layer_variables`` as the key sees them: credentials in URLs masked as everything
    buildpy shows masks them (a rotated token reaches the same index)."""
    return {k: redact.mask(v) for k, v in layer_variables(env).items()}


def key(builder_id: str, files: Sequence[tuple[str, bytes]], variables: Mapping[str, str]) -> str:
    """The dependency layer's key: same inputs, same key; any change, another key."""
    h = hashlib.sha256()
    # v2: layers made since working containers lack Podman's TERM and container
    # variables; a v1 layer has them in its image config, where every commit keeps them.
    h.update(b"buildpy-dependencies-v2\0")
    h.update(builder_id.encode() + b"\0")
    for name, data in sorted(files):
        h.update(f"file\0{name}\0{len(data)}\0".encode())
        h.update(data)
    for name, value in sorted(variables.items()):
        h.update(f"var\0{name}\0{len(value)}\0{value}\0".encode())
    return h.hexdigest()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _normalise(path: Path) -> str | None:
    """A relative path inside the source, or None when it leaves it."""
    parts: list[str] = []
    for part in path.as_posix().split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or None


# ------------------------------------------------------------ growing a dependency layer
#
# Adding a requirement should not reinstall all the others. A new dependency layer may
# start from an earlier one when nothing but requirements files changed and every line
# they had is still there: pip then installs only what is new. Anything else (a removed or
# edited line, another lock file, other variables, another builder) starts from the builder,
# so a layer never carries a package its requirements no longer ask for.

REQUIREMENTS_PATTERN = re.compile(r"^(?:requirements[^/]*\.txt|requirements/[^/]+\.txt)$")
MAX_RECORDED = 8192  # bytes of requirement lines kept in a label; larger sets never grow


def requirement_lines(files: Sequence[tuple[str, bytes]]) -> dict[str, list[str]]:
    """The requirement lines of each requirements file, comments and blanks dropped."""
    lines: dict[str, list[str]] = {}
    for name, data in sorted(files):
        if REQUIREMENTS_PATTERN.match(name):
            text = data.decode("utf-8", errors="replace")
            kept = [line.split(" #", 1)[0].strip() for line in text.splitlines()]
            lines[name] = sorted({line for line in kept if line and not line.startswith("#")})
    return lines


def fixed_digest(
    builder_id: str, files: Sequence[tuple[str, bytes]], variables: Mapping[str, str]
) -> str:
    """Everything but the requirement lines: these must match for a layer to grow."""
    others = [(name, data) for name, data in files if not REQUIREMENTS_PATTERN.match(name)]
    names = [(f"requirements-file:{n}", b"") for n, _ in files if REQUIREMENTS_PATTERN.match(n)]
    return key(builder_id, [*others, *names], variables)


def _digest(line: str) -> str:
    """A requirement line as recorded: a digest, since lines may hold index credentials
    (``--extra-index-url https://user:token@…``, ``git+https://token@…``) and the label
    is inherited by every application image built on the layer."""
    return hashlib.sha256(line.encode()).hexdigest()[:20]


def record(lines: Mapping[str, list[str]]) -> str | None:
    """Digests of the requirement lines as a label value, or None when too large to keep."""
    digests = {name: sorted(_digest(line) for line in kept) for name, kept in lines.items()}
    text = json.dumps(digests, sort_keys=True, separators=(",", ":"))
    return text if len(text.encode()) <= MAX_RECORDED else None


def _recorded(recorded: str) -> dict[str, set[str]] | None:
    """The line digests a label recorded, per file; None when not what ``record`` writes."""
    try:
        old = json.loads(recorded)
    except ValueError:
        return None
    if not isinstance(old, dict) or not all(isinstance(kept, list) for kept in old.values()):
        return None
    return {name: set(kept) for name, kept in old.items()}


def line_changes(
    recorded: str | None, lines: Mapping[str, list[str]]
) -> dict[str, tuple[int, int]] | None:
    """Per requirements file (of either side), how many lines ``lines`` adds to the
    recorded ones and how many it removes; None when nothing usable is recorded."""
    old = _recorded(recorded) if recorded else None
    return None if old is None else _line_changes(old, lines)


def _line_changes(
    old: Mapping[str, set[str]], lines: Mapping[str, list[str]]
) -> dict[str, tuple[int, int]]:
    new = {name: {_digest(line) for line in kept} for name, kept in lines.items()}
    changes = {}
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, set()), new.get(name, set())
        changes[name] = (len(after - before), len(before - after))
    return changes


def extends(recorded: str | None, lines: Mapping[str, list[str]]) -> bool:
    """True when ``lines`` keeps every recorded line and adds at least one."""
    old = _recorded(recorded) if recorded else None
    if old is None or set(old) != set(lines):
        return False
    changes = _line_changes(old, lines).values()
    return all(removed == 0 for _, removed in changes) and any(added for added, _ in changes)


def added(recorded: str | None, lines: Mapping[str, list[str]]) -> list[str]:
    """The requirement lines a grown layer adds to the recorded ones, in a stable order.

    Empty when any added line is an option or an include (``-r``, ``-c``,
    ``--index-url``, ...): those change more than what gets installed.
    """
    old = _recorded(recorded) if recorded else {}
    if old is None:
        return []
    new = sorted(
        {
            line
            for name, kept in lines.items()
            for line in kept
            if _digest(line) not in old.get(name, set())
        }
    )
    return [] if any(line.startswith("-") for line in new) else new


def can_grow(variables: Mapping[str, str]) -> bool:
    """Only pip's own install path grows layers (pipenv/micropipenv lock whole sets)."""
    return not variables.get("ENABLE_PIPENV") and not variables.get("ENABLE_MICROPIPENV")


# ------------------------------------------------------------ saying which input changed
#
# A dependency layer records digests of its inputs (label io.buildpy.dependencies.inputs),
# so that `buildpy plan` can say what changed since the newest earlier layer made from the
# same source: "requirements.txt changed", "PIP_INDEX_URL changed", "the builder changed".
# Digests only, never values: a variable may be a credential, a file may hold a token, and
# application images inherit the label.

DIGEST_CHARS = 20


@dataclass(frozen=True)
class InputChange:
    """One input that differs from an earlier layer's: a file, a variable or the builder."""

    kind: str  # "file", "variable" or "builder"
    name: str
    change: str  # file: added|removed|changed; variable: set|unset|changed; builder: changed
    detail: str = ""  # e.g. "2 lines added, 1 removed"

    def __str__(self) -> str:
        said = "the builder changed" if self.kind == "builder" else f"{self.name} {self.change}"
        return f"{said} ({self.detail})" if self.detail else said


@dataclass(frozen=True)
class InputDigests:
    """What a dependency layer was made from, as digests."""

    source: str  # of the source location
    builder: str  # the builder image's ID
    files: Mapping[str, str]
    variables: Mapping[str, str]

    @classmethod
    def of(
        cls,
        source_location: str,
        builder_id: str,
        files: Sequence[tuple[str, bytes]],
        variables: Mapping[str, str],
    ) -> InputDigests:
        return cls(
            source=source_digest(source_location),
            builder=builder_id,
            files={name: _short(data) for name, data in files},
            variables={
                name: _short(f"{name}\0{value}".encode()) for name, value in variables.items()
            },
        )

    def label(self) -> str | None:
        """The label value, or None when too large to keep."""
        text = json.dumps(
            {
                "source": self.source,
                "builder": self.builder,
                "files": self.files,
                "variables": self.variables,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return text if len(text.encode()) <= MAX_RECORDED else None

    @classmethod
    def from_label(cls, text: str | None) -> InputDigests | None:
        """What ``label`` wrote, or None for anything else."""
        try:
            data = json.loads(text or "")
        except ValueError:
            return None
        fields = ("source", "builder", "files", "variables")
        if not isinstance(data, dict) or not all(name in data for name in fields):
            return None
        if not isinstance(data["files"], dict) or not isinstance(data["variables"], dict):
            return None
        return cls(str(data["source"]), str(data["builder"]), data["files"], data["variables"])

    def changes_since(self, old: InputDigests) -> list[InputChange]:
        """What differs from ``old``: the builder, then files, then variables."""
        changes = (
            [InputChange("builder", "builder", "changed")] if old.builder != self.builder else []
        )
        changes += _differences("file", old.files, self.files, ("added", "removed"))
        changes += _differences("variable", old.variables, self.variables, ("set", "unset"))
        return changes


def source_digest(location: str) -> str:
    return _short(location.encode())


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def _differences(
    kind: str, old: Mapping[str, str], new: Mapping[str, str], words: tuple[str, str]
) -> list[InputChange]:
    added, removed = words
    found = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            found.append(InputChange(kind, name, added))
        elif name not in new:
            found.append(InputChange(kind, name, removed))
        elif old[name] != new[name]:
            found.append(InputChange(kind, name, "changed"))
    return found
