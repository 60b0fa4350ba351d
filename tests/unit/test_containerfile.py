"""`build --as-containerfile`: the recipe matches what the build does (fake engine), the
text quotes what it must, DIR holds what buildpy uploads, and DIR is never a user's."""

from __future__ import annotations

import json
import os
import shlex
import stat
from pathlib import Path

import pytest
from fakes import FakeEngine

from buildpy import build, cli, containerfile, layer
from buildpy import plan as build_plan
from buildpy.config import BuildOptions
from buildpy.engine import ImageInfo
from buildpy.errors import UsageError

OWN = "localhost/buildpy/python-311"
OWN_BUILDER = ImageInfo(
    id="sha256:own",
    ref=OWN,
    user="1001:0",
    workdir="/opt/app-root/src",
    env={"HOME": "/opt/app-root/src", "PATH": "/usr/bin"},
    labels={
        "io.openshift.s2i.scripts-url": "image:///usr/libexec/s2i",
        layer.PHASES_LABEL: "dependencies,application,wheelhouse",
    },
)


class _Sink:
    def write(self, chunk: bytes) -> int:
        return len(chunk)

    def flush(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDPY_BUILDER_PREFIX", raising=False)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / ".s2i").mkdir(parents=True)
    (root / "requirements.txt").write_text("flask\n")
    (root / "wsgi.py").write_text("application = None\n")
    (root / ".s2i" / "environment").write_text(
        "PIP_INDEX_URL=http://mirror.example/simple/\nPIP_TIMEOUT=30\nGREETING=hi\n"
    )
    return root


def make_plan(app: Path, builder: str = OWN, **kwargs: object) -> build_plan.BuildPlan:
    options = BuildOptions(source=app, builder=builder, **kwargs)  # type: ignore[arg-type]
    return build_plan.make(options, describe=lambda root: None)


def _exported(script: bytes) -> dict[str, str]:
    """``export KEY='value'`` lines (``environment.shell_export_script``) as a dict."""
    found = {}
    for line in script.decode().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        found[key] = shlex.split(value)[0]
    return found


def test_the_recipe_gives_assemble_what_the_build_gives_it(app: Path) -> None:
    plan = make_plan(app, env=("ODD=x",), build_env=("TOKEN=s3cret",))
    engine = FakeEngine(stored={OWN: OWN_BUILDER})
    build.run(plan, engine, output=_Sink())
    deps, application = engine.created
    made = containerfile.recipe(plan)
    assert made.dependencies is not None

    assert dict(made.stage_env) == dict(deps.env)
    assert dict(made.image_env) == dict(application.env)
    assert dict(made.labels) == dict(application.labels)
    for stage, container in ((made.dependencies, "ctr1"), (made.application, "ctr2")):
        given = _exported(engine.placed[(container, "/tmp/.buildpy/env")])
        # the one difference: no download cache volume in a Containerfile build
        given = {k: v for k, v in given.items() if not k.endswith(("_CACHE_DIR", "WHEEL_CACHE"))}
        assert {**stage.line, **stage.hidden} == {**given, "PIP_NO_CACHE_DIR": "1"}
    assert made.dependencies.hidden == {"TOKEN": "s3cret"}
    placed = {p: d for (c, p), d in engine.placed.items() if c == "ctr1" and "/src/" in p}
    assert placed == {"/tmp/src/requirements.txt": b"flask\n"}
    assert (made.assemble, made.run) == ("/usr/libexec/s2i/assemble", "/usr/libexec/s2i/run")


def test_the_text_keeps_credentials_out_and_quotes_values(app: Path) -> None:
    plan = make_plan(app, env=('ODD=say "$HOME" \\ now',), build_env=("TOKEN=s3cret",))
    text = containerfile.render(containerfile.recipe(plan))
    assert "s3cret" not in text
    assert 'ODD="say \\"\\$HOME\\" \\\\ now"' in text
    assert text.count(f". {containerfile.BUILD_ENV_TARGET} && ") == 2
    assert "BUILDPY_ASSEMBLE_PHASE=dependencies" in text
    assert "BUILDPY_ASSEMBLE_PHASE=application" in text
    assert text.index("AS dependencies") < text.index("FROM dependencies")
    assert text.splitlines()[-3:] == [
        "USER 1001:0",
        "WORKDIR /opt/app-root/src",
        'CMD ["/usr/libexec/s2i/run"]',
    ]


def test_a_line_break_in_a_value_is_a_usage_error(app: Path) -> None:
    plan = make_plan(app, env=("BAD=one\ntwo",))
    with pytest.raises(UsageError, match="BAD: a value with a line break"):
        containerfile.render(containerfile.recipe(plan))


def test_another_builder_is_built_in_one_phase_with_its_own_user(app: Path) -> None:
    made = containerfile.recipe(make_plan(app, builder="quay.io/sclorg/python-311-c9s"))
    text = containerfile.render(made)
    assert made.dependencies is None and "AS dependencies" not in text
    assert not [line for line in text.splitlines() if line.startswith(("USER", "WORKDIR"))]
    assert "FROM quay.io/sclorg/python-311-c9s\n" in text
    assert "BUILDPY_ASSEMBLE_PHASE" not in text
    assert "COPY --chown=1001:0 src/ /tmp/src/" in text


def test_the_sources_own_assemble_is_copied_and_runs_in_one_phase(app: Path) -> None:
    bindir = app / ".s2i" / "bin"
    bindir.mkdir()
    (bindir / "assemble").write_text("#!/bin/sh\necho mine\n")
    made = containerfile.recipe(make_plan(app))
    text = containerfile.render(made)
    assert made.dependencies is None
    assert "assemble" in (made.one_phase_reason or "")
    assert "COPY --chown=1001:0 scripts/ /tmp/scripts/" in text
    assert "&& " not in text and "/tmp/scripts/assemble" in text
    assert 'CMD ["/usr/libexec/s2i/run"]' in text


def test_ca_bundle_and_secrets_are_secret_mounts(app: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("CERT\n")
    token = tmp_path / "token"
    token.write_text("t0k\n")
    plan = make_plan(app, ca_bundle=ca, secrets=(f"id=token,src={token}",), network="host")
    made = containerfile.recipe(plan)
    text = containerfile.render(made)
    owned = "uid=1001,gid=0,mode=0400"
    assert f"--mount=type=secret,id=buildpy-ca-bundle,target={build_plan.CA_TARGET},{owned}" in text
    assert f"--mount=type=secret,id=token,target=/run/secrets/token,{owned}" in text
    assert "PIP_CERT=/dev/shm/buildpy-ca-bundle.crt" in text  # a path: on the RUN line
    assert containerfile.build_command(plan, made) == (
        "podman",
        "build",
        "--network",
        "host",
        "--secret",
        "id=buildpy-ca-bundle,src=secrets/buildpy-ca-bundle",
        "--secret",
        "id=token,src=secrets/token",
        ".",
    )


def test_dir_holds_what_buildpy_uploads(app: Path, tmp_path: Path) -> None:
    (app / ".s2iignore").write_text("notes.txt\n")
    (app / "notes.txt").write_text("left out\n")
    (app / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(app / "run.sh", 0o750)
    (app / "pkg").mkdir(mode=0o700)
    (app / "pkg" / "mod.py").write_text("x = 1\n")
    os.symlink("wsgi.py", app / "link.py")
    out = tmp_path / "out"

    written = containerfile.write(make_plan(app, build_env=("TOKEN=s3cret",)), out)

    assert written.phases == 2 and written.directory == out.resolve()
    src = out / "src"
    assert sorted(p.name for p in src.iterdir()) == sorted(
        [".s2i", ".s2iignore", "link.py", "pkg", "requirements.txt", "run.sh", "wsgi.py"]
    )
    assert stat.S_IMODE((src / "run.sh").stat().st_mode) == 0o750
    assert stat.S_IMODE((src / "pkg").stat().st_mode) == 0o700
    assert os.readlink(src / "link.py") == "wsgi.py"
    assert (out / "dependencies" / "requirements.txt").read_bytes() == b"flask\n"
    secret = out / "secrets" / containerfile.BUILD_ENV_ID
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert _exported(secret.read_bytes()) == {"TOKEN": "s3cret"}
    assert "s3cret" not in (out / "Containerfile").read_text()
    assert (out / ".containerignore").read_text() == "secrets\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_a_directory_with_other_files_is_refused(app: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me\n")
    with pytest.raises(UsageError, match="files that buildpy did not write"):
        containerfile.write(make_plan(app), out)
    assert (out / "mine.txt").read_text() == "keep me\n"


def test_a_directory_written_before_is_replaced(app: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    containerfile.write(make_plan(app), out)
    (out / "src" / "stale.py").write_text("old\n")
    containerfile.write(make_plan(app), out)
    assert not (out / "src" / "stale.py").exists()


def test_dir_inside_the_source_is_not_copied_into_itself(app: Path) -> None:
    out = app / "out"
    containerfile.write(make_plan(app), out)
    containerfile.write(make_plan(app), out)
    assert not (out / "src" / "out").exists()
    assert (out / "src" / "wsgi.py").is_file()


def test_cli_writes_without_podman(
    app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
    out = tmp_path / "out"
    code = cli.main(["build", str(app), "--as-containerfile", str(out), "--builder", OWN])
    assert code == 0
    assert capsys.readouterr().out == f"{out.resolve()}\n"
    assert (out / "Containerfile").read_text().startswith(containerfile.HEADER)
    argv = ["build", str(app), "--as-containerfile", str(out), "--builder", OWN]
    assert cli.main([*argv, "--format", "json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["directory"] == str(out.resolve()) and said["phases"] == 2
    assert said["command"][:2] == ["podman", "build"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--push", "--tag", "localhost/a"],
        ["--incremental", "--tag", "localhost/a"],
        ["--scripts-url", "image:///usr/libexec/s2i"],
    ],
)
def test_cli_refuses_what_a_containerfile_cannot_do(
    app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    out = tmp_path / "out"
    code = cli.main(["build", str(app), "--as-containerfile", str(out), *extra])
    assert code == UsageError.exit_code == 2
    assert f"--as-containerfile does not take {extra[0]}" in capsys.readouterr().err
    assert not out.exists()


def test_a_secret_with_buildpys_own_id_is_refused(app: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0k\n")
    plan = make_plan(app, secrets=(f"id={containerfile.BUILD_ENV_ID},src={token}",))
    with pytest.raises(UsageError, match="is buildpy's own"):
        containerfile.recipe(plan)


def test_an_unwritable_place_is_a_usage_error(app: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    with pytest.raises(UsageError, match="cannot write it"):
        containerfile.write(make_plan(app), blocker / "out")
