"""The scenario apps' wheelhouse: made by `buildpy wheelhouse`, kept between test runs.

One directory, ~/.cache/buildpy/test-wheelhouse, holds what every scenario app needs on
every builder under test (wheels of several Python versions side by side, as a site's
wheelhouse would). `buildpy wheelhouse` fills it from the loopback index, once per
builder image and set of dependency inputs: a stamp records each run, so a later session
on the same machine downloads nothing and runs nothing unless a builder or an app's
dependency files changed. Apps with the same inputs (five apps ask only for gunicorn)
are collected once. Concurrent sessions may share it: `buildpy wheelhouse` moves each
new file in with one rename.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from buildpy import dependencies, environment

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildpy"
DIRECTORY = CACHE / "test-wheelhouse"
STAMPS = CACHE / "test-wheelhouse.stamps"
STAMP_DAYS = 30  # stamps of builders not seen for this long are removed
BUILDPY = [sys.executable, "-m", "buildpy"]


def inputs(app: Path) -> str | None:
    """A digest of what decides the app's installs; None when it installs nothing."""
    selected = dict(dependencies.select(app).contents)
    selected.pop(".python-version", None)
    if not selected:
        return None
    # The variables that choose installers (ENABLE_PIPENV, ENABLE_MICROPIPENV, ...) come from
    # .s2i/environment, which is not among the dependency files: two apps with the same lock
    # and different installers need different tools collected.
    s2i_environment = app / ".s2i" / "environment"
    text = s2i_environment.read_text() if s2i_environment.is_file() else ""
    values = environment.parse_env_text(text, ".s2i/environment")
    digest = hashlib.sha256(repr(sorted(dependencies.install_variables(values).items())).encode())
    for name, data in sorted(selected.items()):
        digest.update(f"\0{name}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def image_id(ref: str) -> str:
    return subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@dataclass(frozen=True)
class AppsWheelhouse:
    """The ``apps_wheelhouse`` fixture: ``ready(builder, apps)`` returns the directory once it
    holds what those apps need on that builder."""

    podman_url: str
    index_url: str  # a PEP 503 index on 127.0.0.1

    def ready(self, builder: str, apps: Iterable[Path]) -> Path:
        DIRECTORY.mkdir(parents=True, exist_ok=True)
        STAMPS.mkdir(parents=True, exist_ok=True)
        builder_id = image_id(builder)[:16]
        for app in apps:
            digest = inputs(app)
            if digest is None:
                continue
            stamp = STAMPS / f"{builder_id}-{digest[:16]}"
            if not stamp.exists():
                self.fill(app, builder)
            stamp.touch()  # in use: not old
        _forget_old_stamps()
        return DIRECTORY

    def fill(self, app: Path, builder: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`buildpy wheelhouse APP DIR` from the loopback index; fails the test when it fails."""
        cmd = [*BUILDPY, "--log-format", "json", "wheelhouse", str(app), str(DIRECTORY)]
        cmd += ["--builder", builder]
        cmd += ["--index-url", self.index_url, "--network", "host", *args]
        env = {**os.environ, "CONTAINER_HOST": self.podman_url}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"buildpy wheelhouse {app.name} failed:\n{done.stderr[-4000:]}")
        return done


def _forget_old_stamps() -> None:
    oldest = time.time() - STAMP_DAYS * 86400
    for stamp in STAMPS.iterdir():
        if stamp.stat().st_mtime < oldest:
            stamp.unlink(missing_ok=True)
