"""What `buildpy build` writes on stderr: lines for people by default, JSON on request,
quiet with -q; the builder's output set apart; buildpy's markers never shown."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fakes import BUILDER, FakeEngine

from buildpy import builders, cli, log
from buildpy.engine import ImageInfo

TAG = "localhost/app:1"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "app.py").write_text("print('hi')\n")
    return root


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """The engine every command of ``cli.main`` gets in these tests."""
    fake = FakeEngine()
    fake.output = [
        b"---> Installing application source ...\nBUILDPY_APPLICATION_PHASE=run\n",
        b"Successfully installed fla",  # a line split across chunks
        b"sk-3.0\n",
    ]

    @contextmanager
    def engine() -> Iterator[FakeEngine]:
        yield fake

    monkeypatch.setattr(cli, "_engine", engine)
    return fake


@pytest.fixture(autouse=True)
def fresh_log() -> Iterator[None]:
    yield
    log.configure(json=True, stream=io.StringIO())  # later tests' lines go nowhere shared


def build(capsys: pytest.CaptureFixture[str], app: Path, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["build", str(app), "--tag", TAG, "--builder", BUILDER.ref, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_build_logs_one_line_per_stage_then_a_summary(
    capsys: pytest.CaptureFixture[str], app: Path, engine: FakeEngine
) -> None:
    code, out, err = build(capsys, app)
    assert (code, out) == (0, f"{TAG}\n")
    lines = err.splitlines()
    starts = [
        "builder localhost/buildpy/python-311 (builder)",
        "building in one phase",
        "source uploaded",
        "running assemble (/usr/libexec/s2i/assemble)",
        "  | ---> Installing application source ...",
        "  | Successfully installed flask-3.0",
        "assemble done",
        "committed result1",
        f"built {TAG}: image result1",
    ]
    assert [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in starts] == (
        sorted(range(len(starts)))
    ), err
    assert len(lines) == len(starts), err
    for stage in ("builder", "source uploaded", "assemble done", "committed"):
        line = next(line for line in lines if line.startswith(stage))
        assert line.endswith(" s") and float(line.split()[-2]) >= 0, line
    assert lines[-1].endswith("one phase (no dependency layer)"), lines[-1]
    assert "{" not in err and "\033[" not in err  # no JSON, no colors off a terminal


def test_the_builders_markers_never_reach_the_log(
    capsys: pytest.CaptureFixture[str], app: Path, engine: FakeEngine
) -> None:
    for argv in ((), ("--log-format", "json"), ("-v",)):
        code, _, err = build(capsys, app, *argv)
        assert code == 0 and "BUILDPY_" not in err, err
    engine.status = 3
    code, _, err = build(capsys, app)
    assert code == 7 and "BUILDPY_" not in err, err


def test_json_logs_are_one_event_per_line_with_the_output_as_events(
    capsys: pytest.CaptureFixture[str], app: Path, engine: FakeEngine
) -> None:
    code, out, err = build(capsys, app, "--log-format", "json")
    assert (code, out) == (0, f"{TAG}\n")
    events = [json.loads(line) for line in err.splitlines()]
    names = [event["event"] for event in events]
    assert names[0] == "builder ready" and names[-1] == "built"
    assert {"source uploaded", "running assemble", "assembled", "committed"} <= set(names)
    said = [event["line"] for event in events if event["event"] == "output"]
    assert said == ["---> Installing application source ...", "Successfully installed flask-3.0"]
    built = events[-1]
    assert built["tag"] == TAG and built["image"] == "result1" and built["phases"] == 1
    assert built["dependencies_reused"] is False and built["seconds"] >= 0 and "size" in built


def test_format_json_prints_the_result_as_the_built_event_says_it(
    capsys: pytest.CaptureFixture[str], app: Path, engine: FakeEngine
) -> None:
    code, out, err = build(capsys, app, "--format", "json", "--log-format", "json")
    assert code == 0 and out.count("\n") == 1, out
    result = json.loads(out)
    built = json.loads(err.splitlines()[-1])
    assert result["image"] == "sha256:result1" and built["image"] == "result1"
    logged = {k: v for k, v in built.items() if k not in ("event", "level", "timestamp")}
    assert {**logged, "image": result["image"]} == result
    assert {"tag", "size", "seconds", "phases", "dependencies_reused"} <= set(result)
    assert {"assemble_seconds", "upload_seconds", "commit_seconds"} <= set(result)


def test_format_json_leaves_the_log_as_it_is(
    capsys: pytest.CaptureFixture[str], app: Path, engine: FakeEngine
) -> None:
    code, out, err = build(capsys, app, "--format", "json")
    assert code == 0 and json.loads(out)["tag"] == TAG
    assert err.splitlines()[-1].startswith(f"built {TAG}: image result1") and "{" not in err
    code, out, err = build(capsys, app, "--format", "json", "-q")
    assert (code, err) == (0, "") and json.loads(out)["image"] == "sha256:result2"
    code, out, err = build(capsys, app, "--format", "json", "--push")  # no registry answers
    assert code == 10 and json.loads(out)["image"] == "sha256:result3", err


def test_the_builder_is_inspected_ahead_unless_it_is_pulled_first(
    capsys: pytest.CaptureFixture[str], app: Path, engine: FakeEngine
) -> None:
    assert build(capsys, app)[0] == 0
    assert build(capsys, app, "--pull", "always")[0] == 0  # a localhost/ name: not pulled
    assert engine.expected == [BUILDER.ref]


def test_quiet_shows_only_the_result_and_on_failure_the_end_of_assemble(
    capsys: pytest.CaptureFixture[str], app: Path, engine: FakeEngine
) -> None:
    code, out, err = build(capsys, app, "-q")
    assert (code, out, err) == (0, f"{TAG}\n", "")
    engine.status = 3
    code, out, err = build(capsys, app, "-q")
    assert (code, out) == (7, "")
    assert err.splitlines()[0] == "ERROR: assemble exited with status 3; its last lines were:"
    assert "  | Successfully installed flask-3.0" in err.splitlines()
    assert "running assemble" not in err and "hint:" in err


def test_warnings_read_as_warning_lines_with_their_hint() -> None:
    text = log.render("warning", "building without the cache", {"error": "bad", "hint": "fix"})
    assert text == "WARNING: building without the cache: bad\n  hint: fix\n"
    assert log.render("info", "cache exported", {"files": 2, "kept": 0}) == (
        "cache exported (files=2, kept=0)\n"
    )


def test_the_summary_says_size_time_and_whether_the_layer_was_reused() -> None:
    fields = {"image": "0123456789ab", "tag": TAG, "size": 312_400_000, "seconds": 15.2}
    reused = log.render("info", "built", {**fields, "phases": 2, "dependencies_reused": True})
    assert (
        reused == f"built {TAG}: image 0123456789ab, 312.4 MB, 15.20 s, dependency layer reused\n"
    )
    untagged = log.render("info", "built", {"image": "0123456789ab", "phases": 2, "seconds": 1})
    assert untagged.startswith("built 0123456789ab: 1.00 s, dependency layer installed")


def test_colors_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for no_color, painted in ((None, True), ("1", False)):
        if no_color is None:
            monkeypatch.delenv("NO_COLOR", raising=False)
        else:
            monkeypatch.setenv("NO_COLOR", no_color)
        stream = Terminal()
        log.configure(stream=stream)
        log.get("t").warning("careful")
        assert ("\033[" in stream.getvalue()) is painted, stream.getvalue()
    plain = io.StringIO()  # not a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    log.configure(stream=plain)
    log.get("t").warning("careful")
    assert plain.getvalue() == "WARNING: careful\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["build", ".", "-q"],
        ["-q", "build", "."],
        ["build", "-q", "--log-format", "json", "."],
        ["--log-format", "json", "-q", "build", "."],
    ],
)
def test_global_options_work_before_and_after_the_command(argv: list[str]) -> None:
    args = cli._parser().parse_args(argv)
    assert args.quiet is True and args.source == Path(".")
    assert args.log_format == ("json" if "json" in argv else "human")


@pytest.mark.parametrize(
    "argv",
    [
        ["cache", "ls", "-v"],
        ["-v", "cache", "ls"],
        ["builder", "list", "-v"],
        ["doctor", "-v"],
        ["usage", "-v"],
        ["plan", ".", "-v"],
        ["wheelhouse", ".", "w", "-v"],
        ["cache", "export", "d", ".", "-v"],
        ["builder", "build", "-v"],
    ],
)
def test_every_command_takes_the_global_options(argv: list[str]) -> None:
    args = cli._parser().parse_args(argv)
    assert (args.verbose, args.quiet, args.log_format) == (1, False, "human")


def test_a_global_option_before_the_command_is_not_reset_by_its_parser() -> None:
    args = cli._parser().parse_args(["-q", "--log-format", "json", "cache", "ls"])
    assert (args.quiet, args.log_format, args.verbose) == (True, "json", 0)


@pytest.mark.parametrize(
    ("argv", "prog"),
    [
        (["cache", "nope"], "buildpy cache"),
        (["build"], "buildpy build"),
        (["builder", "list", "--what"], "buildpy"),
        (["build", ".", "--log-format", "xml"], "buildpy build"),
        (["nope"], "buildpy"),
    ],
)
def test_every_argument_error_is_an_error_line_a_hint_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], prog: str
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("ERROR: "), lines
    assert lines[1] == f"  hint: see `{prog} --help`"


def _command(*names: str) -> argparse.ArgumentParser:
    parser = cli._parser()
    for name in names:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


COMMANDS = [("build",), ("plan",), ("wheelhouse",), ("cache", "export"), ("usage",)]


@pytest.mark.parametrize("names", COMMANDS)
def test_help_says_which_options_may_be_repeated(names: tuple[str, ...]) -> None:
    repeated = [a for a in _command(*names)._actions if isinstance(a, argparse._AppendAction)]
    for action in repeated:
        assert "may be repeated" in (action.help or ""), action.option_strings


def test_help_says_what_needs_what_and_where_to_read_more() -> None:
    build = _command("build")
    helps = {a.dest: a.help or "" for a in build._actions}
    assert "--tag (needed)" in helps["incremental"] and "needs --tag" in helps["push"]
    assert "docs/reference/cli.md" in " ".join(build.format_help().split())
    assert "docs/reference/cli.md" in " ".join(cli._parser().format_help().split())
    usage = " ".join(_command("usage").format_help().split())
    assert "usage script" in usage and "--builder" not in usage


def test_builder_list_says_whether_each_builder_is_current(
    capsys: pytest.CaptureFixture[str], engine: FakeEngine
) -> None:
    context = builders.context_tar(builders.data_root())
    chosen = sorted(builders.BUILDERS.values(), key=lambda b: b.name)
    current, outdated, no_base = chosen[0], chosen[1], chosen[2]
    for b in (current, outdated, no_base):
        engine.stored[b.base] = ImageInfo(id=f"sha256:{b.base}", ref=b.base)
    for b, label in ((current, "wanted"), (outdated, "old"), (no_base, "old")):
        wanted = builders.digest(context, b, f"sha256:{b.base}")
        labels = {builders.DIGEST_LABEL: wanted if label == "wanted" else "old"}
        engine.stored[b.tag] = ImageInfo(id=f"sha256:{b.name}", ref=b.tag, labels=labels)
    assert no_base.base not in (current.base, outdated.base)
    del engine.stored[no_base.base]
    assert cli.main(["builder", "list"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    states = {row[0]: row[-1] for row in rows}
    assert states[current.tag] == "current"
    assert states[outdated.tag] == "outdated"
    assert states[chosen[3].tag] == "missing"
    assert states[no_base.tag] == "no base"


def test_importing_the_cli_imports_no_engine_client_and_no_structlog() -> None:
    code = (
        "import sys, buildpy.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'podman', 'requests', 'urllib3', 'structlog', 'asyncio', 'subprocess'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_usage_of_a_missing_image_names_its_argument_not_builder(
    capsys: pytest.CaptureFixture[str], engine: FakeEngine
) -> None:
    assert cli.main(["usage", "localhost/nope"]) == 6
    out, err = capsys.readouterr()
    assert out == "" and "ERROR: builder image localhost/nope is not in local storage" in err
    hint = next(line for line in err.splitlines() if line.startswith("  hint: "))
    assert "the IMAGE argument" in hint and "--builder" not in hint
