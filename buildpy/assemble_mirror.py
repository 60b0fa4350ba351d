"""What buildpy's s2i/assemble will install, and why: its decisions, repeated in Python.

In s2i/assemble's order: both ``ENABLE_PIPENV`` and ``ENABLE_MICROPIPENV`` set stops it
(exit 3); ``UPGRADE_PIP_TO_LATEST`` upgrades pip first; then exactly one of pipenv
(``Pipfile``, else ``requirements.txt``), micropipenv (``Pipfile.lock``, ``poetry.lock``,
``requirements.txt``, the first found), pip (``requirements.txt``), uv (``uv.lock``) or
pip with poetry.lock's pins (``poetry.lock``); then the project itself (``setup.py``/
``setup.cfg``, or a ``pyproject.toml`` with a ``[build-system]``, ``[project]`` or
``[tool.poetry]`` table, unless uv.lock marks the project virtual) unless
``DISABLE_*``; then Django's collectstatic unless ``DISABLE_COLLECTSTATIC``. s2i/ must
not change for this module's sake (the builders' digests would); when it changes, this
follows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from buildpy import dependencies
from buildpy.mirror import SourceView, Step, Variables, names

MICROPIPENV_FILES = ("Pipfile.lock", "poetry.lock", "requirements.txt")
LOCK_FILES = ("uv.lock", "poetry.lock")  # installed natively, after requirements.txt
_VIRTUAL = re.compile(r'^source = \{ virtual = "\." \}', re.MULTILINE)
_NOT_A_PACKAGE = re.compile(r"^[ \t]*package-mode[ \t]*=[ \t]*false", re.MULTILINE)
_INSTALLABLE = re.compile(r"^[ \t]*\[(build-system|project|tool\.poetry)\]", re.MULTILINE)


@dataclass(frozen=True)
class Install:
    """What assemble will run, in order, and the files and variables that chose it."""

    decided_by: str = "buildpy"  # "buildpy": mirrored here; "builder"/"source": cannot tell
    tool: str | None = None  # "pip", "pipenv", "micropipenv", "uv"; None: no dependency install
    file: str | None = None  # what the tool installs from
    project: str | None = None  # "setup.py/setup.cfg" or "pyproject.toml": pip install .
    upgrade_pip: bool = False
    collectstatic: bool = False
    steps: tuple[Step, ...] = ()
    notes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()  # the files that name what gets installed
    error: str | None = None  # how assemble will fail, when it will


@dataclass
class _Draft:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    tool: str | None = None
    file: str | None = None
    error: str | None = None


def decide(view: SourceView, env: Variables, files: Mapping[str, bytes]) -> Install:
    """What buildpy's assemble will do with this source and these variables.

    ``files``: the dependency files' contents (``DependencyFiles.contents``).
    """
    if env.is_set("ENABLE_PIPENV") and env.is_set("ENABLE_MICROPIPENV"):
        return Install(
            error="assemble stops with exit 3: ENABLE_PIPENV and ENABLE_MICROPIPENV are both"
            f" set ({env.cite('ENABLE_PIPENV')}, {env.cite('ENABLE_MICROPIPENV')}); unset one"
        )
    draft = _Draft()
    upgrade = env.is_set("UPGRADE_PIP_TO_LATEST")
    if upgrade:
        draft.steps.append(
            Step("pip install -U pip setuptools wheel", env.cite("UPGRADE_PIP_TO_LATEST"))
        )
    _dependencies(view, env, files, draft)
    project = _project(view, env, draft)
    collectstatic = _collectstatic(view, env, files, draft)
    return Install(
        tool=draft.tool,
        file=draft.file,
        project=project,
        upgrade_pip=upgrade,
        collectstatic=collectstatic,
        steps=tuple(draft.steps),
        notes=tuple(draft.notes),
        reads=tuple(draft.reads),
        error=draft.error,
    )


def _dependencies(
    view: SourceView, env: Variables, files: Mapping[str, bytes], draft: _Draft
) -> None:
    if env.is_set("ENABLE_PIPENV"):
        _pipenv(view, env, files, draft)
    elif env.is_set("ENABLE_MICROPIPENV"):
        _micropipenv(view, env, files, draft)
    elif view.is_file("requirements.txt"):
        draft.tool, draft.file = "pip", "requirements.txt"
        draft.reads += dependencies.with_includes(files, "requirements.txt")
        draft.steps.append(
            Step(
                "pip install -r requirements.txt",
                "requirements.txt exists; ENABLE_PIPENV and ENABLE_MICROPIPENV are unset",
            )
        )
        passed = [name for name in LOCK_FILES if view.is_file(name)]
        if passed:
            draft.notes.append(
                f"{' and '.join(passed)} not used: requirements.txt comes first (as in"
                " sclorg's image)"
            )
    elif view.is_file("uv.lock"):
        _uv(view, env, files, draft)
    elif view.is_file("poetry.lock"):
        _poetry(view, files, draft)
    else:
        draft.notes.append(
            "no dependencies are installed: no requirements.txt, uv.lock or poetry.lock, and"
            " neither ENABLE_PIPENV nor ENABLE_MICROPIPENV is set"
        )


def _uv(view: SourceView, env: Variables, files: Mapping[str, bytes], draft: _Draft) -> None:
    pin = env.value("PIN_UV_VERSION")
    draft.tool, draft.file = "uv", "uv.lock"
    draft.reads += [name for name in ("uv.lock", "pyproject.toml") if name in files]
    unset = "no requirements.txt; ENABLE_PIPENV and ENABLE_MICROPIPENV are unset"
    draft.steps.append(
        Step(
            f"pip install --target /tmp/buildpy-tools/uv uv{'==' + pin if pin else ''}",
            "uv.lock exists; uv is for the build only, never in the image"
            + (f"; {env.cite('PIN_UV_VERSION')}" if pin else ""),
        )
    )
    draft.steps.append(
        Step(
            "uv export --locked --offline --no-emit-project --no-default-groups"
            " | uv pip install --no-deps -r -",
            f"uv.lock exists; {unset}; exactly the locked versions, without dependency groups",
        )
    )
    if view.is_file("poetry.lock"):
        draft.notes.append("poetry.lock not used: uv.lock comes first")
    if not view.is_file("pyproject.toml"):
        draft.error = "uv.lock without pyproject.toml: assemble fails (uv needs both)"


def _poetry(view: SourceView, files: Mapping[str, bytes], draft: _Draft) -> None:
    draft.tool, draft.file = "pip", "poetry.lock"
    draft.reads += [name for name in ("poetry.lock", "pyproject.toml") if name in files]
    draft.steps.append(
        Step(
            "pip install --no-deps -r <poetry.lock's main pins, with hashes>",
            "poetry.lock exists; no requirements.txt or uv.lock; ENABLE_PIPENV and"
            " ENABLE_MICROPIPENV are unset; exactly the locked versions (no poetry, no"
            " micropipenv)",
        )
    )


def _pipenv(view: SourceView, env: Variables, files: Mapping[str, bytes], draft: _Draft) -> None:
    pin = env.value("PIN_PIPENV_VERSION")
    why = env.cite("ENABLE_PIPENV") + (f"; {env.cite('PIN_PIPENV_VERSION')}" if pin else "")
    draft.tool = "pipenv"
    draft.steps.append(
        Step(
            f"pip install -U pipenv{'==' + pin if pin else ''}",
            f"{why}; in a virtualenv of its own",
        )
    )
    if view.is_file("Pipfile"):
        draft.file = "Pipfile"
        draft.reads += [name for name in ("Pipfile.lock", "Pipfile") if name in files]
        draft.steps.append(Step("pipenv install --deploy", "Pipfile exists (with ENABLE_PIPENV)"))
    elif view.is_file("requirements.txt"):
        draft.file = "requirements.txt"
        draft.reads += dependencies.with_includes(files, "requirements.txt")
        draft.steps.append(
            Step("pipenv install -r requirements.txt", "no Pipfile; requirements.txt exists")
        )
    else:
        draft.notes.append("pipenv has nothing to install: no Pipfile and no requirements.txt")


def _micropipenv(
    view: SourceView, env: Variables, files: Mapping[str, bytes], draft: _Draft
) -> None:
    draft.tool = "micropipenv"
    draft.steps.append(
        Step(
            "pip install -U micropipenv[toml]",
            f"{env.cite('ENABLE_MICROPIPENV')}; in a virtualenv of its own",
        )
    )
    found = next((name for name in MICROPIPENV_FILES if view.is_file(name)), None)
    if found is None:
        draft.error = (
            "micropipenv install --deploy finds none of Pipfile.lock, poetry.lock,"
            " requirements.txt: assemble is expected to fail"
        )
        return
    draft.file = found
    if found == "requirements.txt":
        draft.reads += dependencies.with_includes(files, found)
    else:
        draft.reads += [name for name in (found, "pyproject.toml") if name in files]
    draft.steps.append(
        Step(
            "micropipenv install --deploy",
            f"{found} is the first of {', '.join(MICROPIPENV_FILES)} in the source",
        )
    )


def _project(view: SourceView, env: Variables, draft: _Draft) -> str | None:
    """``pip install .`` once, for setup.py/setup.cfg or an installable pyproject.toml."""
    project = None
    setup = [name for name in ("setup.py", "setup.cfg") if view.is_file(name)]
    if setup and env.is_set("DISABLE_SETUP_PY_PROCESSING"):
        draft.notes.append(
            f"{'/'.join(setup)} not installed: {env.cite('DISABLE_SETUP_PY_PROCESSING')}"
        )
    elif setup:
        project = "setup.py/setup.cfg"
        draft.reads += setup
    if view.is_file("pyproject.toml"):
        if env.is_set("DISABLE_PYPROJECT_TOML_PROCESSING"):
            draft.notes.append(
                f"pyproject.toml not installed: {env.cite('DISABLE_PYPROJECT_TOML_PROCESSING')}"
            )
        elif project is None and draft.file == "uv.lock" and _VIRTUAL.search(view.text("uv.lock")):
            draft.notes.append(
                "the project itself is not installed: uv.lock marks it virtual (no"
                " [build-system]), as uv would"
            )
        elif (
            project is None
            and draft.file == "poetry.lock"
            and draft.tool == "pip"
            and _NOT_A_PACKAGE.search(view.text("pyproject.toml"))
        ):
            draft.notes.append(
                "the project itself is not installed: pyproject.toml sets package-mode ="
                " false, as poetry would"
            )
        elif _INSTALLABLE.search(view.text("pyproject.toml")):
            project = project or "pyproject.toml"
            if "pyproject.toml" not in draft.reads:
                draft.reads.append("pyproject.toml")
        elif project is None:
            draft.notes.append(
                "pyproject.toml has no [build-system], [project] or [tool.poetry] table:"
                " the project is not installed"
            )
    if project is not None:
        draft.steps.append(Step("pip install .", f"{', '.join(setup) or 'pyproject.toml'} exists"))
    return project


def _collectstatic(
    view: SourceView, env: Variables, files: Mapping[str, bytes], draft: _Draft
) -> bool:
    """``manage.py collectstatic`` when Django gets installed and it is not disabled."""
    django = names(files, draft.reads, "django")
    if django is None:
        return False
    if env.is_set("DISABLE_COLLECTSTATIC"):
        draft.notes.append(f"collectstatic skipped: {env.cite('DISABLE_COLLECTSTATIC')}")
        return False
    where = env.value("APP_HOME") or "."
    manage = view.locate("manage.py", where)
    reason = f"Django is named in {django}; DISABLE_COLLECTSTATIC is unset"
    if manage is not None and not view.is_file(manage):
        reason += f"; there is no {manage}: assemble warns and skips it"
    reason += f"; in {'$HOME' if where == '.' else where}"
    draft.steps.append(Step("python manage.py collectstatic --noinput", reason))
    return True
