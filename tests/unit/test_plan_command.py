"""`buildpy plan` against the fake engine: origins, masking, scripts, phases, reuse, output."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from fakes import BUILDER, FakeEngine

from buildpy import build, cache, cli, config, layer, preview, redact
from buildpy import plan as build_plan
from buildpy.config import BuildOptions
from buildpy.engine import ImageInfo
from buildpy.errors import BuilderImageError

ROOT = Path(__file__).resolve().parents[2]
PHASED = ImageInfo(
    id="sha256:phased",
    ref="phased",
    user="1001",
    env={"HOME": "/opt/app-root/src", "PATH": "/usr/bin"},
    labels={**BUILDER.labels, layer.PHASES_LABEL: "dependencies,application"},
)


class _Sink:
    def write(self, chunk: bytes) -> int:
        return len(chunk)

    def flush(self) -> None:
        pass


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / ".s2i").mkdir(parents=True)
    (root / "requirements.txt").write_text("flask\ngunicorn\n")
    (root / "wsgi.py").write_text("application = None\n")
    (root / ".s2i" / "environment").write_text("# settings\nGREETING=hello\nAPI_TOKEN = t0k\n")
    return root


def make_plan(app: Path, **kwargs: object) -> build_plan.BuildPlan:
    options = BuildOptions(source=app, builder="phased", **kwargs)  # type: ignore[arg-type]
    return build_plan.make(options, describe=lambda root: None)


def look(app: Path, engine: FakeEngine | None = None, **kwargs: object) -> preview.Preview:
    engine = engine or FakeEngine(stored={"phased": PHASED})
    return preview.make(make_plan(app, **kwargs), engine, {"builder": "--builder"})


def variable(found: preview.Preview, name: str, scope: str = "image") -> preview.Variable:
    return next(v for v in found.variables if v.name == name and v.scope == scope)


# ------------------------------------------------------------------------------ origins


def test_every_origin_with_its_line(app: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "extra.env"
    env_file.write_text("A=1\n\nGREETING=from-file\n")
    found = look(
        app, env_files=(env_file,), env=("B=2",), build_env=("PIP_INDEX_URL=http://x/simple",)
    )
    assert (variable(found, "PATH").origin, variable(found, "PATH").line) == ("image", None)
    assert variable(found, "API_TOKEN").origin == ".s2i/environment"
    assert variable(found, "API_TOKEN").line == 3
    greeting = variable(found, "GREETING")
    assert (greeting.value, greeting.origin, greeting.line) == (
        "from-file",
        f"--env-file {env_file}",
        3,
    )
    assert (variable(found, "B").origin, variable(found, "B").line) == ("-e", None)
    index = variable(found, "PIP_INDEX_URL", "build")
    assert (index.origin, index.scope) == ("--build-env", "build")
    assert variable(found, "PIP_CACHE_DIR", "build").origin == "buildpy"
    assert variable(found, "BUILDPY_ASSEMBLE_PHASE", "build").value.startswith("dependencies")


def test_a_build_only_value_beside_the_images_shows_both(app: Path) -> None:
    (app / ".s2i" / "environment").write_text("PIP_INDEX_URL=http://mirror/simple\n")
    found = look(app, build_env=("PIP_INDEX_URL=http://other/simple",))
    both = [(v.scope, v.origin) for v in found.variables if v.name == "PIP_INDEX_URL"]
    assert both == [("image", ".s2i/environment"), ("build", "--build-env")]


def test_ca_bundle_values_are_build_only(app: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("x")
    found = look(app, ca_bundle=bundle)
    cert = variable(found, "PIP_CERT", "build")
    assert (cert.origin, cert.value, cert.masked) == ("--ca-bundle", build_plan.CA_TARGET, False)


def test_build_only_files_are_named_never_shown(app: Path, tmp_path: Path) -> None:
    bundle, token = tmp_path / "ca.crt", tmp_path / "token"
    bundle.write_text("----CA----")
    token.write_text("s3cret-bytes")
    found = look(app, ca_bundle=bundle, secrets=(f"id=tok,src={token}",))
    assert found.files == (
        preview.BuildOnlyFile("--ca-bundle", build_plan.CA_TARGET),
        preview.BuildOnlyFile("--secret id=tok", "/run/secrets/tok"),
    )
    shown = preview.render(found) + json.dumps(preview.report(found))
    assert "/run/secrets/tok from --secret id=tok" in shown
    assert "s3cret-bytes" not in shown and "----CA----" not in shown


def test_settings_say_where_they_come_from(app: Path) -> None:
    (app / "pyproject.toml").write_text('[tool.buildpy]\ntag = "localhost/app"\nnetwork = "host"\n')
    cli_options = BuildOptions(source=app, network="none")
    origins = config.setting_origins(cli_options, frozenset({"network"}))
    assert origins == {
        "builder": "default",
        "tag": "[tool.buildpy] in pyproject.toml",
        "network": "--network",
    }


# ------------------------------------------------------------------------------ masking


def test_secrets_are_masked(app: Path) -> None:
    found = look(
        app,
        env=("PIP_EXTRA_INDEX_URL=https://bob:hunter2@mirror/simple https://t0ken@other/simple",),
        build_env=("PIP_INDEX_URL=http://plain/simple",),
    )
    extra = variable(found, "PIP_EXTRA_INDEX_URL")
    assert extra.value == "https://bob:***@mirror/simple https://***@other/simple"
    assert extra.masked
    assert (variable(found, "API_TOKEN").value, variable(found, "API_TOKEN").masked) == (
        "***",
        True,
    )
    assert variable(found, "PIP_INDEX_URL", "build").value == "***"  # --build-env: never shown
    assert not variable(found, "GREETING").masked
    shown = preview.render(found) + json.dumps(preview.report(found))
    for secret in ("hunter2", "t0ken", "t0k\n", "plain/simple"):
        assert secret not in shown


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("URL", "https://u:p@h/x", "https://u:***@h/x"),
        ("URL", "git+https://tok@github.com/o/r", "git+https://***@github.com/o/r"),
        ("URL", "see https://h/x and mailto:a@b", "see https://h/x and mailto:a@b"),
        ("GITHUB_TOKEN", "x", "***"),
        ("DB_PASSWORD", "x", "***"),
        ("AWS_SECRET_ACCESS_KEY", "x", "***"),
        ("SSH_KEY", "", ""),
        ("GREETING", "hi", "hi"),
    ],
)
def test_redaction_rules(key: str, value: str, expected: str) -> None:
    assert redact.shown(key, value)[0] == expected


def test_reasons_cite_masked_values_too(app: Path) -> None:
    (app / ".s2i" / "environment").write_text("APP_MODULE=wsgi\nWEB_CONCURRENCY=3\n")
    found = look(app)
    assert found.start.reasons[0] == "APP_MODULE=wsgi (.s2i/environment line 1)"
    assert found.start.workers == "WEB_CONCURRENCY=3 (.s2i/environment line 2)"


# ------------------------------------------------------------------------ scripts, phases


def test_scripts_and_phases_of_a_buildpy_builder(app: Path) -> None:
    found = look(app)
    assert [(s.name, s.path) for s in found.scripts][:2] == [
        ("assemble", "/usr/libexec/s2i/assemble"),
        ("run", "/usr/libexec/s2i/run"),
    ]
    assert found.scripts[0].origin.startswith("image label io.openshift.s2i.scripts-url=")
    assert (found.phases, found.phase_reason, found.buildpy_builder) == (2, None, True)
    assert (found.install.tool, found.start.kind) == ("pip", "gunicorn")


def test_a_foreign_builder_decides_for_itself(app: Path) -> None:
    found = look(app, engine=FakeEngine(stored={"phased": BUILDER}))
    assert found.phases == 2 and found.phase_reason is None and found.foreign
    assert "builder's own assemble" in dict(preview._build_rows(found))["phases"]
    assert found.install.decided_by == "builder" and found.install.tool is None
    assert "builder's own assemble decides" in found.install.notes[0]
    assert found.start.decided_by == "builder" and found.start.command == ()


def test_a_foreign_builder_with_a_project_to_install_keeps_one_phase(app: Path) -> None:
    (app / "setup.py").write_text("from setuptools import setup\nsetup(name='app')\n")
    found = look(app, engine=FakeEngine(stored={"phased": BUILDER}))
    assert found.phases == 1 and not found.foreign
    assert found.phase_reason and "no dependency phase of its own" in found.phase_reason
    assert "setup.py" in found.phase_reason
    assert found.reuse.status == "none"


def test_the_sources_own_assemble_decides_but_run_is_mirrored(app: Path) -> None:
    (app / ".s2i" / "bin").mkdir()
    (app / ".s2i" / "bin" / "assemble").write_text("#!/bin/sh\n")
    found = look(app)
    assert found.scripts[0] == preview.Script(
        "assemble", "/tmp/scripts/assemble", ".s2i/bin/assemble in the source"
    )
    assert found.install.decided_by == "source"
    assert found.phase_reason == "the source brings its own assemble (.s2i/bin/assemble)"
    assert found.start.kind == "gunicorn"  # gunicorn is guessed from every dependency file


def test_a_failing_assemble_has_nothing_to_start(app: Path) -> None:
    found = look(app, env=("ENABLE_PIPENV=1", "ENABLE_MICROPIPENV=1"))
    assert found.install.error and found.start.command == ()
    assert "no image" in found.start.notes[0]


# -------------------------------------------------------------------- dependency layer


def built(app: Path, engine: FakeEngine, **kwargs: object) -> None:
    build.run(make_plan(app, **kwargs), engine, output=_Sink())


def test_no_dependency_layer_in_one_phase(app: Path) -> None:
    found = look(app, cache=False)
    assert found.reuse.status == "none" and "--no-cache" in found.reuse.reason


def test_first_build_then_reuse(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    first = look(app, engine)
    assert first.reuse.status == "build" and "no earlier dependency layer" in first.reuse.reason
    built(app, engine)
    (app / "wsgi.py").write_text("application = 1\n")  # source only
    again = look(app, engine)
    assert (again.reuse.status, again.reuse.image) == ("reuse", first.reuse.image)
    assert again.reuse.image == layer.Inputs.of(make_plan(app), PHASED).tag


def test_added_lines_grow_and_removed_lines_rebuild(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    built(app, engine)
    earlier = look(app, engine).reuse.image
    (app / "requirements.txt").write_text("flask\ngunicorn\nsix\n")
    grown = look(app, engine).reuse
    assert (grown.status, grown.earlier) == ("grow", earlier)
    assert [str(c) for c in grown.changes] == ["requirements.txt changed (1 line added, 0 removed)"]
    (app / "requirements.txt").write_text("gunicorn\nsix\n")
    rebuilt = look(app, engine).reuse
    assert rebuilt.status == "build" and "since the last layer of this source" in rebuilt.reason
    assert rebuilt.earlier == earlier
    assert [str(c) for c in rebuilt.changes] == [
        "requirements.txt changed (1 line added, 1 removed)"
    ]


def test_another_sources_layer_with_the_same_inputs_is_counted_against(
    app: Path, tmp_path: Path
) -> None:
    """The growth name is shared by sources with the same inputs but requirement lines."""
    engine = FakeEngine(stored={"phased": PHASED})
    built(app, engine)
    other = tmp_path / "other"
    other.mkdir()
    (other / "requirements.txt").write_text("gunicorn\ndjango\n")
    found = look(other, engine).reuse
    assert found.status == "build" and "removed or edited" in found.reason
    assert found.earlier == look(app, engine).reuse.image
    assert [str(c) for c in found.changes] == ["requirements.txt changed (1 line added, 1 removed)"]
    (other / "requirements.txt").write_text("gunicorn\nflask\ndjango\n")
    assert look(other, engine).reuse.status == "grow"  # from the other source's layer


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"build_env": ("PIP_INDEX_URL=http://other/simple",)}, "PIP_INDEX_URL set"),
        ({"env": ("UPGRADE_PIP_TO_LATEST=1",)}, "UPGRADE_PIP_TO_LATEST set"),
    ],
)
def test_a_changed_variable_is_named(app: Path, change: dict[str, object], said: str) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    built(app, engine)
    found = look(app, engine, **change).reuse
    assert found.status == "build" and [str(c) for c in found.changes] == [said]
    assert "http://other" not in json.dumps(preview.report(look(app, engine, **change)))


def test_a_changed_file_and_a_rebuilt_builder_are_named(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    built(app, engine)
    (app / "requirements.txt").write_text("flask\n")
    (app / "constraints.txt").write_text("flask<4\n")
    engine.stored["phased"] = ImageInfo(id="sha256:rebuilt", ref="phased", labels=PHASED.labels)
    found = look(app, engine).reuse
    assert found.earlier is not None and found.earlier.startswith("localhost/buildpy-cache/")
    assert [str(c) for c in found.changes] == [
        "the builder changed (the image was rebuilt)",
        "constraints.txt added",
        "requirements.txt changed (0 lines added, 1 removed)",
    ]


# ------------------------------------------------------------------------------ output


def test_json_has_every_documented_field(app: Path) -> None:
    report = preview.report(look(app))
    text = json.dumps(report)
    assert json.loads(text)["schema_version"] == preview.SCHEMA_VERSION == 1
    doc = (ROOT / "docs" / "reference" / "plan-json.md").read_text()
    documented = set(re.findall(r"^\| `([\w.\[\]-]+)`", doc, re.MULTILINE))
    assert _paths(report) <= documented, sorted(_paths(report) - documented)


def _paths(value: object, prefix: str = "") -> set[str]:
    """Every field path of the report: a.b, lists as a[].b, scripts by its one name."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            name = "scripts.NAME" if prefix == "scripts" else f"{prefix}.{key}".lstrip(".")
            found |= {name} | _paths(item, name)
    elif isinstance(value, list):
        for item in value:
            found |= _paths(item, f"{prefix}[]")
    return found


def test_text_is_aligned_sections(app: Path) -> None:
    found = look(app)
    text = preview.render(found)
    titles = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert titles == [
        "Build",
        "Installer: pip (requirements.txt)",
        "Start: gunicorn wsgi --bind=0.0.0.0:8080 --access-logfile=-",
        f"Dependency layer: built ({found.reuse.image})",
        "Variables",
    ]
    rows = [line for line in text.split("\n\nVariables")[0].splitlines() if line.startswith("  ")]
    labelled = {m.end() for m in map(re.compile(r"  \S+ +").match, rows) if m}
    assert len(labelled) == 1  # one value column for every section
    column = labelled.pop()
    assert all(len(row) - len(row.lstrip()) >= column for row in rows if row[2] == " ")
    assert re.search(r"\n  API_TOKEN +\*\*\* +\.s2i/environment line 3\n", text)


def test_plan_takes_every_option_of_build() -> None:
    subparsers = next(
        action
        for action in cli._parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    options = {
        name: {o for a in subparsers.choices[name]._actions for o in a.option_strings}
        for name in ("build", "plan")
    }
    # --as-containerfile is what build does instead of building, not an input of the build
    assert options["plan"] == options["build"] - {"--as-containerfile"}
    assert {"-E", "--environment-file", "--env-file", "--build-env"} <= options["plan"]


def test_a_missing_builder_is_the_builds_error(app: Path) -> None:
    with pytest.raises(BuilderImageError, match="not in local storage"):
        look(app, engine=FakeEngine(stored={}))


def test_each_layer_made_or_reused_takes_the_sources_name(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    built(app, engine)
    name = cache.source_tag(str(app), "phased")
    first = engine.find_image(name)
    assert first is not None and first.labels[cache.INPUTS_LABEL]
    (app / "requirements.txt").write_text("six\n")
    built(app, engine)
    second = engine.find_image(name)
    assert second is not None and second.id != first.id
    (app / "requirements.txt").write_text("flask\ngunicorn\n")
    built(app, engine)  # reused: the name comes back
    again = engine.find_image(name)
    assert again is not None and again.id == first.id
