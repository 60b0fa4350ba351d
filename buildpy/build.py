"""The build, in the order it happens: builder, dependency layer, application phase, commit.

``plan.make`` reads the source and the options and touches no engine; ``run``
carries a plan out against an ``Engine``:

1. the session inspects the builder and chooses its scripts (``session``);
2. unless the source or the options rule it out (``layer.split_reason``), the
   dependency layer is reused, grown or built (``layer``); builders without buildpy's
   dependency phase, such as sclorg's, get one made by their own assemble
   (``foreign``), and one phase when that fails;
3. the application phase: the source is *placed* into the dependency layer when
   nothing is left to run, else uploaded to ``/tmp/src`` for assemble (with the
   previous image's artifacts, for ``--incremental``);
4. the commit sets CMD to the run script (``image.commit_changes``).

The image's variables (``.s2i/environment``, ``--env-file``, ``-e``) are the
working container's environment, so the commit keeps them; build-only values
(``--build-env``, the CA bundle's paths, cache locations, the phase) never are
(see ``container``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from buildpy import artifacts, cache, cachesize, image, layer, log, scripts, source, staticfiles
from buildpy.container import (
    ArchiveFactory,
    Committed,
    Output,
    WorkingContainer,
    build_env_member,
)
from buildpy.engine import CommitSpec, Engine
from buildpy.errors import AssembleFailed, EngineError
from buildpy.plan import BuildPlan
from buildpy.session import BuildSession

_log = log.get(__name__)


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tag: str | None
    seconds: float
    phases: int = 1
    dependencies_reused: bool = False
    times: Mapping[str, float] = field(default_factory=dict)
    size: int = 0  # bytes, as Podman reports the image's size (0: not known)

    @property
    def assemble_seconds(self) -> float:
        return self.times.get("assemble", 0.0)


@dataclass(frozen=True)
class _Final:
    """The committed application image and the seconds each part took."""

    image_id: str
    times: dict[str, float]


def run(plan: BuildPlan, engine: Engine, output: Output | None = None) -> BuildResult:
    """Carry the plan out: dependency layer (when possible), application phase, commit."""
    started = time.monotonic()
    out = output if output is not None else sys.stderr.buffer
    with BuildSession.start(plan, engine, out) as session, ExitStack() as held:
        builder = session.builder
        _log.info(
            "builder ready", image=builder.ref, id=_short(builder.id), seconds=_since(started)
        )
        reason = layer.split_reason(plan, builder)
        if reason is not None:
            _log.info("building in one phase", reason=reason)
        deps = _dependencies(session, held) if reason is None else None
        commit = _final_commit(session, deps)
        if deps is not None and deps.application == "copy" and _can_place(session):
            final = _place(session, deps.image_id, commit)
        elif deps is not None and deps.application == "collectstatic" and _can_place(session):
            final = _collect_static(session, deps, commit)
        elif deps is not None and deps.foreign:
            final, deps = _assemble_on_foreign(session, deps, commit)
        else:
            final = _assemble(session, deps, commit)
        size = _size(session, final.image_id)
    if deps is not None and not deps.reused and plan.options.cache_max is not None:
        _keep_under(engine, plan.options.cache_max, deps.image_id)
    times = final.times if deps is None else {**final.times, "dependencies": deps.seconds}
    return BuildResult(
        image_id=final.image_id,
        tag=plan.options.tag,
        seconds=time.monotonic() - started,
        phases=1 if deps is None else 2,
        dependencies_reused=deps is not None and deps.reused,
        times=times,
        size=size,
    )


def _size(session: BuildSession, image_id: str) -> int:
    """The image's size, asked for while the working container is being removed."""
    session.reaper.release()
    found = session.engine.find_image(image_id)
    return found.size if found is not None else 0


def _dependencies(session: BuildSession, held: ExitStack) -> layer.DependencyLayer | None:
    """The dependency layer, reused or installed, and one line that says which; None when
    a foreign builder's first run failed (``layer.prepare`` said so and why). The layer is
    held as in use until the build ends (no other build's eviction removes it meanwhile),
    and its use recorded for the cache's LRU eviction."""
    started = time.monotonic()
    held.enter_context(cachesize.in_use(layer.Inputs.of(session.plan, session.builder).key))
    deps = layer.prepare(session)
    if deps is None:
        return None
    # on the reaper's thread (done before the session ends): about 4 ms of file work, with
    # a 50 kB ledger, that need not delay the next container
    session.reaper.background(
        lambda: cachesize.record_use(deps.image_id, adds=_adds(session, deps)),
        "could not record the dependency layer's use",
    )
    said = "dependency layer reused" if deps.reused else "dependencies installed"
    _log.info(said, image=_short(deps.image_id), seconds=_since(started))
    return deps


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _adds(session: BuildSession, deps: layer.DependencyLayer) -> int | None:
    """What a new layer adds beyond the builder (for a grown one, with the layer it grew
    from: an overestimate, which only makes the size check list sooner); None for a reused
    one (measured when it was made)."""
    if deps.reused:
        return None
    made = session.engine.find_image(deps.image_id)
    if made is None or not made.size or not session.builder.size:
        return None
    return max(0, made.size - session.builder.size)


def _keep_under(engine: Engine, limit: int, current: str) -> None:
    """Evict least recently used dependency layers past ``limit``; a failure costs disk
    space, never this build (its image is committed)."""
    try:
        cache.evict(engine, limit, keep=current)
    except EngineError as exc:
        _log.warning("could not bring the dependency cache under its limit", error=exc.message)


def _final_commit(session: BuildSession, deps: layer.DependencyLayer | None) -> CommitSpec:
    """CMD and the rest (``image.commit_changes``); on a dependency layer, its bookkeeping
    labels emptied: they belong to dependency images, not to the application's."""
    tag = session.plan.options.tag
    repository, version = image.split_tag(tag) if tag else (None, None)
    changes = image.commit_changes(session.builder, session.scripts.run)
    if deps is not None:
        changes += layer.cleared_labels(session.builder)
    return CommitSpec(changes, repository, version)


def _assemble_on_foreign(
    session: BuildSession, deps: layer.DependencyLayer, commit: CommitSpec
) -> tuple[_Final, layer.DependencyLayer | None]:
    """The builder's own assemble on its dependency layer; if it fails there, once more
    on the builder (one phase), with a warning: a layer never makes a build fail that
    would have passed without it."""
    try:
        return _assemble(session, deps, commit), deps
    except AssembleFailed as exc:
        _log.warning(
            "the builder's assemble failed on its dependency layer; building in one phase",
            status=exc.status,
        )
        return _assemble(session, None, _final_commit(session, None)), None


def _collect_static(
    session: BuildSession, deps: layer.DependencyLayer, commit: CommitSpec
) -> _Final:
    """Django's application phase, where collectstatic is all assemble has left to run:
    the static files an earlier build kept, placed with the source, while none of their
    inputs changed (``staticfiles``); else assemble, keeping what its collectstatic makes."""
    plan = session.plan
    name = staticfiles.name_for(plan, deps.image_id, session.builder.env)
    if name is None:  # DISABLE_COLLECTSTATIC: nothing to run
        return _place(session, deps.image_id, commit)
    kept = staticfiles.find(name, plan.root, plan.rules)
    if kept is None:
        return _assemble(session, deps, commit, keep=name)
    _log.info("static files placed", inputs=kept.inputs)
    return _place(session, deps.image_id, commit, kept)


def _assemble(
    session: BuildSession,
    deps: layer.DependencyLayer | None,
    commit: CommitSpec,
    keep: str | None = None,
) -> _Final:
    """Upload the source (and artifacts) to /tmp, run assemble, commit; with ``keep``,
    keep the static files its collectstatic made under that name (``staticfiles``)."""
    plan = session.plan
    start = session.builder.id if deps is None else deps.image_id
    phase = None if deps is None or deps.foreign else "application"
    record = {staticfiles.RECORD_VARIABLE: "1"} if keep is not None else {}
    upload = source_archive(plan, session.build_env(phase, None, **record))
    with (
        _incremental(session) as saved,
        session.container(start, plan.image_env, plan.labels) as container,
    ):
        container.will_commit(commit)
        seconds = container.upload(scripts.UPLOAD_DIR, upload)
        if saved is not None:
            seconds += container.upload(scripts.UPLOAD_DIR, saved)
        _log.info("source uploaded", seconds=round(seconds, 3))
        _log.info("running assemble", script=session.scripts.assemble)
        assembled = container.assemble(session.out).check()
        _log.info("assembled", seconds=round(assembled.seconds, 3))
        said = assembled.said(staticfiles.INPUTS_MARKER) if keep is not None else None
        with staticfiles.keeping(keep, said, plan, session.engine, container.id):
            committed = _committed(container, commit)
    times = {"upload": seconds, "assemble": assembled.seconds, "commit": committed.seconds}
    return _Final(committed.image_id, times)


def _place(
    session: BuildSession, start: str, commit: CommitSpec, kept: staticfiles.Kept | None = None
) -> _Final:
    """Put the source where assemble would leave it (with ``kept`` static files), in a
    container that never runs."""
    plan = session.plan
    home = PurePosixPath(session.builder.env["HOME"])
    session.reaper.release()  # nothing will run: the dependency container may go now
    extra = kept.members(home.name) if kept is not None else []
    with session.container(start, plan.image_env, plan.labels, runs=False) as container:
        container.will_commit(commit)
        seconds = container.upload(str(home.parent), _placed_source(plan, home.name, extra))
        _log.info("source placed", path=str(home), seconds=round(seconds, 3))
        committed = _committed(container, commit)
    return _Final(
        committed.image_id, {"upload": seconds, "assemble": 0.0, "commit": committed.seconds}
    )


def _committed(container: WorkingContainer, commit: CommitSpec) -> Committed:
    committed = container.commit(commit)
    _log.info("committed", image=_short(committed.image_id), seconds=round(committed.seconds, 3))
    return committed


def _can_place(session: BuildSession) -> bool:
    """Whether buildpy may place the source itself instead of running assemble again
    (``layer.can_place``)."""
    return layer.can_place(session.plan, session.builder)


@contextmanager
def _incremental(session: BuildSession) -> Iterator[ArchiveFactory | None]:
    """Artifacts of the previous image, with --incremental and a previous image."""
    options = session.plan.options
    found = session.engine.find_image(options.tag) if options.incremental and options.tag else None
    if found is None or not session.scripts.save_artifacts:
        if options.incremental:
            _log.info("no previous image to take artifacts from; building in full")
        yield None
        return
    with artifacts.previous_artifacts(
        session.engine, found.id, session.builder, session.scripts.save_artifacts, session.out
    ) as saved:
        yield saved


def _placed_source(
    plan: BuildPlan, dest: str, extra: list[source.Member] | None = None
) -> ArchiveFactory:
    """The source as assemble would leave it in $HOME: owned by the user, group like owner
    (and ``extra`` members after it)."""

    def archive(uid: int, gid: int) -> source.TarStream | source.SplitArchive:
        return source.tree_archive(
            plan.root,
            rules=plan.rules,
            size=plan.source_size,
            layout=source.Layout(dest, uid, gid, group_like_owner=True),
            extra=extra or (),
        )

    return archive


def source_archive(plan: BuildPlan, build_env: Mapping[str, str]) -> ArchiveFactory:
    """The upload for /tmp: src/, scripts/ (from --scripts-url file:// and .s2i/bin), and
    the build-only env file."""
    uploaded = plan.uploaded_scripts
    extra = [
        source.Member(f"scripts/{name}", source.read_file(uploaded[name]), 0o755)
        for name in sorted(uploaded)
    ]
    extra += build_env_member(build_env)

    def archive(uid: int, gid: int) -> source.TarStream | source.SplitArchive:
        return source.tree_archive(
            plan.root,
            rules=plan.rules,
            size=plan.source_size,
            layout=source.Layout("src", uid, gid),
            extra=extra,
        )

    return archive
