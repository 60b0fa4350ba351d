"""The build, as small stages: plan, inspect the builder, dependencies, assemble, commit.

``plan`` reads the source and the configuration and touches no engine; ``run``
carries a plan out against an ``Engine``. When the builder advertises a
dependency phase (label ``io.buildpy.assemble-phases``), the build runs in two
assemble runs: the files that decide dependencies first, kept as a cached
dependency image, then the whole source on top of it (see ``dependencies``).
Otherwise, and for builders such as sclorg's, it is one S2I assemble run.

The image's variables (``.s2i/environment``, ``--env-file``, ``-e``) are the
working container's environment, so the commit keeps them; build-only values
(``--build-env``, the CA bundle's paths, cache locations, the phase) never are
(see ``assemble``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable

from buildpy import (
    artifacts,
    cache,
    dependencies,
    environment,
    gitinfo,
    image,
    log,
    scripts,
    source,
)
from buildpy.assemble import (
    WRAPPER,
    ArchiveFactory,
    Owner,
    Reaper,
    assemble_and_commit,
    build_env_member,
    container_name,
    place_and_commit,
)
from buildpy.config import BuildOptions
from buildpy.engine import (
    CommitSpec,
    ContainerSpec,
    Engine,
    ImageInfo,
    Mount,
    VolumeMount,
)
from buildpy.errors import EngineError, SourceError, UsageError

_log = log.get(__name__)

S2I_ENVIRONMENT = ".s2i/environment"
CA_TARGET = "/dev/shm/buildpy-ca-bundle.crt"  # a tmpfs: the mount point is never committed
CA_VARIABLES = (
    "PIP_CERT",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
)
PHASES_LABEL = "io.buildpy.assemble-phases"
PHASE_VARIABLE = "BUILDPY_ASSEMBLE_PHASE"
APPLICATION_MARKER = "BUILDPY_APPLICATION_PHASE"  # printed by the dependency phase
APPLICATION_LABEL = "io.buildpy.application-phase"  # copy: nothing to run but placing source
ADDED_VARIABLE = "BUILDPY_ADDED_REQUIREMENTS"  # what a grown dependency layer adds


@dataclass(frozen=True)
class BuildPlan:
    """Everything decided before the engine is touched."""

    options: BuildOptions
    root: Path
    env_layers: tuple[environment.EnvLayer, ...]
    image_env: Mapping[str, str]
    build_env: Mapping[str, str]
    rules: source.IgnoreRules
    source_scripts: Mapping[str, Path]
    labels: Mapping[str, str]
    mounts: tuple[Mount, ...]
    dependencies: dependencies.DependencyFiles


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tag: str | None
    seconds: float
    phases: int = 1
    dependencies_reused: bool = False
    times: Mapping[str, float] = field(default_factory=dict)

    @property
    def assemble_seconds(self) -> float:
        return self.times.get("assemble", 0.0)


def plan(
    options: BuildOptions, describe: Callable[[Path], gitinfo.GitInfo | None] = gitinfo.describe
) -> BuildPlan:
    """Read the source and configuration into a plan; no engine involved."""
    root = _source_root(options.source)
    if options.incremental and not options.tag:
        raise UsageError(
            "--incremental needs --tag: the previous image under that tag gives the artifacts"
        )
    layers = _env_layers(root, options)
    build_env: dict[str, str] = {}
    mounts: tuple[Mount, ...] = ()
    if options.ca_bundle is not None:
        mounts = (Mount(str(_ca_bundle(options.ca_bundle)), CA_TARGET),)
        build_env.update({name: CA_TARGET for name in CA_VARIABLES})
    for arg in options.build_env:
        key, value = environment.parse_assignment(arg, "--build-env")
        build_env[key] = value
    return BuildPlan(
        options=options,
        root=root,
        env_layers=layers,
        image_env=environment.merge(*(layer.values for layer in layers)),
        build_env=build_env,
        rules=source.IgnoreRules.load(root),
        source_scripts=scripts.source_scripts(root),
        labels=image.output_labels(options.builder, str(root), describe(root)),
        mounts=mounts,
        dependencies=dependencies.select(root),
    )


def _source_root(path: Path) -> Path:
    if not path.exists():
        raise SourceError(f"source {path} does not exist", "give the directory of your application")
    if not path.is_dir():
        raise SourceError(f"source {path} is not a directory", "give the application's directory")
    return path.resolve()


def _ca_bundle(path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise UsageError(
            f"--ca-bundle {path}: not a readable file",
            "on Debian the host's bundle is /etc/ssl/certs/ca-certificates.crt,"
            " on RHEL /etc/pki/tls/certs/ca-bundle.crt",
        )
    return path.resolve()


def _env_layers(root: Path, options: BuildOptions) -> tuple[environment.EnvLayer, ...]:
    """The user's layers, lowest precedence first (the image's own ENV is below all)."""
    layers = []
    s2i_env = root / S2I_ENVIRONMENT
    if s2i_env.is_file():
        layers.append(
            environment.EnvLayer(
                S2I_ENVIRONMENT, environment.read_env_file(s2i_env, S2I_ENVIRONMENT)
            )
        )
    for path in options.env_files:
        layers.append(environment.EnvLayer(str(path), environment.read_env_file(path)))
    cli: dict[str, str] = {}
    for arg in options.env:
        key, value = environment.parse_assignment(arg, "-e")
        cli[key] = value
    if cli:
        layers.append(environment.EnvLayer("-e", cli))
    return tuple(layers)


def run(plan: BuildPlan, engine: Engine, output: BinaryIO | None = None) -> BuildResult:
    """Carry the plan out: dependencies (cached when possible), assemble, commit."""
    started = time.monotonic()
    out = output if output is not None else sys.stderr.buffer
    builder = engine.image(plan.options.builder)
    chosen = scripts.resolve(builder.labels, set(plan.source_scripts), builder.ref)
    volumes = (cache.downloads(engine),) if plan.options.cache else ()
    times: dict[str, float] = {}
    start, phase, reused, placing = builder.id, {}, False, False
    user = Owner(builder)
    reason = split_reason(plan, builder)
    # The reaper removes working containers while the application phase runs, and
    # waits for them before the build returns.
    with Reaper(engine) as reaper:
        if reason is None:
            start, reused, needs = _dependency_image(
                plan, engine, builder, user, chosen.assemble, volumes, out, times, reaper
            )
            phase = {PHASE_VARIABLE: "application"}
            placing = needs == "copy" and _can_place(plan, builder)
        else:
            _log.info("building in one phase", reason=reason)
        spec = _spec(plan, start, builder, chosen.assemble, plan.image_env, plan.labels, volumes)
        repository, tag = image.split_tag(plan.options.tag) if plan.options.tag else (None, None)
        commit = CommitSpec(image.commit_changes(builder, chosen.run), repository, tag)
        if placing:
            _log.info("placing the source: the application phase has nothing to run")
            home = PurePosixPath(builder.env["HOME"])
            place = _placed_source(plan, home.name)
            image_id, step = place_and_commit(
                engine, spec, user, str(home.parent), place, commit, reaper
            )
        else:
            archive = _source_archive(plan, {**_build_env(plan, volumes), **phase})
            with _incremental(plan, engine, builder, chosen.save_artifacts, out) as saved:
                uploads = [archive] if saved is None else [archive, saved]
                image_id, step = assemble_and_commit(
                    engine, spec, user, uploads, commit, out, reaper
                )
    times.update(upload=step.upload, assemble=step.assemble, commit=step.commit)
    seconds = time.monotonic() - started
    return BuildResult(image_id, plan.options.tag, seconds, 2 if phase else 1, reused, times)


@contextmanager
def _incremental(
    plan: BuildPlan, engine: Engine, builder: ImageInfo, save_script: str, out: BinaryIO
) -> Iterator[ArchiveFactory | None]:
    """Artifacts of the previous image, with --incremental and a previous image."""
    found = (
        engine.find_image(plan.options.tag)
        if plan.options.incremental and plan.options.tag
        else None
    )
    previous = found.id if found is not None else None
    if previous is None or not save_script:
        if plan.options.incremental:
            _log.info("no previous image to take artifacts from; building in full")
        yield None
        return
    with artifacts.previous_artifacts(engine, previous, builder, save_script, out) as saved:
        yield saved


def _can_place(plan: BuildPlan, builder: ImageInfo) -> bool:
    """Whether buildpy may place the source itself instead of running assemble again.

    The builder's own dependency phase says whether anything is left to run (it prints
    BUILDPY_APPLICATION_PHASE=copy); a source with its own scripts, or an incremental
    build, always runs assemble.
    """
    home = builder.env.get("HOME", "")
    return (
        home.startswith("/")
        and home != "/"
        and not plan.source_scripts
        and not plan.options.incremental
    )


def _placed_source(plan: BuildPlan, dest: str) -> ArchiveFactory:
    """The source as assemble would leave it in $HOME: owned by the user, group like owner."""

    def archive(uid: int, gid: int) -> Iterator[bytes]:
        return source.tar_stream(
            plan.root,
            rules=plan.rules,
            dest=dest,
            uid=uid,
            gid=gid,
            warn=lambda message: _log.warning(message),
            group_like_owner=True,
        )

    return archive


def _application_phase(tail: Sequence[str]) -> str:
    """What the dependency phase said the application phase needs: copy, else run."""
    for line in reversed(tail):
        if line.startswith(f"{APPLICATION_MARKER}="):
            return "copy" if line.split("=", 1)[1].strip() == "copy" else "run"
    return "run"


def split_reason(plan: BuildPlan, builder: ImageInfo) -> str | None:
    """Why this build cannot reuse a dependency layer, or None when it can."""
    phases = builder.labels.get(PHASES_LABEL, "").replace(",", " ").split()
    if not plan.options.cache:
        return "caching is off (--no-cache)"
    if "dependencies" not in phases:
        return f"builder {builder.ref} has no dependency phase (label {PHASES_LABEL})"
    if "assemble" in plan.source_scripts:
        return "the source brings its own assemble (.s2i/bin/assemble)"
    if plan.dependencies.needs_full_source:
        return plan.dependencies.needs_full_source + ": dependencies need the whole source"
    if not set(plan.dependencies.files) - {S2I_ENVIRONMENT, ".python-version"}:
        return "no dependency files (requirements.txt, Pipfile, pyproject.toml, ...)"
    return None


def _dependency_image(
    plan: BuildPlan,
    engine: Engine,
    builder: ImageInfo,
    user: Owner,
    assemble: str,
    volumes: tuple[VolumeMount, ...],
    out: BinaryIO,
    times: dict[str, float],
    reaper: Reaper,
) -> tuple[str, bool, str]:
    """The cached dependency image for this plan, built first when there is none.

    Returns its ID, whether it was reused, and what the application phase needs
    (``copy`` or ``run``, as the dependency phase's assemble said).
    """
    files = [(name, _read(plan.root / name)) for name in plan.dependencies.files]
    variables = dependencies.install_variables({**plan.image_env, **plan.build_env})
    key = dependencies.key(builder.id, files, variables)
    tag = cache.dependency_tag(key)
    fixed = dependencies.fixed_digest(builder.id, files, variables)
    growth = cache.growth_tag(fixed)
    existing = engine.find_image(tag)
    if existing is not None:
        _log.info("dependency layer reused", image=tag)
        user.learn(existing.labels.get(cache.OWNER_LABEL))
        if cache.LINES_LABEL in existing.labels and growth not in existing.names:
            _name_for_growth(engine, existing.id, growth)  # back to these: grow from here
        return existing.id, True, existing.labels.get(APPLICATION_LABEL, "run")
    lines = dependencies.requirement_lines(files)
    parent = _growable(engine, growth, lines) if dependencies.can_grow(variables) else None
    start = builder.id if parent is None else parent.id
    _log.info(
        "installing dependencies",
        files=[name for name, _ in files],
        image=tag,
        on_top_of=cache.dependency_tag(parent.labels.get(cache.KEY_LABEL, parent.id))
        if parent is not None
        else None,
    )
    env = dependencies.install_variables(plan.image_env)
    labels = {cache.KEY_LABEL: key, cache.BUILDER_LABEL: builder.ref, cache.FIXED_LABEL: fixed}
    recorded = dependencies.record(lines)
    if recorded is not None:
        labels[cache.LINES_LABEL] = recorded
    spec = _spec(plan, start, builder, assemble, env, labels, volumes)
    build_env = {**_build_env(plan, volumes), PHASE_VARIABLE: "dependencies"}
    new_lines = dependencies.added(parent.labels.get(cache.LINES_LABEL), lines) if parent else []
    if new_lines:
        build_env[ADDED_VARIABLE] = "\n".join(new_lines)
    members = [source.Member(f"src/{name}", data) for name, data in files]
    members += build_env_member(build_env)

    def archive(uid: int, gid: int) -> Iterator[bytes]:
        return source.members_stream(members, uid=uid, gid=gid)

    said = ["run"]  # what the dependency phase says the application phase needs

    def more_labels(tail: Sequence[str]) -> list[str]:
        said[0] = _application_phase(tail)
        owner = user.label()
        owner_label = [f"LABEL {cache.OWNER_LABEL}={owner}"] if owner else []
        return [f"LABEL {APPLICATION_LABEL}={said[0]}", *owner_label]

    name, tag_part = tag.rsplit(":", 1)
    image_id, step = assemble_and_commit(
        engine,
        spec,
        user,
        [archive],
        CommitSpec((), name, tag_part),
        out,
        reaper,
        more_labels,
    )
    if recorded is not None:  # a later build may grow from this layer
        _name_for_growth(engine, image_id, growth)
    times.update(dependencies=step.upload + step.assemble + step.commit)
    return image_id, False, said[0]


def _name_for_growth(engine: Engine, image_id: str, name: str) -> None:
    """Give the growth name; a failure costs later builds a faster path, not this build."""
    try:
        engine.tag(image_id, name)
    except EngineError as exc:
        _log.warning("could not name the dependency layer for later growth", error=str(exc))


def _growable(engine: Engine, growth: str, lines: Mapping[str, list[str]]) -> ImageInfo | None:
    """The newest earlier dependency image with the same fixed inputs (named ``growth``),
    when this one only adds requirement lines to it (see dependencies)."""
    latest = engine.find_image(growth)
    if latest is None or not dependencies.extends(latest.labels.get(cache.LINES_LABEL), lines):
        return None
    return latest


def _spec(
    plan: BuildPlan,
    start: str,
    builder: ImageInfo,
    assemble: str,
    env: Mapping[str, str],
    labels: Mapping[str, str],
    volumes: tuple[VolumeMount, ...],
) -> ContainerSpec:
    return ContainerSpec(
        image=start,
        command=("/bin/sh", "-c", WRAPPER, "buildpy-assemble", assemble),
        user=builder.user,
        env=env,
        labels=labels,
        mounts=plan.mounts,
        volumes=volumes,
        network=plan.options.network,
        name=container_name(),
    )


def _build_env(plan: BuildPlan, volumes: tuple[VolumeMount, ...]) -> dict[str, str]:
    """Build-only values: download cache locations (when mounted), then the user's."""
    values = dict(cache.DOWNLOAD_VARIABLES) if volumes else {"PIP_NO_CACHE_DIR": "1"}
    values.update(plan.build_env)
    return values


def _source_archive(plan: BuildPlan, build_env: Mapping[str, str]) -> ArchiveFactory:
    """The upload for /tmp: src/, scripts/ from .s2i/bin, and the build-only env file."""
    extra = [
        source.Member(f"scripts/{name}", _read(path), 0o755)
        for name, path in sorted(plan.source_scripts.items())
    ]
    extra += build_env_member(build_env)

    def archive(uid: int, gid: int) -> Iterator[bytes]:
        return source.tar_stream(
            plan.root,
            rules=plan.rules,
            dest="src",
            uid=uid,
            gid=gid,
            extra=extra,
            warn=lambda message: _log.warning(message),
        )

    return archive


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
