"""``buildpy build SOURCE --as-containerfile DIR``: the build as a Containerfile and its context.

For clusters that build with Buildah (OpenShift builds, Tekton, Shipwright): DIR gets a
Containerfile and the files it copies, so that ``podman build`` or ``buildah bud`` in
DIR makes the image ``buildpy build`` makes. No container is started and no Podman is
needed: everything comes from the ``BuildPlan`` (``plan.make``) and the same helpers the
build uses (``layer.split_reason``, ``scripts.choose``, ``session.build_variables``,
``buildfiles.reader``); ``render`` turns them into text and is pure.

What DIR holds:

* ``Containerfile``: stage ``dependencies`` (the dependency files only, then assemble's
  dependency phase) and the final stage (the whole source, assemble's application
  phase, the image's ENV, LABELs and CMD), or one stage when buildpy would build in
  one phase;
* ``dependencies/``, ``src/``, ``scripts/``: what buildpy uploads to ``/tmp``, with
  the modes buildpy's archive gives (``.s2iignore`` applied), copied with
  ``--chown`` to the builder's user as buildpy's upload owns them;
* ``secrets/``: the build-only files, each given to the build with ``podman build
  --secret``: ``build-env`` (the values of ``--build-env`` and ``--index-url``,
  sourced by each RUN line, never in the Containerfile, the image or its history),
  ``ca-bundle`` and each ``--secret``. Mode 0600, in no COPY;
* ``wheelhouse/`` with ``--wheelhouse``: bind-mounted read-only during assemble.

The builder is not inspected (no Podman here): buildpy's own builders
(``BUILDPY_BUILDER_PREFIX``/python-*) are known; any other builder is taken to follow
the S2I convention (scripts in /usr/libexec/s2i, user 1001 in group 0) and is built in
one phase. USER, WORKDIR and ENTRYPOINT are the builder's, as buildpy's commit keeps
them: inherited from FROM (USER and WORKDIR also written out for buildpy's builders).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from buildpy import __version__, builders, buildfiles, layer, log, scripts, source
from buildpy.config import builder_prefix
from buildpy.dependencies import fetch_variables, layer_variables
from buildpy.engine import ImageInfo
from buildpy.environment import shell_export_script
from buildpy.errors import UsageError
from buildpy.indexes import WHEELHOUSE_TARGET
from buildpy.plan import CA_TARGET, BuildPlan
from buildpy.session import build_variables

_log = log.get(__name__)

CONTAINERFILE = "Containerfile"
HEADER = "# Written by `buildpy build --as-containerfile`"  # marks a DIR buildpy may replace
S2I_SCRIPTS = "image:///usr/libexec/s2i"
S2I_OWNER = "1001:0"  # sclorg's images and buildpy's: USER 1001, group 0
BUILD_ENV_ID = "buildpy-build-env"
BUILD_ENV_TARGET = "/dev/shm/buildpy-build-env"  # a tmpfs, like the CA bundle's
CA_ID = "buildpy-ca-bundle"
SECRETS_DIR = "secrets"
USER_LAYERS = ("--index-url", "--build-env")  # build-only values that may be credentials
REFUSED = ("--incremental", "--push", "--output", "--cache-from", "--cache-to")


@dataclass(frozen=True)
class Secret:
    """A build-only file: ``podman build --secret id=ID,src=secrets/ID``, at ``target``."""

    id: str
    target: str
    data: bytes = b""


@dataclass(frozen=True)
class Stage:
    """One assemble run: what it copies to /tmp and the variables it gets."""

    copies: tuple[tuple[str, str], ...]  # (directory in DIR, target)
    line: Mapping[str, str]  # build-only values written on the RUN line
    hidden: Mapping[str, str]  # build-only values in the build-env secret


@dataclass(frozen=True)
class Recipe:
    """What the Containerfile says, decided from a plan; ``render`` writes it."""

    builder: ImageInfo
    known: bool  # buildpy's own builder: USER and WORKDIR are written out
    owner: str  # uid:gid of the copied files
    assemble: str
    run: str
    dependencies: Stage | None  # None: one phase
    application: Stage
    stage_env: Mapping[str, str]  # the dependency stage's ENV (as its working container's)
    image_env: Mapping[str, str]
    labels: Mapping[str, str]
    secrets: tuple[Secret, ...]
    wheelhouse: bool
    one_phase_reason: str | None


@dataclass(frozen=True)
class Written:
    """The directory written, how many assemble phases it runs, and how to build it."""

    directory: Path
    phases: int
    command: tuple[str, ...]


def refuse(given: Iterable[str]) -> None:
    """A UsageError for options a Containerfile cannot carry out (``given``: their names)."""
    names = set(given)
    found = [name for name in REFUSED if name in names]
    if found:
        raise UsageError(
            f"--as-containerfile does not take {', '.join(found)}: no image is built here",
            "build the Containerfile with `podman build`, then push or save that image",
        )
    if "--scripts-url" in names:
        raise UsageError(
            "--as-containerfile does not take --scripts-url: the Containerfile takes scripts"
            " only from the builder or the source",
            "put the scripts in the source's .s2i/bin (copied with the source), or build"
            " with buildpy",
        )


def builder_facts(ref: str) -> tuple[ImageInfo, bool]:
    """The builder as far as it can be known without Podman, and whether it is buildpy's."""
    prefix, _, name = ref.rpartition("/")
    base = name.split(":", 1)[0]
    if prefix == builder_prefix() and base in builders.BUILDERS:
        labels = {
            scripts.SCRIPTS_URL_LABELS[0]: S2I_SCRIPTS,
            layer.PHASES_LABEL: "dependencies,application,wheelhouse",
        }
        home = "/opt/app-root/src"
        return ImageInfo("", ref, S2I_OWNER, home, env={"HOME": home}, labels=labels), True
    return ImageInfo("", ref, S2I_OWNER, labels={scripts.SCRIPTS_URL_LABELS[0]: S2I_SCRIPTS}), False


def recipe(plan: BuildPlan) -> Recipe:
    """What the Containerfile must do for this plan: buildpy's decisions, not new ones."""
    builder, known = builder_facts(plan.options.builder)
    chosen = scripts.choose(builder.labels, set(plan.source_scripts), builder.ref)
    reason = layer.split_reason(plan, builder)
    private = {k for item in plan.build_layers if item.origin in USER_LAYERS for k in item.values}
    source_copies = [("src", scripts.SOURCE_DEST)]
    if plan.source_scripts:
        source_copies.append(("scripts", scripts.SCRIPTS_DEST))
    deps = None
    if reason is None:
        fetch = fetch_variables(plan.image_env)
        deps = _stage(
            plan,
            (("dependencies", scripts.SOURCE_DEST),),
            build_variables(plan, None, "dependencies", fetch),
            private,
        )
    application = _stage(
        plan,
        tuple(source_copies),
        build_variables(plan, None, None if deps is None else "application"),
        private,
    )
    return Recipe(
        builder=builder,
        known=known,
        owner=builder.user,
        assemble=chosen.assemble,
        run=chosen.run,
        dependencies=deps,
        application=application,
        stage_env=layer_variables(plan.image_env),
        image_env=dict(plan.image_env),
        labels=dict(plan.labels),
        secrets=_secrets(plan),
        wheelhouse=plan.wheelhouse is not None,
        one_phase_reason=reason,
    )


def _stage(
    plan: BuildPlan,
    copies: tuple[tuple[str, str], ...],
    values: Mapping[str, str],
    private: set[str],
) -> Stage:
    """Split the build-only values: the user's (maybe credentials) go in the secret."""
    hidden = {k: v for k, v in values.items() if k in private and plan.build_env.get(k) == v}
    line = {k: v for k, v in values.items() if k not in hidden}
    return Stage(copies, line, hidden)


def _secrets(plan: BuildPlan) -> tuple[Secret, ...]:
    found = []
    for item in plan.files:
        if item.target == CA_TARGET:
            found.append(Secret(CA_ID, CA_TARGET, item.data))
        else:
            ident = PurePosixPath(item.target).name
            if ident in (BUILD_ENV_ID, CA_ID):
                raise UsageError(
                    f"{item.origin}: the id {ident} is buildpy's own in a Containerfile",
                    "give the secret another id",
                )
            found.append(Secret(ident, item.target, item.data))
    return tuple(found)


def render(recipe: Recipe, command: Iterable[str] = ()) -> str:
    """The Containerfile's text."""
    lines = [
        HEADER,
        f"# (buildpy {__version__}). Build it in this directory:",
        f"#   {shlex.join(command)}",
        f"# The builder must be pullable where this is built: {recipe.builder.ref}",
    ]
    final_from = recipe.builder.ref
    if recipe.dependencies is not None:
        lines += [
            "",
            "# The dependency layer: only the files that decide dependencies, then assemble's",
            "# dependency phase. A change elsewhere in the source reuses this stage's layers.",
            f"FROM {recipe.builder.ref} AS dependencies",
        ]
        lines += _env("ENV", recipe.stage_env)
        lines += _assemble(recipe, recipe.dependencies)
        final_from = "dependencies"
    else:
        lines += ["", f"# One assemble phase: {recipe.one_phase_reason}"]
    lines += ["", "# The application: the whole source, then assemble.", f"FROM {final_from}"]
    lines += _env("ENV", recipe.image_env)
    lines += _assemble(recipe, recipe.application)
    lines += _env("LABEL", recipe.labels)
    if recipe.known:
        lines.append(f"USER {recipe.builder.user}")
        lines.append(f"WORKDIR {recipe.builder.workdir}")
    else:
        lines.append("# USER, WORKDIR and ENTRYPOINT: the builder's, as FROM gives them")
    lines.append(f"CMD {json.dumps([recipe.run])}")
    return "\n".join(lines) + "\n"


def _env(instruction: str, values: Mapping[str, str]) -> list[str]:
    """``ENV``/``LABEL`` with one pair a line, quoted for the Containerfile parser."""
    if not values:
        return []
    pairs = [f"{key}={_quoted(key, value)}" for key, value in values.items()]
    return [f"{instruction} " + " \\\n    ".join(pairs)]


def _quoted(key: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise UsageError(
            f"{key}: a value with a line break cannot be written into a Containerfile",
            "give the value without line breaks, or build with `buildpy build`",
        )
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _assemble(recipe: Recipe, stage: Stage) -> list[str]:
    """COPY the stage's files, then RUN assemble with its mounts and build-only values."""
    lines = [
        f"COPY --chown={recipe.owner} {directory}/ {target}/" for directory, target in stage.copies
    ]
    uid, gid, mode = buildfiles.reader(recipe.builder.user)
    owned = f"uid={uid},gid={gid},mode={mode:04o}"
    mounts = []
    steps = []
    if stage.hidden:
        mounts.append(f"--mount=type=secret,id={BUILD_ENV_ID},target={BUILD_ENV_TARGET},{owned}")
        steps.append(f". {BUILD_ENV_TARGET}")
    for secret in recipe.secrets:
        mounts.append(f"--mount=type=secret,id={secret.id},target={secret.target},{owned}")
    if recipe.wheelhouse:
        mounts.append(f"--mount=type=bind,source=wheelhouse,target={WHEELHOUSE_TARGET}")
    for key, value in stage.line.items():
        _quoted(key, value)  # no line breaks
    assignments = [f"{key}={shlex.quote(value)}" for key, value in stage.line.items()]
    steps.append(" ".join([*assignments, shlex.quote(recipe.assemble)]))
    parts = [*mounts, " && ".join(steps)]
    return [*lines, "RUN " + " \\\n    ".join(parts)]


def build_command(plan: BuildPlan, recipe: Recipe) -> tuple[str, ...]:
    """The ``podman build`` that builds DIR as buildpy would, run in DIR."""
    command = ["podman", "build"]
    if plan.options.network:
        command += ["--network", plan.options.network]
    secrets = list(recipe.secrets)
    stages = (recipe.dependencies, recipe.application)
    if any(stage is not None and stage.hidden for stage in stages):
        secrets.insert(0, Secret(BUILD_ENV_ID, BUILD_ENV_TARGET))
    for secret in secrets:
        command += ["--secret", f"id={secret.id},src={SECRETS_DIR}/{secret.id}"]
    if plan.options.tag:
        command += ["--tag", plan.options.tag]
    return (*command, ".")


def write(plan: BuildPlan, directory: Path) -> Written:
    """Write the Containerfile and its context into ``directory``.

    ``directory`` must be missing, empty, or one this function wrote before (replaced
    whole); anything else is a UsageError, so no file of the user's is ever removed.
    """
    made = recipe(plan)
    command = build_command(plan, made)
    target = directory.resolve()
    _check_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise _unwritable(target, exc) from exc
    try:
        _fill(plan, made, command, scratch, skip=(target, scratch))
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    except OSError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise _unwritable(target, exc) from exc
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    phases = 1 if made.dependencies is None else 2
    return Written(target, phases, command)


def _unwritable(target: Path, exc: OSError) -> UsageError:
    return UsageError(
        f"--as-containerfile {target}: cannot write it: {exc.strerror or exc}",
        "name a directory you can write, with room for a copy of the source",
    )


def _check_target(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir() or target.is_symlink():
        raise UsageError(f"--as-containerfile {target}: not a directory", "name a directory")
    if not any(target.iterdir()) or _ours(target):
        return
    raise UsageError(
        f"--as-containerfile {target}: the directory has files that buildpy did not write",
        "name a new or empty directory; one that --as-containerfile wrote is replaced",
    )


def _ours(target: Path) -> bool:
    try:
        with open(target / CONTAINERFILE, encoding="utf-8") as handle:
            return handle.readline().rstrip("\n") == HEADER
    except (OSError, UnicodeDecodeError):
        return False


def _fill(
    plan: BuildPlan, made: Recipe, command: tuple[str, ...], out: Path, skip: tuple[Path, ...]
) -> None:
    os.chmod(out, 0o755)
    if made.dependencies is not None:
        deps = out / "dependencies"
        for name, data in plan.dependencies.contents:
            _write(deps / name, data, 0o644)
        deps.mkdir(mode=0o755, exist_ok=True)
    _copy_source(plan, out / "src", skip)
    for name, path in sorted(plan.source_scripts.items()):
        _write(out / "scripts" / name, source.read_file(path), 0o755)
    hidden = {**(made.dependencies.hidden if made.dependencies else {}), **made.application.hidden}
    if hidden:
        _write(out / SECRETS_DIR / BUILD_ENV_ID, shell_export_script(hidden).encode(), 0o600)
    for secret in made.secrets:
        _write(out / SECRETS_DIR / secret.id, secret.data, 0o600)
    if plan.wheelhouse is not None:
        _copy_tree(plan.wheelhouse.path, out / "wheelhouse")
    (out / ".containerignore").write_text(f"{SECRETS_DIR}\n", encoding="utf-8")
    (out / CONTAINERFILE).write_text(render(made, command), encoding="utf-8")


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _copy_source(plan: BuildPlan, dest: Path, skip: tuple[Path, ...]) -> None:
    """The tree buildpy uploads to /tmp/src (``source.walk``, as ``source.tar_stream``
    reads it): modes and whole-second mtimes from disk, symlinks kept, hard links as
    files; ``skip``s (DIR itself, when it is inside the source) left out."""
    root = plan.root
    skipped = [f"{p.relative_to(root).as_posix()}" for p in skip if _inside(p, root)]
    dest.mkdir()
    dirs: list[tuple[Path, int, int]] = [(dest, root.stat().st_mode & 0o777, 0)]
    for entry in source.walk(root, plan.rules):
        if any(entry.relpath == s or entry.relpath.startswith(f"{s}/") for s in skipped):
            continue
        path = dest / entry.relpath
        if entry.kind == "dir":
            path.mkdir(mode=0o700)
            dirs.append((path, entry.mode, entry.mtime))
        elif entry.kind == "symlink":
            os.symlink(entry.target or "", path)
        else:
            _write(path, source.read_file(entry.path), entry.mode)
            os.utime(path, (entry.mtime, entry.mtime))
    for path, mode, mtime in reversed(dirs):  # children first: a 0555 directory is filled
        os.chmod(path, mode)
        if mtime:
            os.utime(path, (mtime, mtime))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return path != root


def _copy_tree(src: Path, dest: Path) -> None:
    """A wheelhouse into the context: hard links where the file system allows, else copies."""

    def link(source_path: str, target: str) -> None:
        try:
            os.link(source_path, target)
        except OSError:
            shutil.copy2(source_path, target)

    shutil.copytree(src, dest, copy_function=link)
