"""The build's stages against a fake engine: what is created, uploaded, committed, removed."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from fakes import BUILDER, FakeEngine

from buildpy import build, cache, layer
from buildpy import dependencies as deps
from buildpy import plan as build_plan
from buildpy.config import BuildOptions
from buildpy.container import TAIL_LINES, WRAPPER
from buildpy.engine import CommitSpec, ContainerSpec, ImageInfo
from buildpy.errors import (
    AssembleFailed,
    BuilderImageError,
    EngineError,
    EnvFileError,
    IndexUnreachable,
    SourceError,
    UsageError,
)


def no_git(root: Path) -> None:
    return None


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / ".s2i").mkdir(parents=True)
    (root / "app.py").write_text("print('hi')\n")
    (root / ".s2i" / "environment").write_text("FROM_FILE=s2i\nSHARED=s2i\n")
    return root


def make_plan(app: Path, **kwargs: object) -> build_plan.BuildPlan:
    return build_plan.make(BuildOptions(source=app, **kwargs), describe=no_git)  # type: ignore[arg-type]


def test_precedence_reaches_the_container_environment(app: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "extra.env"
    env_file.write_text("SHARED=file\nFROM_ENV_FILE=1\n")
    plan = make_plan(app, env_files=(env_file,), env=("SHARED=cli",))
    engine = FakeEngine()
    build.run(plan, engine, output=_Sink())
    env = engine.created[0].env
    assert env["SHARED"] == "cli"
    assert env["FROM_FILE"] == "s2i"
    assert env["FROM_ENV_FILE"] == "1"


def test_build_only_values_never_reach_the_container_config(app: Path) -> None:
    plan = make_plan(app, build_env=("SECRET=hunter2",))
    engine = FakeEngine()
    build.run(plan, engine, output=_Sink())
    spec = engine.created[0]
    assert "SECRET" not in spec.env
    assert all("hunter2" not in part for part in spec.command)
    assert b"hunter2" in engine.uploaded_file(".buildpy/env")
    assert not any("hunter2" in change for change in engine.commits[0].changes)


def test_the_wrapper_deletes_the_env_file_before_assemble(app: Path) -> None:
    engine = FakeEngine()
    build.run(make_plan(app, build_env=("A=1",)), engine, output=_Sink())
    command = engine.created[0].command
    assert command[:2] == ("/bin/sh", "-c")
    script = command[2]
    assert script.index("rm -rf /tmp/.buildpy") < script.index('exec "$@"')
    assert command[-1] == "/usr/libexec/s2i/assemble"


def test_wrapper_runs_under_a_real_shell(tmp_path: Path) -> None:
    """The wrapper sources the file, removes it, then execs the command with the values."""
    envdir = tmp_path / "tmp" / ".buildpy"
    envdir.mkdir(parents=True)
    (envdir / "env").write_text("export GREETING='it'\"'\"'s here'\n")
    script = WRAPPER.replace("/tmp/", f"{tmp_path}/tmp/")
    done = subprocess.run(
        ["/bin/sh", "-c", script, "wrapper", "sh", "-c", 'printf %s "$GREETING"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "it's here"
    assert not envdir.exists()


def test_upload_is_owned_by_the_builder_user(app: Path) -> None:
    engine = FakeEngine()
    build.run(make_plan(app), engine, output=_Sink())
    path, _ = engine.uploads[0]
    assert path == "/tmp"
    members = engine.uploaded_members()
    assert {"src", "src/app.py"} <= set(members)
    assert {(m.uid, m.gid) for m in members.values()} == {(1001, 0)}


def test_named_user_is_resolved_from_passwd(app: Path) -> None:
    named = ImageInfo(id="x", ref="named", user="default", labels=BUILDER.labels)
    engine = FakeEngine(stored={"named": named})
    engine.files["/etc/passwd"] = b"root:x:0:0::/root:/bin/sh\ndefault:x:1001:0::/opt:/bin/sh\n"
    build.run(make_plan(app, builder="named"), engine, output=_Sink())
    assert {(m.uid, m.gid) for m in engine.uploaded_members().values()} == {(1001, 0)}


def test_unknown_named_user_is_an_image_error(app: Path) -> None:
    named = ImageInfo(id="x", ref="named", user="ghost", labels=BUILDER.labels)
    engine = FakeEngine(stored={"named": named}, files={"/etc/passwd": b"root:x:0:0::/:/bin/sh\n"})
    with pytest.raises(BuilderImageError, match="ghost"):
        build.run(make_plan(app, builder="named"), engine, output=_Sink())
    assert engine.removed == ["ctr1"]


class _UserlessEngine(FakeEngine):
    """Podman 4.3: nothing can be copied out of a container whose user is unknown."""

    def read_file(self, container: str, path: str) -> bytes | None:
        raise EngineError(
            f"Podman could not read {path} from the container: determining run uid: user:"
            ' unknown user error looking up user "ghost"'
        )


def test_a_user_podman_cannot_resolve_is_an_image_error(app: Path) -> None:
    named = ImageInfo(id="x", ref="named", user="ghost", labels=BUILDER.labels)
    engine = _UserlessEngine(stored={"named": named})
    with pytest.raises(BuilderImageError, match="ghost"):
        build.run(make_plan(app, builder="named"), engine, output=_Sink())
    assert engine.removed == ["ctr1"]


class _StoppedDuringCommit(FakeEngine):
    """Ctrl-C arrives while the service commits (it finishes the commit regardless)."""

    def commit(self, container: str, spec: CommitSpec) -> str:
        signal.raise_signal(signal.SIGINT)
        return super().commit(container, spec)


def test_a_build_stopped_during_its_commit_leaves_the_tag_as_it_was(app: Path) -> None:
    stored = {**FakeEngine().stored, "localhost/app:v1": OLD_APP, OLD_APP.id: OLD_APP}
    engine = _StoppedDuringCommit(stored=stored)
    with pytest.raises(KeyboardInterrupt):
        build.run(make_plan(app, tag="localhost/app:v1"), engine, output=_Sink())
    assert engine.removed_images == ["sha256:result1"]
    assert engine.stored["localhost/app:v1"].id == OLD_APP.id
    assert engine.removed == ["ctr1"]


OLD_APP = ImageInfo(id="sha256:old", ref="localhost/app:v1")


@dataclass
class _LookupDuringUpload(FakeEngine):
    """The application phase's upload finishes only once the tag's image was looked up."""

    final_upload: int = 0  # the index of the application phase's upload
    looked_up: threading.Event = field(default_factory=threading.Event)

    def find_image(self, ref: str) -> ImageInfo | None:
        if ref == "localhost/app:v1":
            self.looked_up.set()
        return super().find_image(ref)

    def upload(self, container: str, path: str, archive: Iterable[bytes]) -> None:
        if len(self.uploads) == self.final_upload:
            assert self.looked_up.wait(10), "the tag was not looked up during the upload"
        super().upload(container, path, archive)


@pytest.mark.parametrize("placed", [False, True])
def test_the_tag_is_looked_up_while_the_source_uploads(app: Path, placed: bool) -> None:
    builder = BUILDER
    if placed:  # a dependency layer, and nothing left to run: the source is placed
        builder = replace(BUILDER, labels={**BUILDER.labels, layer.PHASES_LABEL: "dependencies"})
        (app / "requirements.txt").write_text("flask\n")
    stored = {builder.ref: builder, "localhost/app:v1": OLD_APP, OLD_APP.id: OLD_APP}
    engine = _LookupDuringUpload(stored=stored, final_upload=int(placed))
    engine.output = [b"BUILDPY_APPLICATION_PHASE=copy\n"]
    result = build.run(make_plan(app, tag="localhost/app:v1"), engine, output=_Sink())
    assert engine.stored["localhost/app:v1"].id == result.image_id
    assert (result.phases, len(engine.started)) == ((2, 1) if placed else (1, 1))


def test_commit_sets_cmd_user_and_restores_entrypoint(app: Path) -> None:
    builder = ImageInfo(
        id="b", ref="b", user="1001", workdir="/w", entrypoint=("/init",), labels=BUILDER.labels
    )
    engine = FakeEngine(stored={"b": builder})
    result = build.run(make_plan(app, builder="b", tag="localhost/app:v1"), engine, output=_Sink())
    commit = engine.commits[0]
    assert f"CMD {json.dumps(['/usr/libexec/s2i/run'])}" in commit.changes
    assert 'ENTRYPOINT ["/init"]' in commit.changes
    assert "USER 1001" in commit.changes
    assert (commit.repository, commit.tag) == ("localhost/app", "v1")
    assert result.image_id == "sha256:result1"
    assert engine.removed == ["ctr1"]


@dataclass
class _Measured(FakeEngine):
    """Committed images have a size; every inspect is recorded."""

    inspected: list[str] = field(default_factory=list)

    def find_image(self, ref: str) -> ImageInfo | None:
        self.inspected.append(ref)
        found = super().find_image(ref)
        return replace(found, size=4242) if found and found.id.startswith("sha256:r") else found


def test_the_result_has_the_image_size_from_one_inspect(app: Path) -> None:
    engine = _Measured()
    result = build.run(make_plan(app, tag="localhost/app:v1"), engine, output=_Sink())
    assert result.size == 4242
    assert engine.inspected.count(result.image_id) == 1
    assert engine.removed == ["ctr1"]


def test_source_scripts_win_and_are_uploaded(app: Path) -> None:
    bindir = app / ".s2i" / "bin"
    bindir.mkdir()
    (bindir / "run").write_text("#!/bin/sh\necho custom\n")
    engine = FakeEngine()
    build.run(make_plan(app), engine, output=_Sink())
    assert engine.created[0].command[-1] == "/usr/libexec/s2i/assemble"
    assert 'CMD ["/tmp/scripts/run"]' in engine.commits[0].changes
    member = engine.uploaded_members()["scripts/run"]
    assert member.mode & 0o111
    assert engine.uploaded_file("scripts/run") == b"#!/bin/sh\necho custom\n"


def test_failing_assemble_reports_status_and_tail_and_removes(app: Path) -> None:
    lines = [f"line {i}\n".encode() for i in range(50)]
    engine = FakeEngine(status=3, output=[b"".join(lines), b"no newline at end"])
    with pytest.raises(AssembleFailed) as info:
        build.run(make_plan(app), engine, output=_Sink())
    assert info.value.status == 3
    assert info.value.tail[-1] == "no newline at end"
    assert info.value.tail[-2] == "line 49"
    assert len(info.value.tail) == TAIL_LINES
    assert engine.commits == []
    assert engine.removed == ["ctr1"]


def test_an_unreachable_index_is_named_with_its_credentials_masked(app: Path) -> None:
    said = (
        b"ERROR: the package index https://ci:***@nosuch.invalid/simple cannot be reached\n"
        b"BUILDPY_UNREACHABLE_INDEX=https://ci:s3cret@nosuch.invalid/simple"
        b" (Name or service not known)\n"
    )
    shown = _Sink()
    engine = FakeEngine(status=5, output=[said])
    with pytest.raises(IndexUnreachable) as info:
        build.run(make_plan(app), engine, output=shown)
    assert info.value.exit_code == AssembleFailed.exit_code == 7
    assert info.value.message == (
        "the package index https://ci:***@nosuch.invalid/simple cannot be reached from the"
        " build (Name or service not known)"
    )
    assert info.value.hint and "--network host" in info.value.hint
    assert "s3cret" not in str(info.value) + "".join(info.value.tail)
    assert b"s3cret" not in shown.data and b"BUILDPY_UNREACHABLE_INDEX" not in shown.data
    assert engine.commits == []


def test_interrupt_during_assemble_removes_the_container(app: Path) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    engine = FakeEngine(on_run=interrupt)
    with pytest.raises(KeyboardInterrupt):
        build.run(make_plan(app), engine, output=_Sink())
    assert engine.removed == ["ctr1"]


def test_a_failing_remove_does_not_hide_the_build_error(app: Path) -> None:
    class Stubborn(FakeEngine):
        def remove(self, container: str) -> None:
            raise RuntimeError("engine gone")

    with pytest.raises(AssembleFailed):
        build.run(make_plan(app), Stubborn(status=1), output=_Sink())


def test_assemble_output_is_streamed_to_output(app: Path) -> None:
    sink = _Sink()
    build.run(make_plan(app), FakeEngine(output=[b"a\n", b"b\n"]), output=sink)
    assert sink.data == b"a\nb\n"


def test_missing_builder_label_and_scripts(app: Path) -> None:
    plain = ImageInfo(id="p", ref="plain", user="1001")
    engine = FakeEngine(stored={"plain": plain})
    with pytest.raises(BuilderImageError, match="scripts-url"):
        build.run(make_plan(app, builder="plain"), engine, output=_Sink())
    assert engine.created == []


def test_ca_bundle_travels_as_a_secret_and_is_announced_build_only(
    app: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    engine = FakeEngine()
    build.run(make_plan(app, ca_bundle=bundle), engine, output=_Sink())
    spec = engine.created[0]
    assert spec.mounts == ()  # no host path inside the container: works over ssh://
    (secret,) = spec.secrets
    assert (secret.target, secret.uid, secret.gid, secret.mode) == (
        build_plan.CA_TARGET,
        1001,
        0,
        0o400,
    )
    assert engine.secrets_made == [secret.name]
    env_script = engine.uploaded_file(".buildpy/env").decode()
    assert f"export PIP_CERT='{build_plan.CA_TARGET}'" in env_script
    assert "PIP_CERT" not in engine.created[0].env


def test_plan_errors(tmp_path: Path, app: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        make_plan(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(SourceError, match="not a directory"):
        make_plan(tmp_path / "file")
    with pytest.raises(UsageError, match="ca-bundle"):
        make_plan(app, ca_bundle=tmp_path / "missing.crt")
    (app / ".s2i" / "environment").write_text("GOOD=1\nnot an assignment\n")
    with pytest.raises(EnvFileError, match=r"\.s2i/environment, line 2"):
        make_plan(app)


def test_labels_name_builder_source_and_commit(app: Path) -> None:
    from buildpy.gitinfo import GitInfo

    info = GitInfo("abc123", "Ann <a@example.com>", "2026-01-01T00:00:00+00:00", "fix", "main")
    plan = build_plan.make(BuildOptions(source=app), describe=lambda root: info)
    engine = FakeEngine()
    build.run(plan, engine, output=_Sink())
    labels = engine.created[0].labels
    assert labels["io.openshift.s2i.build.image"] == "localhost/buildpy/python-311"
    assert labels["io.openshift.s2i.build.source-location"] == str(app)
    assert labels["io.openshift.build.commit.id"] == "abc123"
    assert labels["io.openshift.build.commit.ref"] == "main"


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)

    def flush(self) -> None:
        pass


PHASED = ImageInfo(
    id="sha256:phased",
    ref="phased",
    user="1001",
    labels={**BUILDER.labels, layer.PHASES_LABEL: "dependencies,application"},
)


def phased_app(app: Path) -> Path:
    (app / "requirements.txt").write_text("flask\n")
    return app


def test_two_phases_then_the_dependency_layer_is_reused(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    first = build.run(make_plan(phased_app(app), builder="phased"), engine, output=_Sink())
    assert (first.phases, first.dependencies_reused) == (2, False)
    deps_spec, final_spec = engine.created
    assert deps_spec.image == "sha256:phased"
    assert final_spec.image == "sha256:result1"  # the dependency image
    assert "FROM_FILE" not in deps_spec.env  # only installation variables are keyed and kept
    assert final_spec.env["FROM_FILE"] == "s2i"
    deps_upload = engine.uploads[0][1]
    assert b"requirements.txt" in deps_upload and b"app.py" not in deps_upload
    assert b"BUILDPY_ASSEMBLE_PHASE='dependencies'" in deps_upload
    assert b"BUILDPY_ASSEMBLE_PHASE='application'" in engine.uploads[1][1]
    assert engine.removed == ["ctr1", "ctr2"]

    (app / "app.py").write_text("print('changed')\n")
    second = build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    assert (second.phases, second.dependencies_reused) == (2, True)
    assert len(engine.created) == 3 and engine.created[2].image == "sha256:result1"

    (app / "requirements.txt").write_text("flask\nsix\n")
    third = build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    assert third.dependencies_reused is False
    assert len(engine.created) == 5


def test_the_dependency_layer_records_digests_of_its_inputs_never_values(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    plan = make_plan(
        phased_app(app), builder="phased", build_env=("PIP_INDEX_URL=https://u:tok@x",)
    )
    build.run(plan, engine, output=_Sink())
    labels = engine.created[0].labels
    recorded = deps.InputDigests.from_label(labels[cache.INPUTS_LABEL])
    assert recorded == layer.Inputs.of(plan, PHASED).digests
    assert recorded.source == deps.source_digest(str(app))
    assert set(recorded.variables) == {"PIP_INDEX_URL"}
    assert "tok" not in labels[cache.INPUTS_LABEL] and "flask" not in labels[cache.INPUTS_LABEL]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"cache": False}, "--no-cache"),
    ],
)
def test_one_phase_when_splitting_is_off_or_unsupported(
    app: Path, change: dict[str, object], reason: str
) -> None:
    plan = make_plan(phased_app(app), **{"builder": "phased", **change})
    engine = FakeEngine(stored={"phased": PHASED, BUILDER.ref: BUILDER})
    assert reason in (layer.split_reason(plan, engine.stored[plan.options.builder]) or "")
    result = build.run(plan, engine, output=_Sink())
    assert result.phases == 1 and len(engine.created) == 1


def test_requirements_that_need_the_source_build_in_one_phase(app: Path) -> None:
    (app / "requirements.txt").write_text("-e .\n")
    plan = make_plan(app, builder="phased")
    reason = layer.split_reason(plan, PHASED)
    assert reason and "requirements.txt line 1" in reason


def test_download_cache_is_mounted_and_pointed_at_build_only(app: Path) -> None:
    engine = FakeEngine()
    build.run(make_plan(app), engine, output=_Sink())
    (volume,) = engine.created[0].volumes
    assert volume.target.startswith("/dev/shm/")
    env_script = engine.uploaded_file(".buildpy/env").decode()
    assert f"export PIP_CACHE_DIR='{volume.target}/index-" in env_script
    assert "PIP_CACHE_DIR" not in engine.created[0].env


def _cache_dirs(app: Path, **options: object) -> dict[str, str]:
    """The download cache variables a build of ``app`` gives assemble."""
    engine = FakeEngine()
    build.run(make_plan(app, **options), engine, output=_Sink())
    script = engine.uploaded_file(".buildpy/env").decode()
    names = ("PIP_CACHE_DIR", "PIPENV_CACHE_DIR", "BUILDPY_WHEEL_CACHE")
    return {
        line.split("=", 1)[0].split()[-1]: line.split("=", 1)[1].strip("'")
        for line in script.splitlines()
        if line.split("=", 1)[0].split()[-1] in names
    }


def test_each_package_index_has_its_own_download_cache(app: Path) -> None:
    """Wheels fetched from one index are never offered to a build using another."""
    default = _cache_dirs(app)
    mirror = _cache_dirs(app, index_url="https://mirror.example/simple")
    by_env = _cache_dirs(app, build_env=("PIP_INDEX_URL=https://other.example/simple",))
    extra = _cache_dirs(
        app,
        index_url="https://mirror.example/simple",
        extra_index_urls=("https://private.example/simple",),
    )
    wheels = {d["BUILDPY_WHEEL_CACHE"] for d in (default, mirror, by_env, extra)}
    assert len(wheels) == 4
    for dirs in (default, mirror, by_env, extra):
        assert len({str(Path(path).parent) for path in dirs.values()}) == 1  # one directory


def test_the_same_index_with_another_token_shares_the_download_cache(app: Path) -> None:
    one = _cache_dirs(app, index_url="https://ci:token1@mirror.example/simple")
    two = _cache_dirs(app, build_env=("PIP_INDEX_URL=https://ci:token2@mirror.example/simple",))
    assert one["BUILDPY_WHEEL_CACHE"] == two["BUILDPY_WHEEL_CACHE"]
    assert one != _cache_dirs(app, index_url="https://ci:token1@other.example/simple")


def test_an_index_named_in_a_requirements_file_has_its_own_download_cache(app: Path) -> None:
    (app / "requirements.txt").write_text("six\n")
    plain = _cache_dirs(app)
    (app / "requirements.txt").write_text("--index-url https://private.example/simple\nsix\n")
    assert _cache_dirs(app) != plain
    (app / "requirements.txt").write_text("six==1.16\n")  # other requirements, same index
    assert _cache_dirs(app) == plain


def test_a_wheelhouse_build_mounts_no_download_cache(app: Path, tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    engine = FakeEngine()
    build.run(make_plan(app, wheelhouse=tmp_path / "wheels"), engine, output=_Sink())
    mounted = [volume.name for volume in engine.created[0].volumes]
    assert cache.DOWNLOADS_VOLUME not in mounted  # (the wheelhouse is a volume of its own)
    script = engine.uploaded_file(".buildpy/env").decode()
    assert "export PIP_NO_CACHE_DIR='1'" in script
    assert "BUILDPY_WHEEL_CACHE" not in script


def test_no_cache_means_no_volume_and_no_pip_cache(app: Path) -> None:
    engine = FakeEngine()
    build.run(make_plan(app, cache=False), engine, output=_Sink())
    assert engine.created[0].volumes == ()
    assert "export PIP_NO_CACHE_DIR='1'" in engine.uploaded_file(".buildpy/env").decode()


def test_incremental_restores_the_previous_images_artifacts(app: Path) -> None:
    import io
    import tarfile

    artifacts = io.BytesIO()
    with tarfile.open(fileobj=artifacts, mode="w") as archive:
        info = tarfile.TarInfo("saved.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"reuse"))
    engine = FakeEngine()
    engine.stored["localhost/app:latest"] = ImageInfo(id="sha256:previous", ref="localhost/app")
    engine.files["/tmp/buildpy-artifacts.tar"] = artifacts.getvalue()
    build.run(make_plan(app, tag="localhost/app", incremental=True), engine, output=_Sink())
    save_spec, final_spec = engine.created
    assert final_spec.image == BUILDER.id
    assert save_spec.image == "sha256:previous"
    assert save_spec.command[-1] == "/usr/libexec/s2i/save-artifacts"
    assert len(engine.uploads) == 2
    assert artifacts.getvalue() in engine.uploads[1][1]
    assert engine.removed == ["ctr1", "ctr2"]


def test_incremental_without_a_previous_image_is_a_full_build(app: Path) -> None:
    engine = FakeEngine()
    build.run(make_plan(app, tag="localhost/new", incremental=True), engine, output=_Sink())
    assert len(engine.created) == 1 and len(engine.uploads) == 1


def test_incremental_needs_a_tag(app: Path) -> None:
    with pytest.raises(UsageError, match="--tag"):
        make_plan(app, incremental=True)


def test_wrapper_unpacks_artifacts_for_assemble(tmp_path: Path) -> None:
    import tarfile

    inbox = tmp_path / "tmp" / ".buildpy" / "in"
    inbox.mkdir(parents=True)
    payload = tmp_path / "saved.txt"
    payload.write_text("reuse")
    with tarfile.open(inbox / "artifacts.tar", "w") as archive:
        archive.add(payload, arcname="saved.txt")
    script = WRAPPER.replace("/tmp/", f"{tmp_path}/tmp/")
    done = subprocess.run(
        ["/bin/sh", "-c", script, "w", "cat", f"{tmp_path}/tmp/artifacts/saved.txt"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "reuse"
    assert not (tmp_path / "tmp" / ".buildpy").exists()


def test_added_requirement_grows_the_previous_dependency_layer(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    (app / "requirements.txt").write_text("flask\n")
    build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    first_deps = engine.commits[0]
    found = engine.find_image(f"{first_deps.repository}:{first_deps.tag}")
    assert found is not None
    first_id = found.id

    assert b"BUILDPY_ADDED_REQUIREMENTS" not in engine.uploads[0][1]

    (app / "requirements.txt").write_text("flask\n# a comment\nsix\nattrs>=23\n")
    build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    assert engine.created[2].image == first_id  # grown on top of the first layer
    # assemble is told what was added (build-only: not in the container's environment)
    assert b"BUILDPY_ADDED_REQUIREMENTS='attrs>=23\nsix'" in engine.uploads[2][1]
    assert "BUILDPY_ADDED_REQUIREMENTS" not in engine.created[2].env

    (app / "requirements.txt").write_text("six\n")  # flask removed: start again
    build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    assert engine.created[4].image == PHASED.id

    (app / "requirements.txt").write_text("six\nflask\n")
    (app / ".s2i" / "environment").write_text("PIP_INDEX_URL=http://other/\n")  # another index
    build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    assert engine.created[6].image == PHASED.id


PLACING = ImageInfo(
    id="sha256:placing",
    ref="placing",
    user="1001",
    env={"HOME": "/opt/app-root/src"},
    labels={**BUILDER.labels, layer.PHASES_LABEL: "dependencies,application"},
)


def test_source_is_placed_without_a_run_when_nothing_is_left_to_run(app: Path) -> None:
    engine = FakeEngine(
        stored={"placing": PLACING}, output=[b"installing\n", b"BUILDPY_APPLICATION_PHASE=copy\n"]
    )
    first = build.run(make_plan(phased_app(app), builder="placing"), engine, output=_Sink())
    assert engine.started == ["ctr1"]  # only the dependency phase ran
    assert first.assemble_seconds == 0.0
    path, data = engine.uploads[1]
    assert path == "/opt/app-root"
    members = engine.uploaded_members()
    assert members["src/app.py"].mode & 0o060 == 0o060
    assert b".buildpy/env" not in data
    assert 'CMD ["/usr/libexec/s2i/run"]' in engine.commits[1].changes

    (app / "app.py").write_text("print('again')\n")
    build.run(make_plan(app, builder="placing"), engine, output=_Sink())
    assert engine.started == ["ctr1"]  # reused layer remembers: still nothing to run


def test_assemble_runs_when_the_dependency_phase_says_so(app: Path) -> None:
    engine = FakeEngine(stored={"placing": PLACING}, output=[b"BUILDPY_APPLICATION_PHASE=run\n"])
    build.run(make_plan(phased_app(app), builder="placing"), engine, output=_Sink())
    assert engine.started == ["ctr1", "ctr2"]


def test_source_scripts_always_run_assemble(app: Path) -> None:
    (app / ".s2i" / "bin").mkdir()
    (app / ".s2i" / "bin" / "run").write_text("#!/bin/sh\n")
    engine = FakeEngine(stored={"placing": PLACING}, output=[b"BUILDPY_APPLICATION_PHASE=copy\n"])
    build.run(make_plan(phased_app(app), builder="placing"), engine, output=_Sink())
    assert engine.started == ["ctr1", "ctr2"]


def test_the_users_ids_are_looked_up_once_and_kept_with_the_dependency_layer(app: Path) -> None:
    passwd = b"root:x:0:0::/root:/bin/sh\ndefault:x:1001:0::/opt/app-root/src:/bin/sh\n"
    engine = FakeEngine(stored={"placing": PLACING}, files={"/etc/passwd": passwd})
    engine.output = [b"BUILDPY_APPLICATION_PHASE=run\n"]
    build.run(make_plan(phased_app(app), builder="placing"), engine, output=_Sink())
    assert engine.reads == [("ctr1", "/etc/passwd")]  # not again for the application phase
    assert f"LABEL {cache.OWNER_LABEL}=1001:0" in engine.commits[0].changes
    assert engine.uploaded_members()["src/app.py"].uid == 1001

    (app / "app.py").write_text("print('changed')\n")
    engine.files["/etc/passwd"] = b""  # the label answers; passwd is not read
    build.run(make_plan(app, builder="placing"), engine, output=_Sink())
    assert engine.reads == [("ctr1", "/etc/passwd")]
    member = engine.uploaded_members()["src/app.py"]
    assert (member.uid, member.gid) == (1001, 0)


def test_the_dependency_container_is_removed_once_the_next_one_runs(app: Path) -> None:
    engine = FakeEngine(stored={"placing": PLACING}, output=[b"BUILDPY_APPLICATION_PHASE=run\n"])
    seen: list[list[str]] = []
    engine.on_run = lambda: seen.append(list(engine.removed))
    build.run(make_plan(phased_app(app), builder="placing"), engine, output=_Sink())
    # when the application phase started, the dependency container was still there:
    # its removal would have held Podman's storage lock through the create and upload
    assert seen == [[], []]
    assert sorted(engine.removed) == ["ctr1", "ctr2"]


def test_a_failing_application_phase_still_removes_both_containers(app: Path) -> None:
    engine = FakeEngine(stored={"placing": PLACING}, output=[b"BUILDPY_APPLICATION_PHASE=run\n"])

    def fail_second() -> None:
        engine.status = 1 if len(engine.started) == 2 else 0

    engine.on_run = fail_second
    with pytest.raises(AssembleFailed):
        build.run(make_plan(phased_app(app), builder="placing"), engine, output=_Sink())
    assert sorted(engine.removed) == ["ctr1", "ctr2"]


def test_going_back_to_earlier_requirements_grows_from_there(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    requirements = app / "requirements.txt"

    def build_with(text: str) -> ContainerSpec:
        requirements.write_text(text)
        build.run(make_plan(app, builder="phased"), engine, output=_Sink())
        return engine.created[-2]  # the dependency phase's container (if there was one)

    build_with("flask\n")
    flask_only = engine.commits[-2]
    flask_id = engine.stored[f"{flask_only.repository}:{flask_only.tag}"].id
    build_with("flask\nsix\n")

    def growth_names() -> int:  # dependency images also take the source's name (plan)
        return len([ref for ref in engine.tagged if ":grow-" in ref])

    assert growth_names() == 2  # each new dependency image takes the growth name
    build_with("flask\n")  # reused: the growth name comes back to it
    assert growth_names() == 3
    tagged = len(engine.tagged)
    build_with("flask\n")  # reused again: it has the names already, no call
    assert len(engine.tagged) == tagged
    grown = build_with("flask\nattrs\n")
    assert grown.image == flask_id


def test_a_failing_growth_name_does_not_fail_the_build(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})

    def refuse(image: str, ref: str) -> None:
        raise EngineError("Podman could not tag the image")

    engine.tag = refuse  # type: ignore[method-assign]
    result = build.run(make_plan(phased_app(app), builder="phased"), engine, output=_Sink())
    assert result.phases == 2 and result.image_id == "sha256:result2"


@pytest.mark.parametrize(
    "tag", ["Localhost/App", "my app", "localhost/app@sha256:" + "a" * 64, "localhost/app:"]
)
def test_a_bad_tag_is_a_usage_error_before_any_engine_work(app: Path, tag: str) -> None:
    with pytest.raises(UsageError, match="--tag") as info:
        make_plan(app, tag=tag)
    assert info.value.exit_code == 2 and info.value.hint


def test_ignored_dependency_files_stay_out_of_both_phases(app: Path) -> None:
    (app / "requirements.txt").write_text("flask\n")
    (app / ".s2iignore").write_text("requirements.txt\n.s2i/\n")
    engine = FakeEngine(stored={"phased": PHASED})
    result = build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    assert result.phases == 1  # nothing left to decide dependencies
    uploaded = engine.uploaded_members()
    assert "src/requirements.txt" not in uploaded and "src/.s2i/environment" not in uploaded


def test_a_second_interrupt_waits_for_the_removal(app: Path) -> None:
    import os
    import signal

    engine = FakeEngine()
    removed_before_interrupt: list[bool] = []

    def interrupted_run(container: str, output: object) -> int:
        raise KeyboardInterrupt  # the first Ctrl-C, during assemble

    def remove_interrupted_again(container: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, during the removal
        engine.removed.append(container)
        removed_before_interrupt.append(True)

    engine.run = interrupted_run  # type: ignore[method-assign]
    engine.remove = remove_interrupted_again  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        build.run(make_plan(app), engine, output=_Sink())
    assert engine.removed == ["ctr1"] and removed_before_interrupt == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_build_waits_for_another_making_the_same_layer_and_reuses_it(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl
    import threading
    import time

    monkeypatch.setattr(layer, "LOCK_DIR", tmp_path / "locks")
    engine = FakeEngine(stored={"phased": PHASED})
    plan = make_plan(phased_app(app), builder="phased")
    first = FakeEngine(stored={"phased": PHASED})  # where "the other build" makes the layer
    build.run(plan, first, output=_Sink())
    made = first.commits[0]
    tag = f"{made.repository}:{made.tag}"
    key = first.stored[tag].labels[cache.KEY_LABEL]

    with open(tmp_path / "locks" / f"{key[:32]}.lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the other build is installing
        waiting = threading.Thread(
            target=build.run, args=(plan, engine), kwargs={"output": _Sink()}
        )
        waiting.start()
        time.sleep(0.3)
        assert engine.started == [] and waiting.is_alive()  # it waits, it does not install
        engine.stored[tag] = first.stored[tag]  # the other build committed its layer
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    assert len(engine.started) == 1  # only the application phase ran: the layer was reused
    assert engine.created[0].image == first.stored[tag].id


def test_only_what_changes_installation_changes_the_key(app: Path, tmp_path: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    phased_app(app)
    build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    assert len(engine.started) == 2

    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    (app / ".s2i" / "environment").write_text(
        "FROM_FILE=changed\nGREETING=hi\nPIP_DEFAULT_TIMEOUT=100\n"
    )
    build.run(make_plan(app, builder="phased", ca_bundle=bundle), engine, output=_Sink())
    assert len(engine.started) == 3  # reused: an unread variable, a timeout, a CA bundle
    token = make_plan(app, builder="phased", build_env=("PIP_INDEX_URL=https://u:1@m/s",))
    build.run(token, engine, output=_Sink())
    rotated = make_plan(app, builder="phased", build_env=("PIP_INDEX_URL=https://u:2@m/s",))
    build.run(rotated, engine, output=_Sink())
    assert len(engine.started) == 6  # a new index installs once; a rotated token reuses it

    (app / ".s2i" / "environment").write_text("ENABLE_MICROPIPENV=1\n")
    build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    assert len(engine.started) == 8  # another installer: installed again


def test_a_fetch_setting_reaches_assemble_but_not_the_layer(app: Path) -> None:
    (app / ".s2i" / "environment").write_text("PIP_DEFAULT_TIMEOUT=100\nPIP_PRE=1\n")
    engine = FakeEngine(stored={"phased": PHASED})
    build.run(make_plan(phased_app(app), builder="phased"), engine, output=_Sink())
    deps_spec = engine.created[0]
    assert deps_spec.env == {"PIP_PRE": "1"}  # what decides the layer's content
    assert b"PIP_DEFAULT_TIMEOUT='100'" in engine.uploads[0][1]  # build-only for assemble
