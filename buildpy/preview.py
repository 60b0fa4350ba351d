"""``buildpy plan``: what a build would do, and why, without starting a container.

``make`` inspects the builder image (no container) and answers from the plan: the
builder and where its scripts come from, one phase or two (``layer.split_reason``),
the installer assemble will run (``assemble_mirror``), how run will start the app
(``run_mirror``), every variable with its value and origin (credentials masked, see
``redact``), and what becomes of the dependency layer (``reuse``). ``report`` gives the
JSON form (documented in docs/reference/plan-json.md), ``render`` the human one;
``cli`` prints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from buildpy import assemble_mirror, layer, redact, reuse, run_mirror, scripts, staticfiles
from buildpy.engine import Engine, ImageInfo
from buildpy.environment import EnvLayer, Resolved, resolve
from buildpy.mirror import DEFAULT_HOME, SourceView, Step, Variables
from buildpy.plan import BuildPlan
from buildpy.registry import require_builder
from buildpy.session import PHASE_VARIABLE, buildpy_variables, download_index, uses_downloads

SCHEMA_VERSION = 1
BUILDPY_BUILDER_LABELS = ("io.buildpy.builder.digest", layer.PHASES_LABEL)
HIDDEN_ORIGINS = ("--build-env",)  # values never shown


@dataclass(frozen=True)
class Setting:
    value: str | None
    origin: str  # "--builder", "[tool.buildpy] in pyproject.toml", "default", ...


@dataclass(frozen=True)
class Script:
    name: str
    path: str  # inside the working container
    origin: str


@dataclass(frozen=True)
class BuildOnlyFile:
    """A file assemble sees and the image never holds (``--ca-bundle``, ``--secret``)."""

    origin: str
    target: str


@dataclass(frozen=True)
class Variable:
    name: str
    value: str  # as shown: masked where it may be a credential
    masked: bool
    origin: str
    line: int | None
    scope: str  # "image": in the image, seen by assemble and run; "build": assemble only


@dataclass(frozen=True)
class Preview:
    """Everything ``buildpy plan`` says."""

    source: str
    builder: ImageInfo
    buildpy_builder: bool
    settings: Mapping[str, Setting]  # builder, tag, network
    scripts: tuple[Script, ...]
    files: tuple[BuildOnlyFile, ...]
    phases: int
    phase_reason: str | None
    foreign: bool  # two phases by the builder's own assemble, run twice (see ``foreign``)
    install: assemble_mirror.Install
    start: run_mirror.Start
    reuse: reuse.Reuse
    variables: tuple[Variable, ...]
    static_files: str | None = None  # Django's, when collectstatic is all the app phase runs


def make(plan: BuildPlan, engine: Engine, origins: Mapping[str, str]) -> Preview:
    """The preview of ``plan``; ``origins`` says where builder, tag and network came from
    (``config.setting_origins``). Looks images up; starts nothing."""
    builder = require_builder(engine, plan.options.builder)
    chosen = scripts.choose(
        builder.labels, set(plan.uploaded_scripts), builder.ref, plan.scripts_url
    )
    split = layer.split_reason(plan, builder)
    ours = any(label in builder.labels for label in BUILDPY_BUILDER_LABELS)
    foreign = split is None and layer.is_foreign(builder)
    build_layers = _build_layers(plan, builder, split is None and not foreign)
    found = reuse.forecast(engine, plan, builder)
    install, start = _mirrored(plan, builder, ours, build_layers)
    options = plan.options
    values = {"builder": options.builder, "tag": options.tag, "network": options.network}
    return Preview(
        source=str(plan.root),
        builder=builder,
        buildpy_builder=ours,
        settings={
            key: Setting(value, origins.get(key, "default")) for key, value in values.items()
        },
        scripts=_scripts(plan, builder, chosen),
        files=tuple(BuildOnlyFile(f.origin, f.target) for f in plan.files),
        phases=1 if split else 2,
        phase_reason=split,
        foreign=foreign,
        install=install,
        start=start,
        reuse=found,
        variables=_variables(builder, plan, build_layers),
        static_files=_static_files(engine, plan, builder, found),
    )


def _static_files(
    engine: Engine, plan: BuildPlan, builder: ImageInfo, found: reuse.Reuse
) -> str | None:
    """What becomes of Django's static files when the reused dependency layer says that
    collectstatic is all the application phase runs (``staticfiles``), as the build
    decides it; None when that is not the case or not known before the build."""
    existing = engine.find_image(found.image) if found.status == "reuse" and found.image else None
    if existing is None or existing.labels.get(layer.APPLICATION_LABEL) != "collectstatic":
        return None
    if not layer.can_place(plan, builder):
        return "collectstatic runs: .s2i/bin scripts, --scripts-url and --incremental run assemble"
    name = staticfiles.name_for(plan, existing.id, builder.env)
    if name is None:
        return "none: DISABLE_COLLECTSTATIC is set; the source is placed without a run"
    return staticfiles.forecast(name, plan.root, plan.rules)


def _build_layers(plan: BuildPlan, builder: ImageInfo, two_phases: bool) -> tuple[EnvLayer, ...]:
    """Build-only values: the plan's, then buildpy's own (cache locations, the phase)."""
    own = buildpy_variables(uses_downloads(plan), download_index(plan, builder.env))
    if two_phases:
        own[PHASE_VARIABLE] = "dependencies, then application"
    return (*plan.build_layers, EnvLayer("buildpy", own))


def _image_layers(builder: ImageInfo, plan: BuildPlan) -> tuple[EnvLayer, ...]:
    return (EnvLayer("image", builder.env), *plan.env_layers)


def _mirrored(
    plan: BuildPlan, builder: ImageInfo, ours: bool, build_layers: tuple[EnvLayer, ...]
) -> tuple[assemble_mirror.Install, run_mirror.Start]:
    """What assemble installs and how run starts, where buildpy's own scripts decide."""
    view = SourceView(plan.root, plan.rules, builder.env.get("HOME", DEFAULT_HOME))
    files = dict(plan.dependencies.contents)
    image = _image_layers(builder, plan)
    hidden = frozenset(
        k for lay in build_layers if lay.origin in HIDDEN_ORIGINS for k in lay.values
    )
    at_build = Variables(resolve((*image, *build_layers)), hidden)
    who = _decider(ours, plan.script_origin("assemble"))
    if who == "buildpy":
        install = assemble_mirror.decide(view, at_build, files)
        reads = install.reads
    else:
        install = assemble_mirror.Install(decided_by=who, notes=(_cannot_tell(who, "assemble"),))
        reads = tuple(files)  # a guess: whatever the dependency files name
    who = _decider(ours, plan.script_origin("run"))
    if who != "buildpy":
        return install, run_mirror.Start(decided_by=who, notes=(_cannot_tell(who, "run"),))
    if install.error:
        return install, run_mirror.Start(notes=("assemble fails (see the installer): no image",))
    return install, run_mirror.decide(view, Variables(resolve(image)), files, reads)


def _decider(ours: bool, given: str | None) -> str:
    """Who decides what a script does: the source (.s2i/bin), --scripts-url, buildpy's
    own scripts, or another builder's."""
    if given is not None:
        return "scripts-url" if given.startswith(scripts.URL_OPTION) else "source"
    return "buildpy" if ours else "builder"


def _cannot_tell(who: str, script: str) -> str:
    whose = {"source": "the source's own .s2i/bin/", "scripts-url": "the --scripts-url "}.get(
        who, "the builder's own "
    )
    return f"{whose}{script} decides; buildpy cannot tell what it will do"


def _scripts(plan: BuildPlan, builder: ImageInfo, chosen: scripts.Scripts) -> tuple[Script, ...]:
    found = scripts.scripts_url(builder.labels)
    from_image = f"image label {found[0]}={found[1]}" if found else "the builder"
    paths = {
        "assemble": chosen.assemble,
        "run": chosen.run,
        "save-artifacts": chosen.save_artifacts,
    }
    return tuple(
        Script(name, path, plan.script_origin(name) or from_image)
        for name, path in paths.items()
        if path
    )


def _variables(
    builder: ImageInfo, plan: BuildPlan, build_layers: tuple[EnvLayer, ...]
) -> tuple[Variable, ...]:
    """Every variable, sorted by name: the image's (which assemble and run see), then the
    build-only ones (which beat them during assemble); values masked where secret."""
    image = resolve(_image_layers(builder, plan))
    build = resolve(build_layers)
    found = [_variable(name, value, "image") for name, value in image.items()]
    found += [_variable(name, value, "build") for name, value in build.items()]
    return tuple(sorted(found, key=lambda variable: (variable.name, variable.scope != "image")))


def _variable(name: str, found: Resolved, scope: str) -> Variable:
    value, masked = redact.shown(name, found.value, hidden=found.origin in HIDDEN_ORIGINS)
    return Variable(name, value, masked, found.origin, found.line, scope)


# ------------------------------------------------------------------------------ output


def report(preview: Preview) -> dict[str, Any]:
    """The JSON form (docs/reference/plan-json.md); bump SCHEMA_VERSION on any change
    that is not a new field."""
    settings = {key: asdict(setting) for key, setting in preview.settings.items()}
    return {
        "schema_version": SCHEMA_VERSION,
        "source": preview.source,
        "builder": {
            "image": preview.builder.ref,
            "id": preview.builder.id,
            "origin": preview.settings["builder"].origin,
            "buildpy": preview.buildpy_builder,
        },
        "tag": settings["tag"],
        "network": settings["network"],
        "scripts": {s.name: {"path": s.path, "origin": s.origin} for s in preview.scripts},
        "build_files": [asdict(found) for found in preview.files],
        "phases": {
            "count": preview.phases,
            "reason": preview.phase_reason,
            "foreign": preview.foreign,
        },
        "installer": asdict(preview.install),
        "start": asdict(preview.start),
        "dependency_layer": {
            **asdict(preview.reuse),
            "changes": [{**asdict(c), "text": str(c)} for c in preview.reuse.changes],
        },
        "static_files": preview.static_files,
        "variables": [asdict(variable) for variable in preview.variables],
    }


def render(preview: Preview) -> str:
    """The human form: sections of aligned rows, then the variables as a table."""
    sections = [
        ("Build", _build_rows(preview)),
        (f"Installer: {_install_summary(preview.install)}", _install_rows(preview.install)),
        (f"Start: {_start_summary(preview.start)}", _start_rows(preview.start)),
        (f"Dependency layer: {_reuse_summary(preview.reuse)}", _reuse_rows(preview.reuse)),
    ]
    if preview.static_files is not None:
        sections.append(("Django static files", [("static", preview.static_files)]))
    width = max(len(label) for _, rows in sections for label, _ in rows)
    lines = []
    for title, rows in sections:
        lines.append(title)
        previous = None
        for label, text in rows:
            shown = "" if label == previous else label
            lines.append(f"  {shown.ljust(width)}  {text}".rstrip())
            previous = label
        lines.append("")
    return "\n".join([*lines, "Variables", *_variable_lines(preview.variables)]) + "\n"


Rows = list[tuple[str, str]]


def _build_rows(preview: Preview) -> Rows:
    builder, tag, network = (preview.settings[k] for k in ("builder", "tag", "network"))
    kind = "a buildpy builder" if preview.buildpy_builder else "not a buildpy builder"
    rows = [
        ("source", preview.source),
        ("builder", f"{builder.value} ({builder.origin})"),
        ("builder", f"image {preview.builder.id.removeprefix('sha256:')[:12]}, {kind}"),
        ("tag", f"{tag.value or 'none: the image ID is printed'} ({tag.origin})"),
        ("network", f"{network.value or 'Podman default'} ({network.origin})"),
    ]
    by_origin: dict[str, list[str]] = {}
    for script in preview.scripts:
        by_origin.setdefault(script.origin, []).append(script.name)
    rows += [
        ("scripts", f"{', '.join(names)} from {origin}") for origin, names in by_origin.items()
    ]
    rows += [("files", f"{f.target} from {f.origin}, assemble only") for f in preview.files]
    if preview.phase_reason is None and preview.foreign:
        text = "2: the builder's own assemble, with the dependency files, then with the source"
        rows.append(("phases", text))
    elif preview.phase_reason is None:
        rows.append(("phases", "2: dependencies, then application"))
    else:
        rows.append(("phases", f"1: {preview.phase_reason}"))
    return rows


def _install_summary(install: assemble_mirror.Install) -> str:
    if install.decided_by != "buildpy":
        return "cannot tell"
    if install.error and not install.tool:
        return "assemble fails"
    return f"{install.tool} ({install.file})" if install.file else install.tool or "none"


def _install_rows(install: assemble_mirror.Install) -> Rows:
    rows = _steps_rows(install.steps, "runs")
    rows += [("note", note) for note in install.notes]
    if install.error:
        rows.append(("ERROR", install.error))
    return rows


def _steps_rows(steps: tuple[Step, ...], label: str) -> Rows:
    rows: Rows = []
    for number, step in enumerate(steps, 1):
        rows += [(label, f"{number}. {step.command}"), (label, f"     {step.reason}")]
    return rows


def _start_summary(start: run_mirror.Start) -> str:
    if start.command:
        return " ".join(start.command)
    if start.error:
        return "nothing: run exits 1"
    return "cannot tell" if start.decided_by != "buildpy" else "nothing"


def _start_rows(start: run_mirror.Start) -> Rows:
    rows: Rows = []
    if start.decided_by == "buildpy":
        rows.append(("in", "$HOME" if start.directory == "." else start.directory))
    rows += _steps_rows(start.before, "before")
    rows += [("because", reason) for reason in start.reasons]
    if start.workers:
        rows.append(("workers", start.workers))
    rows += [("assuming", assumption) for assumption in start.assumptions]
    rows += [("note", note) for note in start.notes]
    if start.error:
        rows.append(("ERROR", start.error))
    return rows


def _reuse_summary(found: reuse.Reuse) -> str:
    what = {"reuse": "reused", "grow": "grown", "build": "built", "none": "none"}[found.status]
    return f"{what} ({found.image})" if found.image else what


def _reuse_rows(found: reuse.Reuse) -> Rows:
    rows = [("because", found.reason)]
    if found.earlier:
        rows.append(("earlier", found.earlier))
    rows += [("changed", str(change)) for change in found.changes]
    return rows


def _variable_lines(variables: tuple[Variable, ...]) -> list[str]:
    table = [("NAME", "VALUE", "FROM")] + [
        (v.name, v.value, _origin(v) + (" (assemble only)" if v.scope == "build" else ""))
        for v in variables
    ]
    name_width = max(len(row[0]) for row in table)
    value_width = min(max(len(row[1]) for row in table), 40)
    return [
        f"  {name.ljust(name_width)}  {value.ljust(value_width)}  {origin}".rstrip()
        for name, value, origin in table
    ]


def _origin(variable: Variable) -> str:
    return variable.origin if variable.line is None else f"{variable.origin} line {variable.line}"
