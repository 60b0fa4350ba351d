"""Two phases on a foreign builder (no io.buildpy.assemble-phases): the decision, the
command of the first run, and the build against the fake engine."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fakes import BUILDER, FakeEngine, tree
from structlog.testing import capture_logs

from buildpy import build, cache, foreign, layer, log
from buildpy import plan as build_plan
from buildpy.config import BuildOptions
from buildpy.session import PHASE_VARIABLE

HOME = "/opt/app-root/src"
REQUIREMENTS = {"requirements.txt": b"flask\n"}


class _Sink:
    def write(self, chunk: bytes) -> int:
        return len(chunk)

    def flush(self) -> None:
        pass


def make_plan(app: Path, **kwargs: object) -> build_plan.BuildPlan:
    options = BuildOptions(source=app, builder=BUILDER.ref, **kwargs)  # type: ignore[arg-type]
    return build_plan.make(options, describe=lambda root: None)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return tree(
        tmp_path / "app",
        {
            "app.py": "print('hi')\n",
            "requirements.txt": "flask\n",
            "requirements/extra.txt": "six\n",
            ".s2i/environment": "GREETING=Hello\nPIP_INDEX_URL=http://127.0.0.1:1/simple\n",
        },
    )


# ------------------------------------------------------------------ the decision, pure


@pytest.mark.parametrize(
    ("files", "env", "expected"),
    [
        (REQUIREMENTS, {}, None),
        ({**REQUIREMENTS, "setup.py": b"setup()"}, {}, "setup.py"),
        ({**REQUIREMENTS, "setup.cfg": b"[metadata]"}, {}, "setup.cfg"),
        ({**REQUIREMENTS, "setup.py": b""}, {"DISABLE_SETUP_PY_PROCESSING": "1"}, None),
        ({"pyproject.toml": b"[build-system]\nrequires = []\n"}, {}, "pyproject.toml"),
        ({"pyproject.toml": b'[project]\nname = "x"\n'}, {}, "pyproject.toml"),
        ({"pyproject.toml": b"[tool.black]\nline-length = 99\n", **REQUIREMENTS}, {}, None),
        (
            {"pyproject.toml": b"[build-system]\n"},
            {"DISABLE_PYPROJECT_TOML_PROCESSING": "1"},
            None,
        ),
        ({"Pipfile": b"", "Pipfile.lock": b"{}"}, {"ENABLE_PIPENV": "1"}, "ENABLE_PIPENV"),
        (REQUIREMENTS, {"ENABLE_MICROPIPENV": "true"}, "ENABLE_MICROPIPENV"),
        (REQUIREMENTS, {"ENABLE_PIPENV": ""}, None),  # set but empty: off, as in bash
    ],
)
def test_when_running_assemble_twice_would_change_the_image(
    files: dict[str, bytes], env: dict[str, str], expected: str | None
) -> None:
    reason = foreign.split_reason(files, env, HOME, "sclorg")
    assert (reason is None) == (expected is None), reason
    if expected is not None:
        assert reason is not None and expected in reason


@pytest.mark.parametrize("home", ["", "/", "relative"])
def test_a_builder_without_a_home_keeps_one_phase(home: str) -> None:
    reason = foreign.split_reason(REQUIREMENTS, {}, home, "odd")
    assert reason is not None and "HOME" in reason


def test_the_first_run_removes_what_it_placed_by_top_level_name() -> None:
    files = {"requirements.txt": b"", "requirements/a.txt": b"", ".s2i/environment": b""}
    assert foreign.top_level(files) == (".s2i", "requirements", "requirements.txt")
    command = foreign.dependency_command("/usr/libexec/s2i/assemble", files)
    assert command[-4:] == ("/usr/libexec/s2i/assemble", ".s2i", "requirements", "requirements.txt")


def _run_dependency_script(tmp_path: Path, status: int, home: Path | str) -> int:
    assemble = tmp_path / "assemble"
    assemble.write_text(
        "#!/bin/sh\n"
        'mkdir -p "$HOME/requirements" "$HOME/it s"\n'
        'touch "$HOME/requirements/a.txt" "$HOME/it s/x" "$HOME/kept"\n'
        f"exit {status}\n"
    )
    assemble.chmod(0o755)
    names = ["requirements", "it s", "$(touch pwned)"]
    done = subprocess.run(
        ["/bin/sh", "-c", foreign.DEPENDENCY_SCRIPT, "buildpy-dependencies", str(assemble), *names],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        check=False,
    )
    return done.returncode


def test_dependency_script_keeps_assembles_status_and_removes_only_given_names(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert _run_dependency_script(tmp_path, 0, home) == 0
    assert sorted(p.name for p in home.iterdir()) == ["kept"]
    assert not (tmp_path / "pwned").exists()  # names are arguments, never shell code

    failed = tmp_path / "failed"
    failed.mkdir()
    assert _run_dependency_script(tmp_path, 3, failed) == 3
    assert (failed / "requirements" / "a.txt").exists()  # nothing removed after a failure


# ------------------------------------------------------------------ the build, fake engine


def test_foreign_builder_builds_a_marked_layer_then_reuses_it(app: Path) -> None:
    engine = FakeEngine()
    first = build.run(make_plan(app), engine, output=_Sink())
    assert (first.phases, first.dependencies_reused) == (2, False)
    deps_spec, final_spec = engine.created
    assert deps_spec.image == BUILDER.id
    # the builder's own assemble, then the dependency files' top-level names removed
    assert deps_spec.command[4:7] == ("/bin/sh", "-c", foreign.DEPENDENCY_SCRIPT)
    assert deps_spec.command[-3:] == (
        "/usr/libexec/s2i/assemble",
        "requirements",
        "requirements.txt",
    )
    # only the dependency files went up first; no buildpy phase variable anywhere
    first_upload = engine.uploads[0][1]
    assert b"app.py" not in first_upload and b"requirements/extra.txt" in first_upload
    env_scripts = [data for path, data in engine.uploads]
    assert all(PHASE_VARIABLE.encode() not in data for data in env_scripts)
    # installation variables are committed with the layer; the rest only seen by assemble
    assert deps_spec.env == {"PIP_INDEX_URL": "http://127.0.0.1:1/simple"}
    assert b"GREETING" in first_upload
    assert deps_spec.labels[foreign.FOREIGN_LABEL] == "1"
    assert cache.LINES_LABEL not in deps_spec.labels  # a foreign layer never grows
    # the second run: the builder's assemble on the layer, with the whole source
    assert final_spec.image == "sha256:result1"
    assert final_spec.command[-1] == "/usr/libexec/s2i/assemble"
    assert final_spec.env["GREETING"] == "Hello"

    (app / "app.py").write_text("print('changed')\n")
    engine.created.clear()
    second = build.run(make_plan(app), engine, output=_Sink())
    assert (second.phases, second.dependencies_reused) == (2, True)
    (only,) = engine.created
    assert only.image == "sha256:result1" and only.command[-1] == "/usr/libexec/s2i/assemble"


def test_foreign_key_is_never_an_own_builders_key(app: Path) -> None:
    plan = make_plan(app)
    own = replace(BUILDER, labels={**BUILDER.labels, layer.PHASES_LABEL: "dependencies"})
    assert layer.Inputs.of(plan, BUILDER).key != layer.Inputs.of(plan, own).key


def _statuses(engine: FakeEngine, statuses: list[int]) -> None:
    def next_status() -> None:
        engine.status = statuses.pop(0)

    engine.on_run = next_status


@contextmanager
def _logged() -> Iterator[list[MutableMapping[str, Any]]]:
    """The build's log events (structlog's, so the log is configured for JSON)."""
    log.configure(json=True, stream=io.StringIO())
    with capture_logs() as logs:
        yield logs


def _events(logs: list[MutableMapping[str, Any]]) -> str:
    return "\n".join(f"{entry['event']} {entry.get('reason', '')}" for entry in logs)


def test_a_first_run_that_fails_with_partial_source_falls_back_to_one_phase(app: Path) -> None:
    engine = FakeEngine()
    _statuses(engine, [2, 0])
    with _logged() as logs:
        result = build.run(make_plan(app), engine, output=_Sink())
    assert result.phases == 1 and not result.dependencies_reused
    assert [spec.image for spec in engine.created] == [BUILDER.id, BUILDER.id]
    assert len(engine.commits) == 1  # no dependency layer was kept
    assert "failed with only the dependency files" in _events(logs)


def test_a_second_run_that_fails_on_the_layer_falls_back_to_one_phase(app: Path) -> None:
    engine = FakeEngine()
    _statuses(engine, [0, 1, 0])
    with _logged() as logs:
        result = build.run(make_plan(app), engine, output=_Sink())
    assert result.phases == 1
    assert [spec.image for spec in engine.created] == [BUILDER.id, "sha256:result1", BUILDER.id]
    assert "failed on its dependency layer" in _events(logs)


def test_a_project_to_install_keeps_one_phase_and_says_so(app: Path) -> None:
    (app / "setup.py").write_text("from setuptools import setup\nsetup(name='app')\n")
    engine = FakeEngine()
    with _logged() as logs:
        result = build.run(make_plan(app), engine, output=_Sink())
    assert result.phases == 1 and len(engine.created) == 1
    said = _events(logs)
    assert "building in one phase" in said and "setup.py" in said
