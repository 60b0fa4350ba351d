"""Failure battery, builder: images that are missing, not S2I builders, or unusable.

The variants are made from the minimal builder by committing a never-started container
with other labels or another USER (no layer changes), and removed at the end.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from battery import APP_PY, BUILDER, Case, Failure, params

pytestmark = pytest.mark.rootless

SCRIPTS_URL = "io.openshift.s2i.scripts-url"
VARIANTS = {
    "no-scripts-url": [f"LABEL {SCRIPTS_URL}=", "LABEL io.s2i.scripts-url="],
    "http-scripts-url": [f"LABEL {SCRIPTS_URL}=http://127.0.0.1:1/s2i"],
    "relative-scripts-url": [f"LABEL {SCRIPTS_URL}=image://usr/libexec/s2i"],
    "scripts-url-to-nothing": [
        f"LABEL {SCRIPTS_URL}=image:///nonexistent",
        "LABEL io.buildpy.assemble-phases=",
    ],
    "unknown-user": ["USER nosuchuser"],
}
NOT_IMAGE_URL = "put the scripts in the source's .s2i/bin, or use a builder whose label"


@pytest.fixture(scope="module")
def builders() -> Iterator[dict[str, str]]:
    """The variants' tags, by name."""
    suffix = uuid.uuid4().hex[:8]
    holder = f"buildpy-test-builder-{suffix}"
    made: dict[str, str] = {}
    subprocess.run(
        ["podman", "create", "--name", holder, BUILDER, "true"], check=True, capture_output=True
    )
    try:
        for name, changes in VARIANTS.items():
            tag = f"localhost/buildpy-test/builder-{name}-{suffix}"
            cmd = ["podman", "commit", "-q"]
            for change in changes:
                cmd += ["--change", change]
            subprocess.run([*cmd, holder, tag], check=True, capture_output=True)
            made[name] = tag
        yield made
    finally:
        subprocess.run(["podman", "rm", "-f", holder], capture_output=True, check=False)
        if made:
            subprocess.run(
                ["podman", "rmi", "-f", *made.values()], capture_output=True, check=False
            )


OWN_SCRIPTS = {
    "app.py": APP_PY,
    ".s2i/bin/assemble": '#!/bin/sh\nmkdir -p "$HOME" && cp -R /tmp/src/. "$HOME"\n',
    ".s2i/bin/run": "#!/bin/sh\nexec python3 app.py\n",
}


def with_builder(id: str, code: int, message: str, hint: str, builder: str = "") -> Failure:
    """A build with the builder ``builder`` (default: the variant named ``id``)."""
    chosen = builder or "{" + id + "}"
    return Failure(id, code, message, hint, args=("--builder", chosen), host=None)


NO_LABEL = "has no io.openshift.s2i.scripts-url label and the source has no .s2i/bin/assemble"
NOT_S2I = "use an S2I builder image, or add the script to the source's .s2i/bin"
BUILDER_CASES = [
    with_builder(
        "not-an-s2i-builder",
        6,
        f"builder image localhost/buildpy/base-bookworm {NO_LABEL}",
        NOT_S2I,
        "localhost/buildpy/base-bookworm",
    ),
    with_builder("no-scripts-url", 6, NO_LABEL, NOT_S2I),
    with_builder(
        "http-scripts-url",
        6,
        "has io.openshift.s2i.scripts-url='http://127.0.0.1:1/s2i'; buildpy only uses"
        " image:///PATH scripts (it never downloads scripts during a build)",
        NOT_IMAGE_URL,
    ),
    with_builder(
        "relative-scripts-url",
        6,
        "has io.openshift.s2i.scripts-url='image://usr/libexec/s2i'",
        NOT_IMAGE_URL,
    ),
    with_builder(
        "unknown-user",
        6,
        "runs as user 'nosuchuser', which /etc/passwd lacks",
        "use a numeric USER (e.g. 1001) in the builder image",
    ),
    with_builder(
        "scripts-url-to-nothing",
        7,
        "assemble exited with status 127",
        "the assemble script could not be executed: check it exists and is executable",
    ),
]


def assembling(id: str, script: str, message: str, hint: str) -> Failure:
    """A build whose own assemble is ``script``."""
    files = {"app.py": APP_PY, ".s2i/bin/assemble": f"#!/bin/sh\n{script}"}
    return Failure(id, 7, message, hint, files=files, args=("--builder", BUILDER), host=None)


ASSEMBLE_CASES = [
    assembling(
        "assemble-fails",
        "echo about to fail\nexit 3\n",
        "assemble exited with status 3; its last lines were:",
        "fix the error shown above in the assemble output, then build again",
    ),
    # what the OOM killer leaves (assemble is PID 1 in its container, which no signal
    # from inside it can kill)
    assembling(
        "assemble-killed",
        "exit 137\n",
        "assemble exited with status 137",
        "assemble was killed (out of memory, or stopped from outside)",
    ),
]


@pytest.mark.parametrize("row", params(ASSEMBLE_CASES))
def test_failing_assemble(case: Case, row: Failure) -> None:
    outcome = row.check(case)
    assert "  | about to fail" in outcome.stderr or row.id != "assemble-fails"


@pytest.mark.parametrize("row", params(BUILDER_CASES))
def test_unusable_builders(case: Case, row: Failure, builders: dict[str, str]) -> None:
    args = tuple(arg.format(**builders) if arg.startswith("{") else arg for arg in row.args)
    replace(row, args=args).check(case)


def test_a_builder_without_scripts_is_fine_when_the_source_brings_them(
    case: Case, builders: dict[str, str]
) -> None:
    app = case.app(OWN_SCRIPTS)
    tag = case.tag()
    outcome = case.run(str(app), "--builder", builders["no-scripts-url"], "--tag", tag)
    outcome.expect_success(tag)
