"""Coverage-guided fuzzing of the env-file parser, the ignore matcher and the tar writer.

With atheris installed (the ``fuzz`` extra; ``scripts/setup-host`` installs it where a
wheel exists), each target runs in a subprocess for a fixed number of inputs from a
fixed seed, so a run is bounded and repeatable; without it, hypothesis feeds the same
targets random bytes. Each test prints ``fuzz: TARGET (ENGINE) N inputs, F failures``.
``BUILDPY_FUZZ_RUNS`` changes the number of inputs (e.g. 1000000 for a long local run);
``BUILDPY_FUZZ_ENGINE=hypothesis`` uses the fallback even where atheris is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import fuzz_targets
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Inputs per target: each takes a few seconds here.
RUNS = {"env-file parser": 50000, "ignore matcher": 8000, "tar writer": 1000}
SEEDS = {
    "env-file parser": [
        b"A=1\nB='x y'\n# comment\nexport C=2\n",
        b'\xef\xbb\xbfK=v\r\nL="q"\r\n',
        b'Q="unterminated\n',
        b"K\x1ev\x1fL\x1e w \r",
    ],
    "ignore matcher": [
        b"*.pyc\n!keep.pyc\nbuild/\n/docs/**\n\0a/b.pyc\nbuild/x\ndocs/a/b\nkeep.pyc",
        b"[a-c]?\\ \n**/x\n[!/]y\n\0a/b/x\nb c\n/y",
        b"[z-a]\n\0a",
    ],
    "tar writer": [
        b"\x05\x01\x03abc\x02\x00\x03def\x10hello\x01",
        b"\x00\x01\x02dd\x00\x03\x04fil\x05\x02\x02ln\x01\x01\x03tgt",
    ],
}
ATHERIS = (
    importlib.util.find_spec("atheris") is not None
    and os.environ.get("BUILDPY_FUZZ_ENGINE") != "hypothesis"  # to try the fallback
)


def _runs(target: str) -> int:
    return int(os.environ.get("BUILDPY_FUZZ_RUNS") or RUNS[target])


def _with_atheris(target: str, runs: int, workdir: Path) -> tuple[int, int, str]:
    corpus = workdir / "corpus"
    corpus.mkdir()
    for number, seed in enumerate(SEEDS[target]):
        (corpus / f"seed-{number}").write_bytes(seed)
    done = subprocess.run(
        [
            sys.executable,
            str(Path(fuzz_targets.__file__).with_name("fuzz_main.py")),
            target,
            f"-runs={runs}",
            "-seed=1",
            "-max_len=512",
            "-timeout=20",  # one input taking longer is a failure (a pathological pattern)
            f"-artifact_prefix={workdir}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, fuzz_targets.SCRATCH: str(workdir)},
        timeout=600,
    )
    counted = re.search(r"Done (\d+) runs", done.stderr)
    tried = int(counted.group(1)) if counted else 0
    failures = 0 if done.returncode == 0 else 1
    return tried, failures, done.stderr[-4000:]


def _with_hypothesis(target: str, runs: int, workdir: Path) -> tuple[int, int, str]:
    check = fuzz_targets.TARGETS[target]
    tried = 0

    @settings(
        max_examples=runs,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(st.sampled_from(SEEDS[target]), st.binary(max_size=512)))
    def fuzz(data: bytes) -> None:
        nonlocal tried
        tried += 1
        check(data)

    os.environ[fuzz_targets.SCRATCH] = str(workdir)
    try:
        fuzz()
    finally:
        del os.environ[fuzz_targets.SCRATCH]
    return tried, 0, ""


@pytest.mark.parametrize("target", list(RUNS))
def test_fuzz(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _runs(target) if ATHERIS else min(_runs(target), 1000)
    engine = "atheris" if ATHERIS else "hypothesis"
    fuzz = _with_atheris if ATHERIS else _with_hypothesis
    tried, failures, output = fuzz(target, runs, tmp_path)
    with capsys.disabled():
        print(f"\nfuzz: {target} ({engine}) {tried} inputs, {failures} failures")
    assert failures == 0, output
    assert tried >= runs, output


@pytest.mark.parametrize("target", list(RUNS))
def test_the_seeds_pass_and_a_planted_bug_is_caught(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The targets accept their seeds, and fail when what they check is broken."""
    monkeypatch.setenv(fuzz_targets.SCRATCH, str(tmp_path))
    check = fuzz_targets.TARGETS[target]
    for seed in SEEDS[target]:
        check(seed)
    broken = {
        "env-file parser": ("buildpy.environment.render_env_text", lambda values: "A=1\n"),
        "ignore matcher": (
            "buildpy.source.IgnoreRules.ignored",
            lambda self, path, is_dir: path.startswith("/"),
        ),
        "tar writer": ("buildpy.source.walk", lambda *args, **kwargs: iter(())),
    }[target]
    monkeypatch.setattr(*broken)
    with pytest.raises(AssertionError):
        for seed in SEEDS[target]:
            check(seed)
