"""--scripts-url: s2i's order (URL, then .s2i/bin, then the label), what is uploaded, what
is refused, and what ``buildpy plan`` says; against the fake engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeEngine
from test_build import _Sink
from test_plan_command import PHASED

from buildpy import build, cli, preview, scripts
from buildpy import plan as build_plan
from buildpy.config import BuildOptions
from buildpy.errors import BuilderImageError, UsageError

LABEL = {"io.openshift.s2i.scripts-url": "image:///usr/libexec/s2i"}


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / ".s2i" / "bin").mkdir(parents=True)
    (root / "requirements.txt").write_text("flask\ngunicorn\n")
    (root / "wsgi.py").write_text("application = None\n")
    return root


@pytest.fixture
def hostdir(tmp_path: Path) -> Path:
    found = tmp_path / "s2iscripts"
    found.mkdir()
    return found


def script(directory: Path, name: str, body: str) -> None:
    (directory / name).write_text(f"#!/bin/sh\n{body}\n")


def make_plan(app: Path, url: str | None, **kwargs: object) -> build_plan.BuildPlan:
    options = BuildOptions(source=app, builder="phased", scripts_url=url, **kwargs)  # type: ignore[arg-type]
    return build_plan.make(options, describe=lambda root: None)


def test_image_url_names_every_script_and_ignores_the_label() -> None:
    given = scripts.parse_url("image:///opt/s2i/")
    chosen = scripts.choose({}, {"assemble"}, "b", given)
    assert chosen == scripts.Scripts("/opt/s2i/assemble", "/opt/s2i/run", "/opt/s2i/save-artifacts")


def test_file_url_scripts_win_over_source_ones_which_win_over_the_label(
    app: Path, hostdir: Path
) -> None:
    script(hostdir, "run", "echo from-url")
    script(app / ".s2i" / "bin", "run", "echo from-source")
    script(app / ".s2i" / "bin", "assemble", "echo from-source")
    plan = make_plan(app, f"file://{hostdir}")
    assert plan.uploaded_scripts == {
        "run": hostdir / "run",
        "assemble": app / ".s2i" / "bin" / "assemble",
    }
    chosen = scripts.choose(LABEL, set(plan.uploaded_scripts), "b", plan.scripts_url)
    assert (chosen.assemble, chosen.run) == ("/tmp/scripts/assemble", "/tmp/scripts/run")
    assert chosen.save_artifacts == "/usr/libexec/s2i/save-artifacts"
    assert plan.script_origin("run") == f"--scripts-url file://{hostdir}"
    assert plan.script_origin("assemble") == ".s2i/bin/assemble in the source"
    assert plan.script_origin("save-artifacts") is None


def test_an_image_url_leaves_source_scripts_unused(app: Path) -> None:
    script(app / ".s2i" / "bin", "run", "echo from-source")
    plan = make_plan(app, "image:///opt/s2i")
    assert plan.uploaded_scripts == {}
    assert plan.script_origin("run") == "--scripts-url image:///opt/s2i"


def test_a_relative_file_url_is_read_from_the_current_directory(
    app: Path, hostdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(hostdir, "assemble", "true")
    monkeypatch.chdir(hostdir.parent)
    plan = make_plan(app, "file://s2iscripts")
    assert plan.uploaded_scripts["assemble"].resolve() == hostdir / "assemble"


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://example.invalid/s2i", "never downloads scripts"),
        ("http://example.invalid/s2i", "never downloads scripts"),
        ("image://relative/s2i", "absolute path"),
        ("ftp://example.invalid/s2i", "not an image:// or file:// URL"),
        ("/just/a/path", "not an image:// or file:// URL"),
        ("file:///no/such/dir", "is not a directory"),
    ],
)
def test_refused_before_any_engine_work(app: Path, url: str, said: str) -> None:
    with pytest.raises(UsageError, match=said) as info:
        make_plan(app, url)
    assert info.value.hint and info.value.exit_code == 2


def test_a_directory_without_scripts_is_refused(app: Path, hostdir: Path) -> None:
    (hostdir / "README").write_text("")
    with pytest.raises(UsageError, match="holds no assemble, run or save-artifacts"):
        make_plan(app, f"file://{hostdir}")


def test_no_assemble_anywhere_is_a_builder_error_naming_the_url(app: Path, hostdir: Path) -> None:
    script(hostdir, "run", "true")
    given = scripts.parse_url(f"file://{hostdir}")
    with pytest.raises(BuilderImageError, match="nor has --scripts-url") as info:
        scripts.choose({}, {"run"}, "b", given)
    assert info.value.exit_code == 6 and "--scripts-url directory" in (info.value.hint or "")


def test_the_build_uploads_url_scripts_and_runs_them(app: Path, hostdir: Path) -> None:
    script(hostdir, "assemble", "echo url-assemble")
    script(hostdir, "run", "echo url-run")
    engine = FakeEngine(stored={"phased": PHASED})
    result = build.run(make_plan(app, f"file://{hostdir}"), engine, output=_Sink())
    assert result.phases == 1  # a foreign assemble has no dependency phase
    assert engine.created[0].command[-1] == "/tmp/scripts/assemble"
    assert engine.uploaded_file("scripts/run") == b"#!/bin/sh\necho url-run\n"
    assert engine.uploaded_members()["scripts/assemble"].mode & 0o111
    assert 'CMD ["/tmp/scripts/run"]' in engine.commits[0].changes


def test_an_image_url_run_is_the_command(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    build.run(make_plan(app, "image:///opt/s2i"), engine, output=_Sink())
    assert engine.created[0].command[-1] == "/opt/s2i/assemble"
    assert 'CMD ["/opt/s2i/run"]' in engine.commits[0].changes


def test_a_url_run_only_keeps_the_dependency_phase(app: Path, hostdir: Path) -> None:
    script(hostdir, "run", "echo url-run")
    engine = FakeEngine(stored={"phased": PHASED})
    result = build.run(make_plan(app, f"file://{hostdir}"), engine, output=_Sink())
    assert result.phases == 2  # the builder's assemble still runs both phases
    assert 'CMD ["/tmp/scripts/run"]' in engine.commits[-1].changes
    assert engine.created[-1].command[-1] == "/usr/libexec/s2i/assemble"


def test_plan_reports_each_scripts_origin(app: Path, hostdir: Path) -> None:
    script(hostdir, "assemble", "true")
    engine = FakeEngine(stored={"phased": PHASED})
    found = preview.make(make_plan(app, f"file://{hostdir}"), engine, {})
    origins = {s.name: s.origin for s in found.scripts}
    assert origins["assemble"] == f"--scripts-url file://{hostdir}"
    assert origins["run"].startswith("image label io.openshift.s2i.scripts-url")
    assert found.install.decided_by == "scripts-url"
    assert "--scripts-url assemble decides" in found.install.notes[0]
    assert (
        found.phase_reason
        == f"assemble comes from --scripts-url file://{hostdir}, which has no dependency phase"
    )
    assert f"assemble from --scripts-url file://{hostdir}" in preview.render(found)
    report = preview.report(found)
    assert report["scripts"]["assemble"]["origin"] == f"--scripts-url file://{hostdir}"


def test_the_option_reaches_the_build_options(app: Path) -> None:
    args = cli._parser().parse_args(["build", str(app), "--scripts-url", "image:///s2i"])
    assert cli._build_options(args).scripts_url == "image:///s2i"
    args = cli._parser().parse_args(["plan", str(app), "--scripts-url", "file://x"])
    assert cli._build_options(args).scripts_url == "file://x"
