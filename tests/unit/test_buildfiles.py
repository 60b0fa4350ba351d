"""Build-only files: --secret parsing, and the Podman secrets a build owns and removes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import BUILDER, FakeEngine
from hypothesis import given
from hypothesis import strategies as st

from buildpy import build, buildfiles
from buildpy import plan as build_plan
from buildpy.buildfiles import BuildFile, BuildSecrets
from buildpy.config import BuildOptions
from buildpy.engine import ImageInfo
from buildpy.errors import AssembleFailed, EngineError, UsageError

PHASED = ImageInfo(
    id="sha256:phased",
    ref="localhost/buildpy/phased",
    user="1001:0",
    env={"HOME": "/opt/app-root/src"},
    labels={**BUILDER.labels, "io.buildpy.assemble-phases": "dependencies,application"},
)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "app.py").write_text("print('hi')\n")
    return root


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token.txt"
    path.write_bytes(b"s3cr3t\n")
    return path


def make_plan(app: Path, *specs: str, builder: str = BUILDER.ref) -> build_plan.BuildPlan:
    options = BuildOptions(source=app, builder=builder, secrets=specs)
    return build_plan.make(options, describe=lambda root: None, environ={"PW": "hunter2"})


class _Sink:
    def write(self, chunk: bytes) -> int:
        return len(chunk)

    def flush(self) -> None:
        pass


def test_file_and_env_forms(token: Path) -> None:
    parsed = buildfiles.parse_secret(f"id=token,src={token}", {})
    assert parsed == BuildFile("--secret id=token", "/run/secrets/token", b"s3cr3t\n")
    assert "s3cr3t" not in repr(parsed)
    for spec in ("id=pw,env=PW", "id=pw,src=PW,type=env", "type=env,source=PW,id=pw"):
        assert buildfiles.parse_secret(spec, {"PW": "hunter2"}).data == b"hunter2"
    assert buildfiles.parse_secret(f"id=t,source={token},type=file", {}).data == b"s3cr3t\n"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("src=/etc/hostname", "the id"),
        ("id=../x,src=/etc/hostname", "the id"),
        ("id=.hidden,src=/etc/hostname", "the id"),
        ("id=a", "where the value comes from"),
        ("id=a,type=env", "where the value comes from"),
        ("id=a,type=socket,src=/etc/hostname", "where the value comes from"),
        ("id=a,env=PW,type=file", "where the value comes from"),
        ("id=a,src=/nowhere/at/all", "not a readable file"),
        ("id=a,env=UNSET", "is empty"),
        ("id=a,src=/etc/hostname,mode=0400", "is not one of"),
        ("id=a,id=b,src=/etc/hostname", "is not one of"),
        ("id=a,/etc/hostname", "is not one of"),
    ],
)
def test_bad_secrets_are_usage_errors(spec: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem) as info:
        buildfiles.parse_secret(spec, {})
    assert info.value.hint and "--secret" in info.value.message


@given(st.text(max_size=60))
def test_any_argument_parses_or_is_a_usage_error(spec: str) -> None:
    try:
        parsed = buildfiles.parse_secret(spec, {"PW": "x"})
    except UsageError:
        return
    assert parsed.target.startswith("/run/secrets/") and parsed.data == b"x"


def test_duplicate_ids_empty_and_oversized_files(tmp_path: Path, token: Path) -> None:
    with pytest.raises(UsageError, match="given twice"):
        buildfiles.parse_secrets([f"id=a,src={token}", "id=a,env=PW"], {"PW": "x"})
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(UsageError, match="is empty"):
        buildfiles.parse_secret(f"id=a,src={empty}", {})
    big = tmp_path / "big"
    big.write_bytes(b"x" * 512000)
    with pytest.raises(UsageError, match="at most 511999"):
        buildfiles.parse_secret(f"id=a,src={big}", {})


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("1001:0", (1001, 0, 0o400)),
        ("1001", (1001, 0, 0o400)),
        ("1001:root", (1001, 0, 0o400)),
        ("", (0, 0, 0o400)),
        ("default", (0, 0, 0o444)),
    ],
)
def test_who_may_read_the_files(user: str, expected: tuple[int, int, int]) -> None:
    assert buildfiles.reader(user) == expected


def test_secrets_reach_every_working_container_and_go_afterwards(app: Path, token: Path) -> None:
    (app / "requirements.txt").write_text("flask\n")
    engine = FakeEngine(stored={PHASED.ref: PHASED})
    plan = make_plan(app, f"id=token,src={token}", "id=pw,env=PW", builder=PHASED.ref)
    build.run(plan, engine, output=_Sink())
    assert len(engine.created) == 2  # dependency phase and application phase
    for spec in engine.created:
        assert [m.target for m in spec.secrets] == ["/run/secrets/token", "/run/secrets/pw"]
        assert all("hunter2" not in value for value in spec.env.values())
    names = {m.name for m in engine.created[0].secrets}
    assert len(names) == 2 and all(name.startswith("buildpy-secret-") for name in names)
    assert engine.secrets == {}  # all removed
    assert not any(b"hunter2" in data for _, data in engine.uploads)


def test_secrets_go_after_a_failure_and_after_ctrl_c(app: Path, token: Path) -> None:
    plan = make_plan(app, f"id=token,src={token}")
    failing = FakeEngine(status=1)
    with pytest.raises(AssembleFailed):
        build.run(plan, failing, output=_Sink())
    assert failing.secrets_made and failing.secrets == {}

    def interrupt() -> None:
        raise KeyboardInterrupt

    interrupted = FakeEngine(on_run=interrupt)
    with pytest.raises(KeyboardInterrupt):
        build.run(plan, interrupted, output=_Sink())
    assert interrupted.secrets_made and interrupted.secrets == {}
    assert interrupted.removed == ["ctr1"]


def test_a_failed_creation_removes_what_was_made() -> None:
    engine = FakeEngine()
    files = [BuildFile("a", "/run/secrets/a", b"1"), BuildFile("b", "/run/secrets/b", b"")]
    with pytest.raises(EngineError), BuildSecrets(engine, files, "1001"):
        pass
    assert len(engine.secrets_made) == 1 and engine.secrets == {}


def test_two_builds_never_share_a_secret_name() -> None:
    engine = FakeEngine()
    files = [BuildFile("a", "/run/secrets/a", b"1")]
    with BuildSecrets(engine, files, "1001") as one, BuildSecrets(engine, files, "1001") as two:
        assert one.mounts[0].name != two.mounts[0].name
    assert engine.secrets == {}
