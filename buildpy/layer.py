"""The dependency layer: find it, grow it or build it, and say what the application needs.

When the builder advertises a dependency phase (label ``io.buildpy.assemble-phases``)
a build runs assemble twice. First only the files that decide dependencies go into
a container whose assemble installs them (``BUILDPY_ASSEMBLE_PHASE=dependencies``);
the result is kept as a dependency image named by a key of its inputs (see
``dependencies.key``). A later build with the same key starts from that image.

``prepare`` is the one entry point; it returns a ``DependencyLayer``:

* **reused**: an image with the key exists;
* **grown**: only requirement lines were added since an earlier layer with the same
  other inputs (found by its growth name, ``cache.growth_tag``): assemble runs on top
  of that layer and pip installs only what is new (``BUILDPY_ADDED_REQUIREMENTS``);
* **built**: assemble runs on the builder.

The dependency phase's assemble ends by printing ``BUILDPY_APPLICATION_PHASE=copy``
when the application phase has nothing to run but placing the source (no project to
install, no Django collectstatic), ``=collectstatic`` when Django's collectstatic is all
it has to run (see ``staticfiles``), else ``=run``; the answer is kept on the image
(label ``io.buildpy.application-phase``) so reuses know it too. s2i/assemble makes
that decision and the install decision of the application phase in one place
(``project_installer``).

A builder without that label (sclorg's, any S2I builder) gets a dependency layer
too, made by running its own assemble with only the dependency files (see
``foreign``): such a layer is marked ``foreign.FOREIGN_LABEL``, never grows, and its
application phase always runs assemble again. If that first run fails, ``prepare``
returns None and the build keeps one phase.

``split_reason`` says why a build cannot use a dependency layer (one S2I assemble);
``names`` gives the names a plan's layer is found by (``buildpy cache export`` uses them).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from buildpy import cache, dependencies, foreign, image, log, scripts, source
from buildpy.container import ArchiveFactory, Committed, WorkingContainer, build_env_member
from buildpy.engine import CommitSpec, Engine, ImageInfo
from buildpy.errors import AssembleFailed, EngineError
from buildpy.plan import S2I_ENVIRONMENT, BuildPlan
from buildpy.session import BuildSession

_log = log.get(__name__)

LOCK_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildpy" / "locks"
PHASES_LABEL = "io.buildpy.assemble-phases"
APPLICATION_MARKER = "BUILDPY_APPLICATION_PHASE"  # printed by the dependency phase
APPLICATION_LABEL = "io.buildpy.application-phase"  # copy: nothing to run but placing source
ADDED_VARIABLE = "BUILDPY_ADDED_REQUIREMENTS"  # what a grown dependency layer adds
# A dependency layer's bookkeeping, read from dependency images only (found by name):
# nothing reads it from an application image, which would inherit it.
BOOKKEEPING_LABELS = (
    cache.KEY_LABEL,
    cache.BUILDER_LABEL,
    cache.FIXED_LABEL,
    cache.LINES_LABEL,
    cache.OWNER_LABEL,
    cache.INPUTS_LABEL,
    APPLICATION_LABEL,
    foreign.FOREIGN_LABEL,
)


def cleared_labels(builder: ImageInfo) -> tuple[str, ...]:
    """Commit changes that empty the bookkeeping labels an application image built on a
    dependency layer inherits. A commit cannot remove an inherited label (Podman 4.3:
    ``LABEL key=`` leaves the key with an empty value), so they stay as empty keys;
    a label the builder itself carries is left as the layer has it."""
    return tuple(f"LABEL {name}=" for name in BOOKKEEPING_LABELS if name not in builder.labels)


@dataclass(frozen=True)
class DependencyLayer:
    """The image the application phase starts from, and what that phase needs."""

    image_id: str
    reused: bool
    application: str  # "copy": only place the source; "collectstatic"; "run": assemble
    seconds: float = 0.0  # spent making it (0 when reused)
    foreign: bool = False  # made by a builder's own assemble, without buildpy's phases


@dataclass(frozen=True)
class Inputs:
    """What the layer is made from, and the names it is found by.

    ``Inputs.of`` is the one place the key is computed: the build (``prepare``) and
    ``buildpy plan`` (``reuse``) both ask it.
    """

    files: tuple[tuple[str, bytes], ...]
    variables: dict[str, str]
    key: str
    fixed: str  # the digest of everything but the requirement lines
    tag: str
    growth: str
    latest: str  # the name of the layer last made or used for this source and builder
    lines: dict[str, list[str]]
    digests: dependencies.InputDigests  # recorded on the layer, to say later what changed

    @classmethod
    def of(cls, plan: BuildPlan, builder: ImageInfo) -> Inputs:
        files = plan.dependencies.contents
        # the wheelhouse's variables name a fixed path inside the container: where the
        # host keeps it does not count
        wheelhouse = {} if plan.wheelhouse is None else plan.wheelhouse.variables()
        variables = dependencies.key_variables({**plan.image_env, **plan.build_env, **wheelhouse})
        keyed = foreign.KEY_MARK + builder.id if is_foreign(builder) else builder.id
        key = dependencies.key(keyed, files, variables)
        fixed = dependencies.fixed_digest(keyed, files, variables)
        return cls(
            files=files,
            variables=variables,
            key=key,
            fixed=fixed,
            tag=cache.dependency_tag(key),
            growth=cache.growth_tag(fixed),
            latest=cache.source_tag(str(plan.root), builder.ref),
            lines=dependencies.requirement_lines(files),
            digests=dependencies.InputDigests.of(str(plan.root), builder.id, files, variables),
        )


def is_foreign(builder: ImageInfo) -> bool:
    """Whether the builder lacks buildpy's dependency phase (label ``PHASES_LABEL``)."""
    phases = builder.labels.get(PHASES_LABEL, "").replace(",", " ").split()
    return "dependencies" not in phases


def split_reason(plan: BuildPlan, builder: ImageInfo) -> str | None:
    """Why this build cannot use a dependency layer, or None when it can."""
    if not plan.options.cache:
        return "caching is off (--no-cache)"
    if plan.scripts_url is not None and plan.scripts_url.gives("assemble"):
        return f"assemble comes from {plan.scripts_url.origin}, which has no dependency phase"
    if "assemble" in plan.source_scripts:
        return "the source brings its own assemble (.s2i/bin/assemble)"
    if plan.dependencies.needs_full_source:
        return plan.dependencies.needs_full_source + ": dependencies need the whole source"
    if not set(plan.dependencies.files) - {S2I_ENVIRONMENT, ".python-version"}:
        return "no dependency files (requirements.txt, Pipfile, pyproject.toml, ...)"
    if is_foreign(builder):
        env = {**builder.env, **plan.image_env, **plan.build_env}
        files = dict(plan.dependencies.contents)
        home = builder.env.get("HOME", "")
        reason = foreign.split_reason(files, env, home, builder.ref)
        if reason is not None:
            return f"builder {builder.ref} has no dependency phase of its own, and {reason}"
    return None


def names(plan: BuildPlan, builder: ImageInfo) -> tuple[str, str]:
    """The names this plan's dependency layer is found by: its key's, and the growth name
    of the newest layer made from the same inputs but requirement lines."""
    inputs = Inputs.of(plan, builder)
    return inputs.tag, inputs.growth


def prepare(session: BuildSession) -> DependencyLayer | None:
    """The dependency layer for this session's plan: reused, grown or built; None when a
    foreign builder's assemble failed with only the dependency files (build in one phase).

    Two builds on this machine that need the same new layer do not both install it:
    the second waits for the first (a lock per key) and then reuses its layer.
    """
    inputs = Inputs.of(session.plan, session.builder)
    existing = session.engine.find_image(inputs.tag)
    if existing is not None:
        return _reuse(session, existing, inputs)
    with _building(inputs.key):
        existing = session.engine.find_image(inputs.tag)  # made while this build waited?
        if existing is not None:
            return _reuse(session, existing, inputs)
        if is_foreign(session.builder):
            return _build_foreign(session, inputs)
        parent = _growable(session.engine, inputs)
        return _build(session, inputs, parent)


@contextmanager
def _building(key: str) -> Iterator[None]:
    """Hold this machine's lock for making the layer ``key`` (none when it cannot be had)."""
    try:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        handle = open(LOCK_DIR / f"{key[:32]}.lock", "a+b")  # noqa: SIM115 - held over a yield
    except OSError as exc:
        _log.debug("building without a lock", error=str(exc))
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log.info("waiting for another build that installs the same dependencies")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _reuse(session: BuildSession, existing: ImageInfo, inputs: Inputs) -> DependencyLayer:
    _log.debug("dependency layer found", image=inputs.tag)  # build.run says it is reused
    session.owner.learn(existing.labels.get(cache.OWNER_LABEL))
    _give_names(session.engine, existing, inputs)  # grow from here next; compare with it
    application = existing.labels.get(APPLICATION_LABEL, "run")
    return DependencyLayer(
        existing.id, True, application, foreign=foreign.FOREIGN_LABEL in existing.labels
    )


def _growable(engine: Engine, inputs: Inputs) -> ImageInfo | None:
    """The newest earlier layer with the same fixed inputs, when this one only adds
    requirement lines to it (see ``dependencies.extends``)."""
    if not dependencies.can_grow(inputs.variables):
        return None
    latest = engine.find_image(inputs.growth)
    if latest is None:
        return None
    return (
        latest if dependencies.extends(latest.labels.get(cache.LINES_LABEL), inputs.lines) else None
    )


def _build(session: BuildSession, inputs: Inputs, parent: ImageInfo | None) -> DependencyLayer:
    """Run the dependency phase on the builder (or on ``parent``) and commit the layer."""
    _log.info(
        "installing dependencies",
        files=[name for name, _ in inputs.files],
        image=inputs.tag,
        on_top_of=None
        if parent is None
        else cache.dependency_tag(parent.labels.get(cache.KEY_LABEL, parent.id)),
    )
    start = session.builder.id if parent is None else parent.id
    labels = _labels(inputs, session.builder.ref)
    env = dependencies.layer_variables(session.plan.image_env)
    added = dependencies.added(parent.labels.get(cache.LINES_LABEL), inputs.lines) if parent else []
    more = {ADDED_VARIABLE: "\n".join(added)} if added else {}
    fetch = dependencies.fetch_variables(session.plan.image_env)
    archive = _archive(inputs, session.build_env("dependencies", fetch, **more))

    with session.container(start, env, labels) as container:
        upload = container.upload(scripts.UPLOAD_DIR, archive)
        assembled = container.assemble(session.out).check()
        application = _application(assembled.said(APPLICATION_MARKER))
        committed = _commit_layer(session, container, inputs, application)
    _name_later(session, ImageInfo(committed.image_id, inputs.tag, labels=labels), inputs)
    seconds = upload + assembled.seconds + committed.seconds
    return DependencyLayer(committed.image_id, False, application, seconds)


def can_place(plan: BuildPlan, builder: ImageInfo) -> bool:
    """Whether buildpy may place the source itself instead of running assemble again,
    where the dependency phase said nothing (or only collectstatic) is left to run: not
    for a source with its own scripts, other scripts, or an incremental build."""
    home = builder.env.get("HOME", "")
    return (
        home.startswith("/")
        and home != "/"
        and not plan.uploaded_scripts
        and plan.scripts_url is None
        and not plan.options.incremental
    )


def _application(said: str | None) -> str:
    """What the application phase needs, as the dependency phase said: "copy" (only
    placing the source), "collectstatic" (that and Django's collectstatic, see
    ``staticfiles``) or "run" (assemble, for anything else or nothing said)."""
    return said if said in ("copy", "collectstatic") else "run"


def _commit_layer(
    session: BuildSession, container: WorkingContainer, inputs: Inputs, application: str
) -> Committed:
    """Commit a dependency layer under its key's tag, saying what its application phase
    needs (``copy``, ``collectstatic`` or ``run``) and who owns its files."""
    changes = [f"LABEL {APPLICATION_LABEL}={application}"]
    owner = session.owner.label()
    if owner:
        changes.append(f"LABEL {cache.OWNER_LABEL}={owner}")
    repository, tag = image.split_tag(inputs.tag)
    return container.commit(CommitSpec(tuple(changes), repository, tag))


def _build_foreign(session: BuildSession, inputs: Inputs) -> DependencyLayer | None:
    """Run the builder's own assemble with only the dependency files, in the environment a
    one-phase assemble has, and commit the layer; None (and a warning) when it fails."""
    _log.info(
        "installing dependencies with the builder's own assemble",
        files=[name for name, _ in inputs.files],
        image=inputs.tag,
    )
    plan = session.plan
    env = dependencies.layer_variables(plan.image_env)  # committed, as buildpy's layers have
    rest = {k: v for k, v in plan.image_env.items() if k not in env}  # seen, not committed
    archive = _archive(inputs, session.build_env(None, rest))
    labels = {**_labels(inputs, session.builder.ref, lines=False), foreign.FOREIGN_LABEL: "1"}
    files = dict(inputs.files)
    command = foreign.dependency_command(session.scripts.assemble, files)
    try:
        with session.container(session.builder.id, env, labels, command=command) as container:
            upload = container.upload(scripts.UPLOAD_DIR, archive)
            assembled = container.assemble(session.out).check()
            committed = _commit_layer(session, container, inputs, "run")
    except AssembleFailed as exc:
        _log.warning(
            "the builder's assemble failed with only the dependency files; building in one phase",
            status=exc.status,
        )
        return None
    _name_later(session, ImageInfo(committed.image_id, inputs.tag, labels=labels), inputs)
    seconds = upload + assembled.seconds + committed.seconds
    return DependencyLayer(committed.image_id, False, "run", seconds, foreign=True)


def _labels(inputs: Inputs, builder_ref: str, lines: bool = True) -> dict[str, str]:
    """The dependency image's bookkeeping: key, builder, digests; never a value."""
    labels = {
        cache.KEY_LABEL: inputs.key,
        cache.BUILDER_LABEL: builder_ref,
        cache.FIXED_LABEL: inputs.fixed,
    }
    recorded = dependencies.record(inputs.lines) if lines else None  # none: never grows
    if recorded is not None:
        labels[cache.LINES_LABEL] = recorded
    digests = inputs.digests.label()
    if digests is not None:
        labels[cache.INPUTS_LABEL] = digests
    return labels


def _archive(inputs: Inputs, build_env: dict[str, str]) -> ArchiveFactory:
    """The dependency files under src/, and the build-only variables."""
    members = [source.Member(f"src/{name}", data) for name, data in inputs.files]
    members += build_env_member(build_env)

    def archive(uid: int, gid: int) -> Iterator[bytes]:
        return source.members_stream(members, uid=uid, gid=gid)

    return archive


def _name_later(session: BuildSession, layer: ImageInfo, inputs: Inputs) -> None:
    """``_give_names`` for a new layer, on the reaper's thread (done before the build
    ends): the application phase need not wait for names only later builds look for."""
    session.reaper.background(
        lambda: _give_names(session.engine, layer, inputs), "could not name the dependency layer"
    )


def _give_names(engine: Engine, layer: ImageInfo, inputs: Inputs) -> None:
    """The names later builds look for, when the layer lacks them: the growth name (a
    later build may grow from it, when its requirement lines are recorded) and the
    source's (``buildpy plan`` compares a new layer's inputs with it). A failure costs
    later builds a faster path or a plan its comparison, never this build."""
    names = [inputs.growth] if cache.LINES_LABEL in layer.labels else []
    names.append(inputs.latest)
    for name in names:
        if name in layer.names:
            continue
        try:
            engine.tag(layer.id, name)
        except EngineError as exc:
            _log.warning("could not name the dependency layer", name=name, error=str(exc))
