"""``buildpy wheelhouse``: collect what a build will install, for an air-gapped build later.

On a machine that reaches an index, the builder's own assemble runs in its
``wheelhouse`` phase (label ``io.buildpy.assemble-phases``) over the whole source,
with the same variables a build would have (``.s2i/environment``, ``--env-file``,
``-e``: they decide between pip, pipenv and micropipenv). Each install step
downloads instead of installing, for the builder's Python and platform, into the
directory, bind-mounted writable at the place a build reads it from. A second
run adds only what is missing, and needs no network when nothing is.

The container runs as root: rootless, that is the user who runs buildpy, so the
files are theirs; with root Podman, assemble gives new files the directory's owner.
A build then uses the directory with ``--wheelhouse DIR`` and no index.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from buildpy import build, scripts
from buildpy.container import Output
from buildpy.engine import Engine
from buildpy.errors import BuilderImageError, UsageError
from buildpy.indexes import Wheelhouse
from buildpy.layer import PHASES_LABEL
from buildpy.plan import BuildPlan
from buildpy.session import BuildSession

PHASE = "wheelhouse"
ARCHIVES = (".whl", ".tar.gz", ".zip", ".tar.bz2")


@dataclass(frozen=True)
class Filled:
    """What one ``buildpy wheelhouse`` run left in the directory."""

    path: Path
    added: tuple[str, ...]
    total: int
    seconds: float


def fill(plan: BuildPlan, wheelhouse: Wheelhouse, engine: Engine, out: Output) -> Filled:
    """Collect into ``wheelhouse`` what building ``plan``'s source installs."""
    if "assemble" in plan.source_scripts:
        raise UsageError(
            "the source brings its own assemble (.s2i/bin/assemble), which has no wheelhouse"
            " phase: buildpy cannot tell what it installs",
            "fill the wheelhouse with `pip download -d DIR ...` inside the builder image",
        )
    started = time.monotonic()
    before = archives(wheelhouse.path)
    # No download cache: the wheelhouse is one, and a dependency layer is not made.
    plan = replace(plan, wheelhouse=wheelhouse, options=replace(plan.options, cache=False))
    with BuildSession.start(plan, engine, out) as session:
        _require_phase(session)
        upload = build.source_archive(plan, session.build_env(PHASE, PIP_ROOT_USER_ACTION="ignore"))
        # As root: see the module's docstring.
        with session.container(session.builder.id, plan.image_env, {}, user="0") as container:
            container.upload(scripts.UPLOAD_DIR, upload)
            container.assemble(session.out).check()
    after = archives(wheelhouse.path)
    added = tuple(sorted(after - before))
    return Filled(wheelhouse.path, added, len(after), time.monotonic() - started)


def archives(path: Path) -> set[str]:
    """The distribution files in a wheelhouse directory (not its staging directories)."""
    return {p.name for p in path.iterdir() if p.is_file() and p.name.endswith(ARCHIVES)}


def _require_phase(session: BuildSession) -> None:
    phases = session.builder.labels.get(PHASES_LABEL, "").replace(",", " ").split()
    if PHASE not in phases:
        raise BuilderImageError(
            f"builder image {session.builder.ref} cannot fill a wheelhouse: its label"
            f" {PHASES_LABEL} does not list {PHASE}",
            "use buildpy's builders, rebuilt with `buildpy builder build`, or name one with"
            " --builder",
        )
