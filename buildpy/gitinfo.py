"""What a git checkout says about the source, for the image's labels."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

Runner = Callable[[Sequence[str], Path], Optional[str]]

_FORMAT = "%H%x00%an <%ae>%x00%cI%x00%s"


@dataclass(frozen=True)
class GitInfo:
    commit: str
    author: str
    date: str
    message: str
    ref: str = ""


def run_git(args: Sequence[str], cwd: Path) -> str | None:
    """git's stdout, or None when git is missing or says no (and, without starting it,
    where it could find no repository)."""
    if not _may_be_in_a_checkout(cwd):
        return None
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _may_be_in_a_checkout(path: Path) -> bool:
    """Whether git could find a repository for ``path``: a ``.git`` there or above it, or
    ``GIT_DIR`` set. Sources outside a checkout (a copy, an unpacked archive) then cost
    no git process (about 2 ms a build here)."""
    if os.environ.get("GIT_DIR"):
        return True
    here = path.resolve()
    return any((directory / ".git").exists() for directory in (here, *here.parents))


def describe(root: Path, run: Runner = run_git) -> GitInfo | None:
    """GitInfo for the checkout containing ``root``, or None when it is not one."""
    out = run(["log", "-1", f"--format={_FORMAT}"], root)
    if not out:
        return None
    parts = out.rstrip("\n").split("\x00")
    if len(parts) != 4:
        return None
    commit, author, date, message = parts
    ref = (run(["rev-parse", "--abbrev-ref", "HEAD"], root) or "").strip()
    return GitInfo(commit, author, date, message, "" if ref == "HEAD" else ref)
