"""Throwaway users for the tests that need a fresh one (made with useradd as root, removed
with their processes and files), and how to run Python and buildpy as them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def throwaway(subordinate_ids: bool) -> Iterator[str]:
    """A new user with a home, with or without subordinate ids (useradd's own ranges);
    gone afterwards, with every process and file it left."""
    if os.getuid() != 0:
        pytest.skip("making users needs root")
    name = f"bpuser{uuid.uuid4().hex[:8]}"
    no_ids = [] if subordinate_ids else ["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]
    subprocess.run(["useradd", "-m", *no_ids, name], check=True, capture_output=True)
    uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True).stdout)
    try:
        yield name
    finally:
        end_processes(uid)
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
        for base in ("/tmp", "/var/tmp"):  # Podman's run directory, a killed build's socket
            for entry in Path(base).iterdir():
                with contextlib.suppress(OSError):
                    if entry.lstat().st_uid == uid:
                        subprocess.run(["rm", "-rf", str(entry)], check=False)
        for path in ("/etc/passwd", "/etc/subuid", "/etc/subgid"):
            assert f"{name}:" not in Path(path).read_text()


def end_processes(uid: int) -> None:
    """The user's own processes (Podman's rootless pause process): TERM, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes(uid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not processes(uid):
                return
            time.sleep(0.1)


def processes(uid: int, pattern: str | None = None) -> list[int]:
    """The user's processes, those whose command line holds ``pattern`` if given."""
    match = ["-f", pattern] if pattern else []
    found = subprocess.run(["pgrep", "-u", str(uid), *match], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def user_shell(name: str) -> list[str]:
    """``name``'s clean environment, as runuser gives it: no XDG_RUNTIME_DIR, no session."""
    env = ["PATH=/usr/local/bin:/usr/bin:/bin", f"HOME=/home/{name}", f"USER={name}"]
    return ["runuser", "-u", name, "--", "env", "-i", *env, f"LOGNAME={name}"]


def user_python(name: str) -> list[str]:
    """How to run Python as ``name`` with this checkout and its virtualenv's packages."""
    python = sys.executable
    if subprocess.run([*user_shell(name), python, "-c", ""], capture_output=True).returncode:
        python = "/usr/bin/python3"  # this interpreter lives where the user cannot read
    paths = {str(ROOT), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    return [*user_shell(name), f"PYTHONPATH={':'.join(sorted(paths))}", python]


def as_user(name: str) -> list[str]:
    """How to run buildpy as ``name``."""
    prefix = [*user_python(name), "-m", "buildpy"]
    probe = subprocess.run([*prefix, "--version"], capture_output=True, text=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"buildpy cannot run as another user here: {probe.stderr[-300:]}")
    return prefix
