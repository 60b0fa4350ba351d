"""Tests for buildpy.environment: env file parsing, -e arguments, precedence, rendering."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from buildpy import environment, log
from buildpy import plan as build_plan
from buildpy.config import BuildOptions
from buildpy.environment import (
    EnvLayer,
    Resolved,
    merge,
    origins,
    parse_assignment,
    parse_env_layer,
    parse_env_text,
    read_env_file,
    read_env_layer,
    render_env_text,
    resolve,
    shell_export_script,
)
from buildpy.errors import EnvFileError

# --------------------------------------------------------------------------- parse_env_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n", {"A": "1"}),
        ("A=1", {"A": "1"}),
        ("", {}),
        ("A=\n", {"A": ""}),
        ("_x9=y\n", {"_x9": "y"}),
        ("A=b=c==\n", {"A": "b=c=="}),
        ("A=value with spaces  \n", {"A": "value with spaces  "}),
        ("   \tA=1\n", {"A": "1"}),
        ("A='quoted value'\n", {"A": "quoted value"}),
        ('A="quoted value"\n', {"A": "quoted value"}),
        ("A=''\n", {"A": ""}),
        ('A=""\n', {"A": ""}),
        ("A='\"'\n", {"A": '"'}),
        ("A='''\n", {"A": "'"}),
        ('A="a"b"\n', {"A": 'a"b'}),
        ('A="\'"\n', {"A": "'"}),
        ('A=" padded "\n', {"A": " padded "}),
        ("A=abc'\n", {"A": "abc'"}),
        ("A=a'b\"c\n", {"A": "a'b\"c"}),
        ("A=$HOME\\n`x`\n", {"A": "$HOME\\n`x`"}),
        ("A=# not a comment\n", {"A": "# not a comment"}),
        ("A=héllo ✓\n", {"A": "héllo ✓"}),
        ("A=a\rb\n", {"A": "a\rb"}),
    ],
)
def test_parse_values(text: str, expected: dict[str, str]) -> None:
    assert parse_env_text(text, "f") == expected


def test_bom_is_dropped() -> None:
    assert parse_env_text("\ufeffA=1\n", "f") == {"A": "1"}


def test_crlf_line_endings() -> None:
    assert parse_env_text("A=1\r\nB='x'\r\n\r\n# c\r\n", "f") == {"A": "1", "B": "x"}


def test_cr_at_end_without_newline_is_data() -> None:
    assert parse_env_text("A=1\r", "f") == {"A": "1\r"}


def test_blank_and_comment_lines_are_skipped() -> None:
    text = "\n# comment\n   # indented comment\n\t\n  \nA=1\n#B=2\n"
    assert parse_env_text(text, "f") == {"A": "1"}


def test_duplicate_key_later_wins_keeps_first_position_and_warns() -> None:
    warnings: list[str] = []
    result = parse_env_text("A=1\nB=2\nA=3\n", "env", warn=warnings.append)
    assert result == {"A": "3", "B": "2"}
    assert list(result) == ["A", "B"]
    assert len(warnings) == 1
    assert "env, line 3" in warnings[0]
    assert "line 1" in warnings[0]


def _error(text: str, origin: str = "my.env") -> EnvFileError:
    with pytest.raises(EnvFileError) as info:
        parse_env_text(text, origin)
    return info.value


def test_missing_equals() -> None:
    err = _error("A=1\n\nJUSTAWORD\n")
    assert err.origin == "my.env"
    assert err.line == 3
    assert "my.env, line 3" in str(err)
    assert "expected KEY=VALUE" in str(err)
    assert err.hint is not None


def test_key_starting_with_digit() -> None:
    err = _error("1A=x\n")
    assert err.line == 1
    assert "starts with a digit" in err.problem


@pytest.mark.parametrize(("key", "bad"), [("A-B", "-"), ("A.B", "."), ("é", "é"), ("A$", "$")])
def test_key_with_invalid_character_names_it(key: str, bad: str) -> None:
    err = _error(f"# c\n{key}=x\n")
    assert err.line == 2
    assert repr(bad) in err.problem
    assert err.hint is not None and "letters, digits and underscores" in err.hint


def test_missing_key() -> None:
    err = _error("=x\n")
    assert "missing key" in err.problem


def test_export_prefix() -> None:
    err = _error("A=1\nexport B=2\n")
    assert err.line == 2
    assert "export" in err.problem
    assert err.hint is not None and "drop 'export'" in err.hint and "B=VALUE" in err.hint


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("A =1", "1"),
        ("A\t=1", "1"),
        ("A = 1", "1"),
        ("A= 1", "1"),
        ("A=\t1", "1"),
        ("A = 'x y'", "x y"),
        ('A = " lead"', " lead"),
        ("A =", ""),
    ],
)
def test_spaces_around_equals_are_trimmed_as_s2i_does_with_a_warning(line: str, value: str) -> None:
    """s2i trims blanks around '=': such files are accepted (they were an error before)."""
    warnings: list[str] = []
    assert parse_env_text("# c\n" + line + "\n", "my.env", warn=warnings.append) == {"A": value}
    (warning,) = warnings
    assert "my.env, line 2" in warning and "spaces around '='" in warning
    assert "A=VALUE" in warning


def test_only_blanks_next_to_equals_are_trimmed() -> None:
    assert parse_env_text("A = 1  \n", "f") == {"A": "1  "}  # trailing blanks stay, as always
    with pytest.raises(EnvFileError, match="unmatched quote"):
        parse_env_text("A = 'x'  \n", "f")


def test_the_trimming_warning_never_shows_the_value() -> None:
    warnings: list[str] = []
    parse_env_text("TOKEN = s3cret\n", "f", warn=warnings.append)
    assert warnings and not any("s3cret" in w for w in warnings)


@pytest.mark.parametrize("line", ["export B =1", "A B = 1", "9A = 1"])
def test_spaces_do_not_excuse_a_bad_key(line: str) -> None:
    err = _error(line + "\n")
    assert err.line == 1


@pytest.mark.parametrize("value", ["'abc", '"abc', "'", '"', "'abc\"", "\"abc'"])
def test_unmatched_quote(value: str) -> None:
    err = _error(f"A=1\n\nB={value}\n")
    assert err.line == 3
    assert "unmatched quote" in err.problem


def test_unmatched_quote_because_of_trailing_whitespace_says_so() -> None:
    err = _error('A="abc"  \n')
    assert err.hint is not None and "whitespace after the closing" in err.hint


def test_nul_in_value() -> None:
    err = _error("A=a\0b\n")
    assert "NUL" in err.problem


def test_error_line_numbers_count_crlf_and_bom_lines() -> None:
    err = _error("\ufeff# c\r\nA=1\r\nbad line\r\n")
    assert err.line == 3


# --------------------------------------------------------------------------- read_env_file


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_bytes(b"\xef\xbb\xbfA=1\r\nB=\xc3\xa9\r\n")
    assert read_env_file(path) == {"A": "1", "B": "é"}


def test_read_env_file_origin_defaults_to_path(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("oops\n", encoding="utf-8")
    with pytest.raises(EnvFileError) as info:
        read_env_file(path)
    assert info.value.origin == str(path)
    with pytest.raises(EnvFileError) as info:
        read_env_file(path, origin=".s2i/environment")
    assert str(info.value).startswith(".s2i/environment, line 1:")


def test_read_env_file_missing(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError) as info:
        read_env_file(tmp_path / "nope", origin="--env-file nope")
    assert info.value.origin == "--env-file nope"
    assert info.value.line is None
    assert "cannot read" in info.value.problem
    assert info.value.hint


def test_read_env_file_directory(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError) as info:
        read_env_file(tmp_path)
    assert "cannot read" in info.value.problem


def test_read_env_file_bad_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_bytes(b"A=1\nB=2\nC=\xff\n")
    with pytest.raises(EnvFileError) as info:
        read_env_file(path)
    assert info.value.line == 3
    assert "UTF-8" in info.value.problem and "0xff" in info.value.problem
    assert f"{path}, line 3" in str(info.value)


# --------------------------------------------------------------------------- parse_assignment


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("A=1", ("A", "1")),
        ("A=", ("A", "")),
        ("A=b=c", ("A", "b=c")),
        ("A='x'", ("A", "'x'")),
        ("A= spaced ", ("A", " spaced ")),
        ("A=line1\nline2", ("A", "line1\nline2")),
    ],
)
def test_parse_assignment(arg: str, expected: tuple[str, str]) -> None:
    assert parse_assignment(arg, "-e") == expected


def test_parse_assignment_missing_equals() -> None:
    with pytest.raises(EnvFileError) as info:
        parse_assignment("FOO", "-e FOO")
    assert info.value.origin == "-e FOO"
    assert info.value.line is None
    assert info.value.hint == "write -e KEY=VALUE"


@pytest.mark.parametrize(
    ("arg", "problem"),
    [("9A=1", "digit"), ("A-B=1", "'-'"), ("=1", "missing key"), ("export A=1", "export")],
)
def test_parse_assignment_bad_key(arg: str, problem: str) -> None:
    with pytest.raises(EnvFileError) as info:
        parse_assignment(arg, "-e")
    assert problem in info.value.problem


# --------------------------------------------------------------------------- merge and resolve


def test_merge_precedence_and_order() -> None:
    image = {"PATH": "/usr/bin", "A": "image"}
    s2i = {"A": "s2i", "B": "s2i"}
    cli = {"B": "cli", "C": "cli"}
    assert merge(image, s2i, cli) == {"PATH": "/usr/bin", "A": "s2i", "B": "cli", "C": "cli"}
    assert list(merge(image, s2i, cli)) == ["PATH", "A", "B", "C"]
    assert merge() == {}


def test_merge_does_not_modify_layers() -> None:
    first = {"A": "1"}
    merge(first, {"A": "2"})
    assert first == {"A": "1"}


def test_resolve_names_the_winning_layer() -> None:
    layers = [
        EnvLayer("image", {"A": "1", "B": "1"}),
        EnvLayer(".s2i/environment", {"B": "2"}),
        EnvLayer("-e", {"A": "3"}),
    ]
    assert origins(layers) == {"A": ("3", "-e"), "B": ("2", ".s2i/environment")}
    assert origins([]) == {}


# --------------------------------------------------------------------------- render


def test_render_plain_and_quoted() -> None:
    values = {"A": "1", "B": "", "C": " lead", "D": "'q'", "E": '"q"', "F": "x\r", "G": "a=b"}
    text = render_env_text(values)
    assert text.startswith("A=1\nB=\n")
    assert parse_env_text(text, "r") == values


@pytest.mark.parametrize("value", ["a\nb", "a\0b"])
def test_render_rejects_unrepresentable(value: str) -> None:
    with pytest.raises(ValueError):
        render_env_text({"A": value})


def test_render_rejects_bad_key() -> None:
    with pytest.raises(ValueError):
        render_env_text({"1A": "x"})


def test_shell_export_script_quotes() -> None:
    assert shell_export_script({"A": "it's"}) == "export A='it'\"'\"'s'\n"
    with pytest.raises(ValueError):
        shell_export_script({"A": "a\0b"})
    with pytest.raises(ValueError):
        shell_export_script({"A B": "x"})


# --------------------------------------------------------------------------- properties

keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
# Any text a one-line value can hold: no newline, no NUL, no lone surrogates.
line_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\0"),
    max_size=20,
)
env_dicts = st.dictionaries(keys, line_values, max_size=8)


@given(
    st.lists(
        st.tuples(
            st.sampled_from("ABCDE"),
            st.dictionaries(
                st.sampled_from(["K1", "K2", "K3", "K4"]), st.text(max_size=3), max_size=4
            ),
        ),
        max_size=6,
    )
)
def test_precedence_last_layer_wins(raw: list[tuple[str, dict[str, str]]]) -> None:
    layers = [EnvLayer(f"{name}{i}", values) for i, (name, values) in enumerate(raw)]
    merged = merge(*(layer.values for layer in layers))
    resolved = origins(layers)
    all_keys = {key for layer in layers for key in layer.values}
    assert set(merged) == all_keys == set(resolved)
    for key in all_keys:
        last = [layer for layer in layers if key in layer.values][-1]
        assert merged[key] == last.values[key]
        assert resolved[key] == (last.values[key], last.origin)


@given(env_dicts)
def test_render_round_trip(values: dict[str, str]) -> None:
    assert parse_env_text(render_env_text(values), "r") == values


# Lines of a valid file; values avoid CR so that LF and CRLF files mean the same.
no_cr_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\r\0"),
    max_size=12,
)
blank_lines = st.text(alphabet=" \t", max_size=3)
comment_lines = st.builds(lambda ws, body: f"{ws}#{body}", blank_lines, no_cr_values)
value_lines = st.builds(
    lambda ws, k, v: ws + render_env_text({k: v}).rstrip("\n"), blank_lines, keys, no_cr_values
)


@given(st.lists(st.one_of(value_lines, comment_lines, blank_lines), max_size=10), st.booleans())
def test_crlf_and_lf_agree(lines: list[str], final_newline: bool) -> None:
    end = "\n" if final_newline else ""
    lf = "\n".join(lines) + end
    crlf = "\r\n".join(lines) + ("\r\n" if final_newline else "")
    assert parse_env_text(lf, "f") == parse_env_text(crlf, "f")


@given(keys, st.lists(st.text(alphabet="ab =#x'\"", max_size=4), min_size=2, max_size=5))
def test_equals_in_values_is_preserved(key: str, parts: list[str]) -> None:
    value = "x" + "=".join(parts)
    assert parse_env_text(f"{key}={value}\n", "f") == {key: value}
    assert parse_assignment(f"{key}={value}", "-e") == (key, value)
    assert parse_env_text(render_env_text({key: "=" + value}), "f") == {key: "=" + value}


@given(
    env_dicts,
    st.lists(st.tuples(st.integers(0, 20), st.one_of(comment_lines, blank_lines)), max_size=6),
    st.sampled_from(["\n", "\r\n"]),
)
def test_comments_and_blank_lines_do_not_matter(
    values: dict[str, str], extra: list[tuple[int, str]], newline: str
) -> None:
    # Not str.splitlines(): values may hold \x1e, \u2028 and friends, which are not line ends.
    lines = [line + newline for line in render_env_text(values).split("\n")[:-1]]
    for position, line in extra:
        lines.insert(min(position, len(lines)), line + newline)
    assert parse_env_text("".join(lines), "f") == values


shell_values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=20)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(keys.map(lambda k: "BPT_" + k), shell_values, max_size=6))
def test_shell_export_script_round_trips_through_sh(values: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "env.sh"
        script.write_bytes(shell_export_script(values).encode("utf-8"))
        out = subprocess.run(
            ["/bin/sh", "-c", ". ./env.sh && env -0"],
            cwd=tmp,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            check=True,
            capture_output=True,
        ).stdout
    seen = dict(item.split(b"=", 1) for item in out.split(b"\0") if item)
    got = {k.decode(): v.decode("utf-8") for k, v in seen.items() if k.startswith(b"BPT_")}
    assert got == values


# --------------------------------------------------------------------------- size limit


def test_a_value_linux_cannot_pass_is_an_error_with_its_line() -> None:
    big = "x" * (128 * 1024)
    with pytest.raises(EnvFileError) as info:
        parse_env_text(f"SMALL=1\nBIG={big}\n", ".s2i/environment")
    assert info.value.line == 2 and "BIG is" in info.value.problem and info.value.hint
    with pytest.raises(EnvFileError, match="128 KiB"):
        parse_assignment(f"BIG={big}", "-e")
    just_fits = "x" * (128 * 1024 - len("OK=") - 1)
    assert parse_env_text(f"OK={just_fits}\n", "f") == {"OK": just_fits}


def test_a_nul_byte_gets_a_hint() -> None:
    with pytest.raises(EnvFileError) as info:
        parse_env_text("A=x\0y\n", "f")
    assert info.value.hint and "UTF-8" in info.value.hint


# --------------------------------------------------------------------------- lines and origins


def test_a_layer_keeps_the_line_of_each_winning_value(tmp_path: Path) -> None:
    text = "\ufeff# c\r\nA=1\r\n\r\nB = 2\r\nA=3\r\n"
    layer = parse_env_layer(text, "f")
    assert layer.values == {"A": "3", "B": "2"}
    assert layer.lines == {"A": 5, "B": 4}
    path = tmp_path / "env"
    path.write_text(text, encoding="utf-8")
    assert read_env_layer(path, ".s2i/environment").lines == layer.lines
    assert read_env_layer(path).origin == str(path)


def test_resolve_gives_value_origin_and_line() -> None:
    layers = [
        EnvLayer("image", {"A": "1", "B": "1"}),
        EnvLayer(".s2i/environment", {"B": "2"}, {"B": 7}),
        EnvLayer("-e", {"A": "3"}),
    ]
    assert resolve(layers) == {
        "A": Resolved("3", "-e", None),
        "B": Resolved("2", ".s2i/environment", 7),
    }


@given(st.lists(st.tuples(keys, no_cr_values), max_size=8))
def test_lines_name_the_last_assignment_of_each_key(pairs: list[tuple[str, str]]) -> None:
    layer = parse_env_layer("".join(render_env_text({k: v}) for k, v in pairs), "f")
    for key in layer.values:
        assert layer.lines[key] == max(i for i, (k, _) in enumerate(pairs, 1) if k == key)


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What buildpy logs, as JSON lines, for one test."""
    stream = io.StringIO()
    log.configure(stream=stream, json=True)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def test_env_file_warnings_reach_the_log(tmp_path: Path, logged: io.StringIO) -> None:
    (tmp_path / ".s2i").mkdir()
    (tmp_path / ".s2i" / "environment").write_text("A=1\nB = 2\nA=3\n")
    env_file = tmp_path / "extra.env"
    env_file.write_text("C=1\nC=2\n")
    plan = build_plan.make(
        BuildOptions(source=tmp_path, env_files=(env_file,)), describe=lambda root: None
    )
    events = [json.loads(line)["event"] for line in logged.getvalue().splitlines()]
    assert any(".s2i/environment, line 2: spaces around '='" in e for e in events)
    assert any(".s2i/environment, line 3: A was already set on line 1" in e for e in events)
    assert any(f"{env_file}, line 2: C was already set on line 1" in e for e in events)
    resolved = environment.resolve(plan.env_layers)
    assert resolved["A"] == Resolved("3", ".s2i/environment", 3)
    assert resolved["C"] == Resolved("2", f"--env-file {env_file}", 2)


@pytest.mark.parametrize("text", ["A\0=1\n", "\0\n", "A=1\n\0B=2\n"])
def test_a_nul_outside_a_value_is_named_with_the_utf16_hint(text: str) -> None:
    with pytest.raises(EnvFileError) as info:
        parse_env_text(text, "env")
    assert info.value.problem == "the line contains a NUL character"
    assert "UTF-16" in (info.value.hint or "")


def test_an_assignment_hint_names_its_own_option() -> None:
    with pytest.raises(EnvFileError) as info:
        parse_assignment("TOKEN", "--build-env")
    assert info.value.hint == "write --build-env KEY=VALUE"
