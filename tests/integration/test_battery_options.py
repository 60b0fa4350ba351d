"""Failure battery, options: the command line and `[tool.buildpy]`.

A wrong option is exit 2 before any engine work, and fast: the tripwire is never
contacted and the build returns within a few seconds. Options only Podman can judge
(a network it lacks, a builder it does not have) fail with the engine's answer and a
hint, leaving nothing behind.
"""

from __future__ import annotations

import pytest
from battery import APP_PY, BUILDER, Case, Failure, params, unreadable

pytestmark = pytest.mark.rootless

TAG_HINT = "write [REGISTRY/]NAME[:TAG] with a lower-case NAME, e.g. localhost/myapp:1.0"
CA_HINT = "on Debian the host's bundle is /etc/ssl/certs/ca-certificates.crt"
HELP_HINT = "buildpy build --help"
DIGEST = "sha256:" + "0" * 64


def bad_tag(id: str, tag: str, problem: str = "not an image name") -> Failure:
    return Failure(f"tag-{id}", 2, f"--tag {tag!r}: {problem}", TAG_HINT, args=(f"--tag={tag}",))


def bad_option(id: str, args: tuple[str, ...], message: str, hint: str = HELP_HINT) -> Failure:
    return Failure(id, 2, message, hint, args=args)


def pyproject(text: str) -> dict[str, str | bytes]:
    return {"app.py": APP_PY, "pyproject.toml": text}


TAG_CASES = [
    bad_tag("upper-case", "localhost/MyApp", "image names are lower case"),
    bad_tag("space", "my app"),
    bad_tag("digest", f"localhost/app@{DIGEST}", "a digest names an existing image"),
    bad_tag("empty", ""),
    bad_tag("trailing-colon", "localhost/app:"),
    bad_tag("bad-tag-characters", "localhost/app:v1!"),
    bad_tag("double-slash", "localhost//app"),
    bad_tag("tag-of-129-characters", "localhost/app:" + "x" * 129),
    bad_tag("name-of-256-characters", "a" * 256),
    bad_tag("leading-dash", "-app"),
    bad_tag("scheme", "docker://localhost/app"),
]

OPTION_CASES = [
    Failure(
        "incremental-without-tag",
        2,
        "--incremental needs --tag",
        "add --tag NAME: the image to take the artifacts from, and the new image's name",
        args=("--incremental",),
    ),
    Failure(
        "ca-bundle-missing",
        2,
        "--ca-bundle: {dir}/none.crt is not a readable file",
        CA_HINT,
        args=("--ca-bundle", "{dir}/none.crt"),
    ),
    Failure(
        "ca-bundle-is-a-directory",
        2,
        "--ca-bundle: {app} is not a readable file",
        CA_HINT,
        args=("--ca-bundle", "{app}"),
    ),
    Failure(
        "ca-bundle-unreadable",
        2,
        "--ca-bundle: {app}/ca.crt is not a readable file",
        CA_HINT,
        files={"app.py": APP_PY, "ca.crt": "-----BEGIN CERTIFICATE-----\n"},
        args=("--ca-bundle", "{app}/ca.crt"),
        setup=unreadable("ca.crt"),
        no_dac=True,
    ),
    bad_option(
        "timeout-zero", ("--timeout", "0"), "argument --timeout: invalid duration value: '0'"
    ),
    bad_option("timeout-negative", ("--timeout=-5s",), "invalid duration value: '-5s'"),
    bad_option("timeout-word", ("--timeout", "soon"), "invalid duration value: 'soon'"),
    bad_option("timeout-unknown-unit", ("--timeout", "10x"), "invalid duration value: '10x'"),
    bad_option("timeout-fractional-minutes", ("--timeout", "1.5m"), "invalid duration value"),
    bad_option("timeout-empty", ("--timeout", ""), "invalid duration value: ''"),
    bad_option(
        "unknown-option",
        ("--frobnicate",),
        "unrecognized arguments: --frobnicate",
        "see `buildpy --help`",
    ),
    Failure(
        "missing-source",
        2,
        "the following arguments are required: SOURCE",
        HELP_HINT,
        source="--no-cache",
    ),
    Failure(
        "pyproject-not-toml",
        2,
        "{app}/pyproject.toml: cannot read [tool.buildpy]: Expected '=' after a key",
        "fix the TOML syntax at the line and column shown",
        files=pyproject("[tool.buildpy]\nbuilder\n"),
    ),
    Failure(
        "pyproject-unknown-key",
        2,
        "{app}/pyproject.toml: unknown key(s) in [tool.buildpy]: colour",
        "known keys: builder, tag, network",
        files=pyproject('[tool.buildpy]\ncolour = "blue"\n'),
    ),
    Failure(
        "pyproject-not-a-table",
        2,
        "{app}/pyproject.toml: [tool.buildpy] must be a table",
        'write [tool.buildpy] with builder = "...", tag = "..." or network = "..." under it',
        files=pyproject('[tool]\nbuildpy = "localhost/app"\n'),
    ),
    Failure(
        "pyproject-value-not-a-string",
        2,
        "{app}/pyproject.toml: [tool.buildpy] network must be a string",
        'quote it: network = "1"',
        files=pyproject("[tool.buildpy]\nnetwork = 1\n"),
    ),
    Failure(
        "pyproject-bad-tag",
        2,
        "{app}/pyproject.toml: [tool.buildpy] tag 'My/App': image names are lower case",
        TAG_HINT,
        files=pyproject('[tool.buildpy]\ntag = "My/App"\n'),
    ),
]

ENGINE_OPTION_CASES = [
    Failure(
        "network-podman-lacks",
        8,
        'invalid network "buildpy-test-nosuchnet"',
        "--network names a network Podman does not have: use host, none, bridge",
        args=("--builder", BUILDER, "--network", "buildpy-test-nosuchnet"),
        host=None,
    ),
    Failure(
        "builder-not-in-storage",
        6,
        "builder image localhost/buildpy-test/no-such-builder is not in local storage",
        "build it with `buildpy builder build` (or `make builders`), load it with"
        " `podman load`, or name another one with --builder",
        args=("--builder", "localhost/buildpy-test/no-such-builder"),
        host=None,
    ),
    Failure(
        "builder-from-pyproject-not-in-storage",
        6,
        "builder image localhost/buildpy-test/nope is not in local storage",
        "name another one with --builder",
        files=pyproject('[tool.buildpy]\nbuilder = "localhost/buildpy-test/nope"\n'),
        host=None,
    ),
    Failure(
        "builder-is-no-image-name",
        6,
        "builder image Not An Image is not in local storage",
        "name another one with --builder",
        args=("--builder", "Not An Image"),
        host=None,
    ),
]


@pytest.mark.parametrize("row", params(TAG_CASES))
def test_a_bad_tag_is_refused_fast_before_the_engine(case: Case, row: Failure) -> None:
    outcome = row.check(case)
    assert outcome.seconds < 5, f"took {outcome.seconds:.1f} s"


@pytest.mark.parametrize("row", params(OPTION_CASES))
def test_option_errors_before_the_engine(case: Case, row: Failure) -> None:
    row.check(case)


@pytest.mark.parametrize("row", params(ENGINE_OPTION_CASES))
def test_options_only_the_engine_can_judge(case: Case, row: Failure) -> None:
    row.check(case)


def test_incremental_without_a_previous_image_builds_in_full(case: Case) -> None:
    app = case.app({"app.py": APP_PY})
    tag = case.tag()
    outcome = case.run(str(app), "--builder", BUILDER, "--tag", tag, "--incremental")
    outcome.expect_success(tag)
    assert outcome.logged("no previous image to take artifacts from; building in full")
