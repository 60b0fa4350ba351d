"""The command line: exit codes, ERROR lines and hints, stdout kept for results."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from buildpy import cli, errors


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_source_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "build", str(tmp_path / "nope"))
    assert code == errors.SourceError.exit_code == 3
    assert out == ""
    assert "ERROR: source" in err and "does not exist" in err


def test_bad_env_file_exits_4_naming_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("A=1\n\nB C\n")
    code, _, err = run(capsys, "build", str(tmp_path), "--env-file", str(env_file))
    assert code == 4
    assert f"{env_file}, line 3" in err


def test_bad_dash_e_exits_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "build", str(tmp_path), "-e", "NOEQUALS")
    assert code == 4
    assert "hint:" in err


def test_silent_engine_exits_5(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{tmp_path}/none.sock")
    code, out, err = run(capsys, "build", str(tmp_path))
    assert code == 5
    assert out == ""
    assert "no Podman service answers" in err and "hint:" in err


def test_usage_error_is_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["build"])
    assert info.value.code == 2


def test_exit_codes_are_distinct() -> None:
    codes = [kind.exit_code for kind in errors.EXIT_CODES]
    assert len(codes) == len(set(codes))
    assert 0 not in codes


def test_documented_exit_codes_match_the_code() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "reference" / "exit-codes.md").read_text()
    for kind in errors.EXIT_CODES:
        assert f"| {kind.exit_code} | `{kind.__name__}`" in doc, kind.__name__


def test_doctor_format_is_text_or_json() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["doctor", "--format", "xml"])
    assert info.value.code == 2


def test_the_cli_imports_doctor_only_when_asked() -> None:
    import subprocess
    import sys

    code = "import sys, buildpy.cli; sys.exit('buildpy.doctor' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("2.5s", 2.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert cli.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "soon", "1d", "-5s", "m"])
def test_bad_durations_are_usage_errors(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["build", ".", "--timeout", text])
    assert info.value.code == 2
    assert "--timeout" in capsys.readouterr().err


def test_a_build_past_its_timeout_stops_and_removes_its_container(tmp_path: Path) -> None:
    import time

    from fakes import FakeEngine

    from buildpy import build
    from buildpy import plan as build_plan
    from buildpy.config import BuildOptions

    (tmp_path / "app.py").write_text("print('hi')\n")
    engine = FakeEngine()
    engine.on_run = lambda: time.sleep(5)
    plan = build_plan.make(BuildOptions(source=tmp_path), describe=lambda root: None)
    started = time.monotonic()
    with pytest.raises(errors.TimedOut) as info, cli._deadline(0.3):
        build.run(plan, engine, output=io.BytesIO())
    assert time.monotonic() - started < 3
    assert info.value.exit_code == 124 and info.value.hint
    assert engine.removed == ["ctr1"]


def test_environment_file_spellings_of_s2i_are_env_file() -> None:
    args = cli._parser().parse_args(
        ["build", "src", "-E", "a", "--env-file", "b", "--environment-file", "c", "-E", "d"]
    )
    assert args.env_file == [Path("a"), Path("b"), Path("c"), Path("d")]


def test_a_bad_secret_exits_2_before_any_engine_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "build", str(tmp_path), "--secret", "id=a,src=/nowhere/at/all")
    assert code == errors.UsageError.exit_code == 2
    assert out == ""
    assert "ERROR: --secret id=a: /nowhere/at/all is not a readable file" in err
    assert "hint: give a readable file with src=FILE" in err


def test_importing_a_missing_cache_is_a_quiet_success(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first CI run has no cache yet: exit 0 with an info line, before any engine."""
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{tmp_path}/none.sock")
    code, out, err = run(capsys, "cache", "import", str(tmp_path / "absent"))
    assert (code, out) == (0, "")
    assert "no cache to import" in err


def test_importing_a_directory_that_is_not_a_cache_exits_9(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{tmp_path}/none.sock")
    (tmp_path / "notes.txt").write_text("mine\n")
    code, out, err = run(capsys, "cache", "import", str(tmp_path))
    assert code == errors.CacheDirError.exit_code == 11
    assert out == "" and "no buildpy-cache.json" in err and "hint:" in err


def test_exporting_a_missing_source_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "cache", "export", str(tmp_path / "c"), str(tmp_path / "nope"))
    assert code == 3 and "does not exist" in err
    assert not (tmp_path / "c").exists()


def test_argument_errors_are_an_error_line_and_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["build", ".", "--timeout", "soon"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "ERROR: argument --timeout: invalid duration value: 'soon'",
        "  hint: see `buildpy build --help`",
    ]


def test_the_program_collects_garbage_only_once_its_modules_are_loaded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gc
    import os
    import subprocess
    import sys

    code = (
        "import gc, sys; from buildpy import cli; sys.argv = ['buildpy', 'builder', 'list'];"
        " code = cli.main(); print(code, gc.isenabled(), gc.get_freeze_count() > 0)"
    )
    env = {**os.environ, "CONTAINER_HOST": "unix:///nonexistent/podman.sock"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.splitlines()[-1] == "0 True True", done.stderr
    # called with arguments (a test, a caller of its own), it leaves the collector alone
    monkeypatch.setenv("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
    frozen = gc.get_freeze_count()
    assert cli.main(["builder", "list"]) == 0 and gc.isenabled()
    assert gc.get_freeze_count() == frozen
    capsys.readouterr()
