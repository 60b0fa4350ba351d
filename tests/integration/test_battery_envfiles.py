"""Failure battery, environment files: `.s2i/environment`, `--env-file`, `-e`, `--build-env`.

Every parse error is exit 4, names the file (or the option) and the line, and is found
before any engine work. (A `-e` or `--build-env` of 128 KiB never reaches buildpy: the
kernel refuses to start any process with such an argument, E2BIG.) What parses is
checked in a real image: a byte order mark and CRLF line ends are dropped, quotes
stripped, a duplicate key warns and the later line wins.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from battery import APP_PY, BUILDER, Case, Failure, Outcome, params, unreadable

pytestmark = pytest.mark.rootless

KEY_HINT = "a key is letters, digits and underscores, and does not start with a digit"
BIG = "x" * (128 * 1024)
S2I = ".s2i/environment"
ENV_FILE_ARGS = ("--env-file", "{app}/x.env")


def s2i_env(content: str | bytes) -> dict[str, str | bytes]:
    return {"app.py": APP_PY, S2I: content}


def env_file(content: str | bytes) -> dict[str, str | bytes]:
    return {"app.py": APP_PY, "x.env": content}


def in_env_file(id: str, content: str | bytes, message: str, hint: str) -> Failure:
    """``content`` given with --env-file, refused with ``FILE, message``."""
    files = env_file(content)
    return Failure(id, 4, f"{{app}}/x.env, {message}", hint, files=files, args=ENV_FILE_ARGS)


def argument(id: str, option: str, arg: str, problem: str, hint: str) -> Failure:
    """``option arg`` on the command line, refused with ``option: problem``."""
    return Failure(id, 4, f"{option}: {problem}", hint, args=(option, arg))


ENV_FILE_CASES = [
    Failure(
        "no-equals-sign",
        4,
        ".s2i/environment, line 2: expected KEY=VALUE, found no '='",
        "write KEY=VALUE, or start the line with '#' to make it a comment",
        files=s2i_env("A=1\nFOO\n"),
    ),
    Failure(
        "export-prefix",
        4,
        ".s2i/environment, line 1: 'export' is not supported",
        "drop 'export': write FOO=VALUE",
        files=s2i_env("export FOO=1\n"),
    ),
    Failure(
        "missing-key",
        4,
        ".s2i/environment, line 3: missing key before '='",
        "write KEY=VALUE",
        files=s2i_env("# comment\n\n=x\n"),
    ),
    Failure(
        "key-starts-with-digit",
        4,
        "line 1: key '1FOO' starts with a digit",
        KEY_HINT,
        files=s2i_env("1FOO=x\n"),
    ),
    Failure(
        "key-with-dash",
        4,
        "line 1: key 'FO-O' contains '-', which is not allowed in a key",
        KEY_HINT,
        files=s2i_env("FO-O=x\n"),
    ),
    Failure(
        "key-not-ascii",
        4,
        "line 1: key 'FÖO' contains 'Ö', which is not allowed in a key",
        KEY_HINT,
        files=s2i_env("FÖO=1\n"),
    ),
    Failure(
        "unmatched-quote",
        4,
        'line 1: unmatched quote " in the value of FOO',
        'end the value with "',
        files=s2i_env('FOO="x\n'),
    ),
    Failure(
        "blank-after-closing-quote",
        4,
        "line 1: unmatched quote ' in the value of FOO",
        "remove the whitespace after the closing '",
        files=s2i_env("FOO='x' \n"),
    ),
    Failure(
        "nul-in-value",
        4,
        ".s2i/environment, line 2: the value of FOO contains a NUL character",
        "no variable can hold a NUL byte (a file saved as UTF-16 is full of them",
        files=s2i_env(b"A=1\nFOO=a\0b\n"),
    ),
    in_env_file(
        "utf16-without-bom",
        "A=1\n".encode("utf-16-le"),
        "line 1: the line contains a NUL character",
        "a file saved as UTF-16 is full of them: save it as UTF-8",
    ),
    in_env_file(
        "utf16-with-bom",
        "A=1\n".encode("utf-16"),
        "line 1: not valid UTF-8 (byte 0xff)",
        "save the file as UTF-8",
    ),
    Failure(
        "latin1-value",
        4,
        ".s2i/environment, line 2: not valid UTF-8 (byte 0xe9)",
        "save the file as UTF-8",
        files=s2i_env(b"A=1\nCAFE=caf\xe9\n"),
    ),
    Failure(
        "value-of-128-kib",
        4,
        ".s2i/environment, line 1: BIG is 131076 bytes long; Linux starts no process"
        " with a variable of 128 KiB or more",
        "pass large data as a file in the source",
        files=s2i_env(f"BIG={BIG}\n"),
    ),
    in_env_file(
        "line-counted-through-bom-and-crlf",
        b"\xef\xbb\xbfA=1\r\nB=2\r\nC D\r\n",
        "line 3: expected KEY=VALUE, found no '='",
        "write KEY=VALUE",
    ),
    Failure(
        "env-file-missing",
        4,
        "{dir}/none.env: cannot read: No such file or directory",
        "check the path and the file's permissions",
        args=("--env-file", "{dir}/none.env"),
    ),
    Failure(
        "env-file-is-a-directory",
        4,
        "{app}: cannot read: Is a directory",
        "check the path and the file's permissions",
        args=("--env-file", "{app}"),
    ),
    Failure(
        "env-file-unreadable",
        4,
        "{app}/x.env: cannot read: Permission denied",
        "check the path and the file's permissions",
        files=env_file("A=1\n"),
        args=("--env-file", "{app}/x.env"),
        setup=unreadable("x.env"),
        no_dac=True,
    ),
    Failure(
        "s2i-environment-unreadable",
        4,
        ".s2i/environment: cannot read: Permission denied",
        "check the path and the file's permissions",
        files=s2i_env("A=1\n"),
        setup=unreadable(S2I),
        no_dac=True,
    ),
    Failure(
        "error-in-the-second-env-file",
        4,
        "{app}/bad.env, line 3: expected KEY=VALUE, found no '='",
        "write KEY=VALUE",
        files={"app.py": APP_PY, "good.env": "A=1\n", "bad.env": "B=2\n#\nnope\n"},
        args=("--env-file", "{app}/good.env", "--env-file", "{app}/bad.env"),
    ),
    argument(
        "dash-e-without-equals", "-e", "FOO", "expected KEY=VALUE, got 'FOO'", "write -e KEY=VALUE"
    ),
    argument(
        "dash-e-key-starts-with-digit", "-e", "1A=b", "key '1A' starts with a digit", KEY_HINT
    ),
    argument("dash-e-missing-key", "-e", "=x", "missing key before '='", "write KEY=VALUE"),
    argument(
        "dash-e-export",
        "-e",
        "export FOO=1",
        "'export' is not supported",
        "drop 'export': write FOO=VALUE",
    ),
    argument(
        "dash-e-space-before-equals",
        "-e",
        "FOO =1",
        "space before '='",
        "write KEY=VALUE without spaces around '='",
    ),
    argument(
        "build-env-without-equals",
        "--build-env",
        "TOKEN",
        "expected KEY=VALUE, got 'TOKEN'",
        "write --build-env KEY=VALUE",
    ),
    argument(
        "build-env-key-with-space",
        "--build-env",
        "A B=c",
        "key 'A B' contains ' ', which is not allowed in a key",
        KEY_HINT,
    ),
]


@pytest.mark.parametrize("row", params(ENV_FILE_CASES))
def test_env_file_errors_before_the_engine(case: Case, row: Failure) -> None:
    row.check(case)


# --------------------------------------------------------------------------- what parses

S2I_TEXT = (
    b"\xef\xbb\xbfFIRST=1\r\n"  # a byte order mark, then CRLF line ends
    b"A=first\r\n"
    b"# a comment\r\n"
    b"   B=indented\r\n"
    b"A=second\r\n"
    b'QUOTED="a quoted value "\r\n'
    b"URL=postgres://u@h/db?x=1\r\n"
    b"HASH=x#y\r\n"
    b"EMPTY=\r\n"
    b"LONE_CR=a\rb\r\n"
    b"PRECEDENCE=s2i\r\n"
)
EXPECTED_ENV = {
    "bom-dropped": ("FIRST", "1"),
    "duplicate-later-wins": ("A", "second"),
    "leading-blanks-skipped": ("B", "indented"),
    "quotes-stripped": ("QUOTED", "a quoted value "),
    "equals-in-value-kept": ("URL", "postgres://u@h/db?x=1"),
    "hash-in-value-kept": ("HASH", "x#y"),
    "empty-value-kept": ("EMPTY", ""),
    "lone-cr-is-data": ("LONE_CR", "a\rb"),
    "env-file-beats-s2i-environment": ("FROM_FILE", "file"),
    "dash-e-beats-env-file": ("PRECEDENCE", "cli"),
}


@pytest.fixture(scope="module")
def parsed(podman_url: str) -> Iterator[tuple[Outcome, dict[str, str], Case]]:
    case = Case(podman_url)
    try:
        app = case.app(
            {
                "app.py": APP_PY,
                S2I: S2I_TEXT,
                "extra.env": "FROM_FILE=file\nPRECEDENCE=file\nFROM_FILE=file\n",
            }
        )
        tag = case.tag()
        outcome = case.run(
            str(app),
            *("--builder", BUILDER, "--tag", tag),
            *("--env-file", str(app / "extra.env"), "-e", "PRECEDENCE=cli"),
        )
        image = case.api.image(tag) or {}
        env = dict(item.split("=", 1) for item in image.get("Config", {}).get("Env") or [])
        yield outcome, env, case
    finally:
        case.close()


@pytest.mark.parametrize("key_value", list(EXPECTED_ENV.values()), ids=list(EXPECTED_ENV))
def test_what_parses_reaches_the_image(
    parsed: tuple[Outcome, dict[str, str], Case], key_value: tuple[str, str]
) -> None:
    outcome, env, case = parsed
    outcome.expect_success(case.expected_images[0])
    key, value = key_value
    assert env[key] == value


@pytest.mark.parametrize(
    "warning",
    [
        ".s2i/environment, line 5: A was already set on line 2; the later value wins",
        "extra.env, line 3: FROM_FILE was already set on line 1; the later value wins",
    ],
    ids=["in-s2i-environment", "in-an-env-file"],
)
def test_duplicate_keys_warn(parsed: tuple[Outcome, dict[str, str], Case], warning: str) -> None:
    outcome, _, case = parsed
    outcome.expect_success(case.expected_images[0])
    assert any(warning in said for said in outcome.warnings()), outcome.warnings()


@pytest.mark.parametrize("key", ["TERM", "container"])
def test_no_variable_the_build_did_not_ask_for(
    parsed: tuple[Outcome, dict[str, str], Case], key: str
) -> None:
    outcome, env, case = parsed
    outcome.expect_success(case.expected_images[0])
    assert key not in env, env
