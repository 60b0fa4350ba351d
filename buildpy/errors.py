"""Error types that carry a hint and an exit code.

Every failure a user can meet is one of these. ``cli.main`` is the only place
that turns them into an ``ERROR`` line, a hint and an exit code; the rest of
the package raises and never exits. Exit codes are documented in
``docs/reference/exit-codes.md`` and must not be renumbered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class BuildpyError(Exception):
    """Base class: a message, an optional hint (what to do next), an exit code."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(BuildpyError):
    """The command line itself is wrong (same code argparse uses)."""

    exit_code = 2


class SourceError(BuildpyError):
    """The source directory is missing, unreadable or not a directory."""

    exit_code = 3


class EnvFileError(BuildpyError):
    """An environment file or a -e/--build-env argument does not parse."""

    exit_code = 4

    def __init__(self, origin: str, line: int | None, problem: str, hint: str | None = None):
        where = f"{origin}, line {line}" if line is not None else origin
        super().__init__(f"{where}: {problem}", hint)
        self.origin = origin
        self.line = line
        self.problem = problem


class EngineUnavailable(BuildpyError):
    """Podman is not installed, not answering, or cannot start containers."""

    exit_code = 5


class BuilderImageError(BuildpyError):
    """The builder image is missing or does not carry usable S2I scripts."""

    exit_code = 6


class AssembleFailed(BuildpyError):
    """The assemble script exited non-zero."""

    exit_code = 7

    def __init__(self, status: int, tail: Sequence[str], hint: str | None = None):
        shown = "\n".join(f"  | {line}" for line in tail)
        message = f"assemble exited with status {status}"
        if shown:
            message += f"; its last lines were:\n{shown}"
        super().__init__(message, hint)
        self.status = status
        self.tail = list(tail)


class IndexUnreachable(AssembleFailed):
    """assemble found that a package index it was given does not answer (exit 7, as every
    assemble failure): nothing is installed from anywhere else instead."""

    def __init__(self, status: int, tail: Sequence[str], said: str):
        super().__init__(status, tail, INDEX_HINT)
        index, _, why = said.partition(" ")  # assemble says "URL (reason)"
        self.message = f"the package index {index} cannot be reached from the build"
        if why:
            self.message += f" {why}"
        self.index = index


INDEX_HINT = (
    "check the index URL and its credentials (--index-url, --extra-index-url, or"
    " PIP_INDEX_URL / PIP_EXTRA_INDEX_URL from --build-env, -e or .s2i/environment); an"
    " index on this machine's 127.0.0.1 needs --network host, a proxy needs its variables"
    " (--build-env HTTPS_PROXY=...). buildpy never falls back to packages cached from"
    " another index"
)


class EngineError(BuildpyError):
    """Podman refused or failed an operation in the middle of a build."""

    exit_code = 8


class PullFailed(BuildpyError):
    """A registry could not give the builder image: unreachable, unknown name, TLS, login."""

    exit_code = 9


class PublishFailed(BuildpyError):
    """The image was built and is in local storage, but ``--push`` or ``--output`` failed."""

    exit_code = 10


class CacheDirError(BuildpyError):
    """A cache directory cannot be imported (or replaced): not buildpy's, damaged, or made
    against another builder image. Nothing was imported."""

    exit_code = 11


class Interrupted(BuildpyError):
    """The user pressed Ctrl-C or the process received SIGTERM."""

    exit_code = 130


class TimedOut(BuildpyError):
    """The build took longer than ``--timeout``; it was stopped like an interrupt."""

    exit_code = 124  # as timeout(1)


EXIT_CODES: tuple[type[BuildpyError], ...] = (
    BuildpyError,
    UsageError,
    SourceError,
    EnvFileError,
    EngineUnavailable,
    BuilderImageError,
    AssembleFailed,
    EngineError,
    PullFailed,
    PublishFailed,
    CacheDirError,
    Interrupted,
    TimedOut,
)
