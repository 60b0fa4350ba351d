"""--output and --push: parsed before any engine work, archives written whole or not at all."""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

import pytest
from fakes import FakeEngine
from hypothesis import given
from hypothesis import strategies as st

from buildpy import cli, publish
from buildpy import plan as build_plan
from buildpy.config import BuildOptions
from buildpy.engine import ImageInfo
from buildpy.errors import PublishFailed, UsageError

TAG = "127.0.0.1:5000/team/app:v1"


def engine_with_image() -> FakeEngine:
    engine = FakeEngine(registry_hosts={"127.0.0.1:5000"})
    engine.stored[TAG] = ImageInfo(id="sha256:built", ref=TAG)
    return engine


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        found = {}
        for member in archive.getmembers():
            handle = archive.extractfile(member)
            found[member.name] = handle.read() if handle is not None else b""
        return found


@pytest.mark.parametrize("kind", publish.ARCHIVE_FORMATS)
def test_output_is_parsed_into_an_absolute_path(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert publish.parse_output(f"{kind}:out/../app.tar") == publish.ArchiveOutput(
        kind, tmp_path / "app.tar"
    )


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("app.tar", "expected oci-archive:PATH"),
        ("oci:app.tar", "expected oci-archive:PATH"),
        ("docker-archive:", "expected oci-archive:PATH"),
        ("oci-archive:{tmp}", "is a directory"),
        ("oci-archive:{tmp}/absent/app.tar", "cannot write into"),
    ],
)
def test_a_bad_output_is_a_usage_error(value: str, needle: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=needle):
        publish.parse_output(value.format(tmp=tmp_path))


def test_push_needs_a_tag(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--push needs --tag"):
        build_plan.make(BuildOptions(source=tmp_path, push=True))


@pytest.mark.parametrize(
    "argv",
    [
        ["--push"],
        ["--output", "tar:x"],
        ["--output", "oci-archive:/nonexistent/x.tar"],
    ],
)
def test_bad_delivery_options_exit_2_before_podman(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{tmp_path}/none.sock")  # would be exit 5
    assert cli.main(["build", str(tmp_path), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "ERROR:" in err and "hint:" in err


@pytest.mark.parametrize(
    ("argv", "policy", "tls"),
    [
        ([], "missing", None),
        (["--pull-policy", "if-not-present"], "missing", None),
        (["--pull", "always", "--tls-verify"], "always", True),
        (["--pull-policy", "never", "--tls-verify=false"], "never", False),
        (["--no-tls-verify"], "missing", False),
    ],
)
def test_pull_and_tls_options(argv: list[str], policy: str, tls: bool | None) -> None:
    args = cli._parser().parse_args(["build", ".", *argv])
    options = cli._build_options(args)
    assert (options.pull, options.tls_verify) == (policy, tls)


@pytest.mark.parametrize("argv", [["--pull", "if-present"], ["--tls-verify=maybe"]])
def test_bad_pull_or_tls_values_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["build", ".", *argv])
    assert info.value.code == 2


def test_archives_name_the_image_then_it_is_pushed(tmp_path: Path) -> None:
    engine = engine_with_image()
    oci, docker = tmp_path / "app.oci.tar", tmp_path / "app.docker.tar"
    delivery = publish.Delivery(
        (
            publish.ArchiveOutput("oci-archive", oci),
            publish.ArchiveOutput("docker-archive", docker),
        ),
        push=True,
        tls_verify=False,
    )
    publish.deliver(engine, delivery, "sha256:built", TAG)
    index = json.loads(members(oci)["index.json"])
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == TAG
    assert json.loads(members(docker)["manifest.json"])[0]["RepoTags"] == [TAG]
    assert engine.pushed == [TAG]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.docker.tar", "app.oci.tar"]


def test_a_failed_push_names_the_image_kept_locally(tmp_path: Path) -> None:
    engine = engine_with_image()
    engine.registry_hosts.clear()
    with pytest.raises(PublishFailed) as info:
        publish.deliver(engine, publish.Delivery(push=True, tls_verify=False), "sha256:built", TAG)
    assert info.value.exit_code == 10
    assert "connection refused" in info.value.message
    assert f"kept in local storage as {TAG}" in info.value.message
    assert info.value.hint is not None and "cannot be reached" in info.value.hint
    assert engine.find_image(TAG) is not None


def test_a_failed_export_leaves_no_file(tmp_path: Path) -> None:
    engine = engine_with_image()
    target = tmp_path / "app.tar"
    delivery = publish.Delivery((publish.ArchiveOutput("oci-archive", target),))
    with pytest.raises(PublishFailed, match="image not known"):
        publish.deliver(engine, delivery, "sha256:gone", None)
    assert list(tmp_path.iterdir()) == []


class Boom(BaseException):
    """Stands for anything: a full disk, a lost connection, Ctrl-C."""


@given(chunks=st.lists(st.binary(max_size=64), max_size=5), fail=st.booleans())
def test_atomic_file_appears_whole_or_not_at_all(chunks: list[bytes], fail: bool) -> None:
    with tempfile.TemporaryDirectory() as name:  # one per example (tmp_path is one per test)
        root = Path(name)
        target = root / "out.tar"
        target.write_bytes(b"previous")
        try:
            with publish.atomic_file(target) as handle:
                for chunk in chunks:
                    handle.write(chunk)
                if fail:
                    raise Boom
        except Boom:
            pass
        assert target.read_bytes() == (b"previous" if fail else b"".join(chunks))
        assert [p.name for p in root.iterdir()] == ["out.tar"]


def test_an_interrupted_export_leaves_no_partial_file(tmp_path: Path) -> None:
    class Interrupting(FakeEngine):
        def save_image(self, ref: str, archive_format: str, dest: BinaryIO) -> None:
            dest.write(b"half an archive")
            raise KeyboardInterrupt

    engine = Interrupting(stored={TAG: ImageInfo(id="sha256:built", ref=TAG)})
    delivery = publish.Delivery((publish.ArchiveOutput("docker-archive", tmp_path / "a.tar"),))
    with pytest.raises(KeyboardInterrupt):
        publish.deliver(engine, delivery, "sha256:built", TAG)
    assert list(tmp_path.iterdir()) == []
