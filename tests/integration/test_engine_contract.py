"""One set of assertions about the Engine, run against the fake and against real Podman.

The unit tests of the build trust ``tests/unit/fakes.FakeEngine`` to behave as
``buildpy.podman.PodmanEngine`` does in what the build relies on: inspection,
uploads, runs, commits with labels, names, removals, volumes, secrets, pulls and
pushes (against a registry on 127.0.0.1 for Podman), and image archives (for
`--output` and `buildpy cache export`/`import`). Each test here runs twice, once per
engine, so the fake cannot drift from Podman unnoticed.
"""

from __future__ import annotations

import functools
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest
from conftest import BUILDER_PREFIX
from fakes import FakeEngine, tar_of
from itest import free_port

from buildpy.background import Running
from buildpy.engine import (
    ENGINE_VARIABLES,
    CommitSpec,
    ContainerSpec,
    Engine,
    ImageArchives,
    ImageInfo,
    SecretMount,
    VolumeMount,
)
from buildpy.errors import EngineError, PublishFailed, PullFailed
from buildpy.podman import PodmanEngine

BUILDER = f"{BUILDER_PREFIX}/python-311-minimal"


@dataclass
class Subject:
    """An engine under test, the image containers start from, and how a run behaves."""

    engine: ImageArchives
    base: ImageInfo
    script: FakeEngine | None  # the fake is told what the command would print

    def will_print(self, output: bytes, status: int) -> None:
        if self.script is not None:
            self.script.output, self.script.status = [output], status


@pytest.fixture(params=["fake", "podman"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "fake":
        fake = FakeEngine()
        fake.stored[BUILDER] = ImageInfo(
            id="sha256:minimal", ref=BUILDER, user="1001:0", layers=("sha256:l0", "sha256:l1")
        )
        base = fake.find_image(BUILDER)
        assert base is not None
        yield Subject(fake, base, fake)
        return
    podman_url = request.getfixturevalue("podman_url")
    with PodmanEngine(podman_url) as engine:
        base = engine.find_image(BUILDER)
        assert base is not None, f"{BUILDER} is missing: `make setup` builds it"
        yield Subject(engine, base, None)


def unique(kind: str) -> str:
    return f"localhost/buildpy-test/contract-{kind}-{uuid.uuid4().hex[:8]}"


def spec(
    subject: Subject, command: tuple[str, ...], *secrets: SecretMount, **labels: str
) -> ContainerSpec:
    name = f"buildpy-test-contract-{uuid.uuid4().hex[:8]}"
    return ContainerSpec(
        image=subject.base.id,
        command=command,
        user="1001:0",
        labels=labels,
        secrets=secrets,
        network="none",
        name=name,
    )


def test_a_missing_image_is_none(subject: Subject) -> None:
    assert subject.engine.find_image(unique("missing")) is None
    assert subject.base.id and f"{BUILDER}:latest" in subject.base.names


def test_uploaded_files_can_be_read_back(subject: Subject) -> None:
    engine = subject.engine
    container = engine.create(spec(subject, ("true",)))
    try:
        engine.upload(container, "/tmp", [tar_of({"contract/hello.txt": b"hello\n"})])
        assert engine.read_file(container, "/tmp/contract/hello.txt") == b"hello\n"
        assert engine.read_file(container, "/tmp/contract/absent") is None
        sink = io.BytesIO()
        assert engine.copy_file(container, "/tmp/contract/absent", sink) is False
    finally:
        engine.remove(container)


def test_uploads_go_into_one_container_at_once_and_it_still_runs(subject: Subject) -> None:
    """What a large source's upload relies on (``source.SplitArchive``): archives
    streamed into one container at the same time, from threads of their own, then one
    after them; it runs with all of them in place."""
    engine = subject.engine
    container = engine.create(spec(subject, ("cat", "/tmp/c/a/1", "/tmp/c/b/2", "/tmp/c/z")))
    try:
        sending = [
            Running(functools.partial(engine.upload, container, "/tmp", [tar_of({name: data})]))
            for name, data in (("c/a/1", b"one "), ("c/b/2", b"two "))
        ]
        for upload in sending:
            upload.result()
        engine.upload(container, "/tmp", [tar_of({"c/z": b"last\n"})])
        subject.will_print(b"one two last\n", 0)
        chunks: list[bytes] = []
        assert engine.run(container, chunks.append) == 0
        assert b"".join(chunks) == b"one two last\n"
    finally:
        engine.remove(container)


@pytest.mark.rootless
def test_working_containers_are_volatile(podman_url: str) -> None:
    """Podman mounts them without syncs (``create_payload``): the overlay at / says
    ``fsync=volatile``. Podman only; the fake has no mounts."""
    with PodmanEngine(podman_url) as engine:
        base = engine.find_image(BUILDER)
        assert base is not None
        subject = Subject(engine, base, None)
        command = ("sh", "-c", "grep ' / / ' /proc/self/mountinfo")
        status, output = run_once(engine, spec(subject, command))
    assert status == 0, output
    assert "fsync=volatile" in output.decode() or ",volatile" in output.decode(), output


def run_once(engine: Engine, container_spec: ContainerSpec) -> tuple[int, bytes]:
    """Create a container, run it, remove it: its exit status and its output."""
    container = engine.create(container_spec)
    chunks: list[bytes] = []
    try:
        return engine.run(container, chunks.append), b"".join(chunks)
    finally:
        engine.remove(container)


def test_run_hands_over_output_and_returns_the_status(subject: Subject) -> None:
    subject.will_print(b"to stdout\nto stderr\n", 3)
    command = ("/bin/sh", "-c", "echo to stdout; echo to stderr >&2; exit 3")
    assert run_once(subject.engine, spec(subject, command)) == (3, b"to stdout\nto stderr\n")


def test_commit_keeps_labels_and_gives_the_name(subject: Subject) -> None:
    engine = subject.engine
    repository = unique("commit")
    container = engine.create(spec(subject, ("true",), **{"io.buildpy.test.spec": "kept"}))
    try:
        image_id = engine.commit(
            container, CommitSpec(("LABEL io.buildpy.test.change=added",), repository, "v1")
        )
    finally:
        engine.remove(container)
    try:
        found = engine.find_image(f"{repository}:v1")
        assert found is not None and found.id == image_id
        assert found.labels["io.buildpy.test.spec"] == "kept"
        assert found.labels["io.buildpy.test.change"] == "added"
        assert f"{repository}:v1" in found.names

        engine.tag(image_id, f"{repository}:second")
        again = engine.find_image(f"{repository}:second")
        assert again is not None and again.id == image_id
        assert {f"{repository}:v1", f"{repository}:second"} <= set(again.names)
        (listed,) = engine.images(repository)
        assert set(listed.tags) == {f"{repository}:v1", f"{repository}:second"}

        # by name, without force: only that name goes while another remains
        assert engine.remove_image(f"{repository}:second", force=False) is True
        kept = engine.find_image(f"{repository}:v1")
        assert kept is not None and f"{repository}:second" not in kept.names
    finally:
        engine.remove_image(f"{repository}:v1")
    assert engine.find_image(f"{repository}:v1") is None
    assert engine.remove_image(f"{repository}:v1") is True  # already gone is not an error


def test_removing_a_container_twice_is_not_an_error(subject: Subject) -> None:
    engine = subject.engine
    container = engine.create(spec(subject, ("true",)))
    engine.remove(container)
    engine.remove(container)


def test_volumes_are_made_once_listed_by_label_and_removed(subject: Subject) -> None:
    engine = subject.engine
    name = f"buildpy-test-contract-{uuid.uuid4().hex[:8]}"
    label = f"io.buildpy.test.{uuid.uuid4().hex[:8]}"
    try:
        assert engine.ensure_volume(name, {label: "yes"}) is True
        assert engine.ensure_volume(name, {label: "yes"}) is False
        assert [found for found, _ in engine.volumes(label)] == [name]
    finally:
        assert engine.remove_volume(name) is True
    assert engine.volumes(label) == []
    assert engine.remove_volume(name) is True


def test_a_volume_gives_one_containers_upload_to_another_read_only(subject: Subject) -> None:
    """What the wheelhouse relies on: an upload into a container that never runs lands in
    the volume it mounts; another container mounting it read-only reads it and cannot
    write; without force, a volume a container mounts stays; then it goes."""
    engine = subject.engine
    name = f"buildpy-test-contract-{uuid.uuid4().hex[:8]}"
    label = f"io.buildpy.test.{uuid.uuid4().hex[:8]}"
    engine.ensure_volume(name, {label: "yes"})
    script = (
        "cat /dev/shm/contract-r/sub/wheel.whl;"
        " touch /dev/shm/contract-r/x 2>/dev/null && echo writable || echo read-only"
    )
    made: list[str] = []
    try:
        writer = spec(subject, ("true",))
        made.append(engine.create(replace(writer, volumes=(VolumeMount(name, "/dev/shm/w"),))))
        engine.upload(made[0], "/dev/shm/w", [tar_of({"sub/wheel.whl": b"wheel\n"})])
        reader = spec(subject, ("/bin/sh", "-c", script))
        mount = VolumeMount(name, "/dev/shm/contract-r", read_only=True)
        made.append(engine.create(replace(reader, volumes=(mount,))))
        assert engine.read_file(made[1], "/dev/shm/contract-r/sub/wheel.whl") == b"wheel\n"
        assert engine.remove_volume(name, force=False) is False
        subject.will_print(b"wheel\nread-only\n", 0)
        chunks: list[bytes] = []
        assert engine.run(made[1], chunks.append) == 0
        assert b"".join(chunks) == b"wheel\nread-only\n"
    finally:
        for container in made:
            engine.remove(container)
    assert engine.remove_volume(name, force=False) is True
    assert engine.volumes(label) == []


def test_unset_engine_variables_stay_out_of_the_commit(subject: Subject) -> None:
    """Podman gives every container TERM and container, and a commit keeps them, unless
    the container was made with them unset; the container's own variables stay."""
    engine = subject.engine
    repository = unique("env")
    assert not set(ENGINE_VARIABLES) & set(subject.base.env)
    env = {"CONTRACT": "kept", "TERM": "asked-for"}
    for tag, unset in (("plain", ()), ("unset", ENGINE_VARIABLES)):
        made = replace(spec(subject, ("true",)), env=env, unset_env=unset)
        container = engine.create(made)
        try:
            engine.commit(container, CommitSpec((), repository, tag))
        finally:
            engine.remove(container)
    try:
        plain, unset_image = (engine.find_image(f"{repository}:{t}") for t in ("plain", "unset"))
        assert plain is not None and unset_image is not None
        assert plain.env.get("container") == "podman"
        assert unset_image.env.get("CONTRACT") == "kept"
        assert unset_image.env.get("TERM") == "asked-for"  # -e TERM=... is the user's own
        assert "container" not in unset_image.env
    finally:
        for tag in ("plain", "unset"):
            engine.remove_image(f"{repository}:{tag}")


def test_secrets_are_files_at_their_targets_and_are_removed(subject: Subject) -> None:
    """Absolute targets work on Podman 4.3 (under /run/secrets and under /dev/shm alike),
    owned and moded as asked; a name is used once; removing twice is no error."""
    engine = subject.engine
    token, bundle = (f"buildpy-test-contract-{uuid.uuid4().hex[:8]}" for _ in range(2))
    mounts = (
        SecretMount(token, "/run/secrets/token", 1001, 0, 0o400),
        SecretMount(bundle, "/dev/shm/contract-ca.crt", 1001, 0, 0o400),
    )
    script = (
        "cat /run/secrets/token /dev/shm/contract-ca.crt; stat -c '%u:%g %a' /run/secrets/token"
    )
    subject.will_print(b"s3cr3t\nCA\n1001:0 400\n", 0)
    engine.create_secret(token, b"s3cr3t\n")
    try:
        engine.create_secret(bundle, b"CA\n")
        with pytest.raises(EngineError):
            engine.create_secret(token, b"taken")
        ran = run_once(engine, spec(subject, ("/bin/sh", "-c", script), *mounts))
        assert ran == (0, b"s3cr3t\nCA\n1001:0 400\n")
    finally:
        assert engine.remove_secret(token) is True
        assert engine.remove_secret(bundle) is True
    assert engine.remove_secret(token) is True  # already gone is not an error


def test_a_secret_must_exist_and_hold_a_byte(subject: Subject) -> None:
    engine = subject.engine
    name = f"buildpy-test-contract-{uuid.uuid4().hex[:8]}"
    with pytest.raises(EngineError):
        engine.create_secret(name, b"")
    with pytest.raises(EngineError):
        engine.create(spec(subject, ("true",), SecretMount(name, "/run/secrets/missing")))


@pytest.fixture
def registry_host(subject: Subject, request: pytest.FixtureRequest) -> str:
    """A registry that answers over plain HTTP: the session's on 127.0.0.1 for Podman."""
    if subject.script is not None:
        subject.script.registry_hosts.add("127.0.0.1:5000")
        return "127.0.0.1:5000"
    return str(request.getfixturevalue("registry"))


@contextmanager
def small_image(subject: Subject, repository: str) -> Iterator[tuple[str, str]]:
    """A one-file image of a few KB named ``repository:v1`` (its ID, its name), labelled
    ``io.buildpy.test.contract=1``, removed at the end. A committed container would carry
    the builder's layers, which take seconds to push or save; Podman's is imported with
    the CLI, as the engine has no import."""
    ref = f"{repository}:v1"
    if subject.script is not None:
        labels = {"io.buildpy.test.contract": "1"}
        subject.script.stored[ref] = ImageInfo(f"sha256:{uuid.uuid4().hex}", ref, labels=labels)
    else:
        change = "LABEL io.buildpy.test.contract=1"
        data = tar_of({"hello.txt": b"hello\n"})
        command = ["podman", "import", "-q", "--change", change, "-", ref]
        subprocess.run(command, input=data, check=True, capture_output=True)
    found = subject.engine.find_image(ref)
    assert found is not None
    try:
        yield found.id, ref
    finally:
        subject.engine.remove_image(ref)


def test_push_then_pull_gives_back_the_same_image(subject: Subject, registry_host: str) -> None:
    engine = subject.engine
    repository = f"{registry_host}/buildpy-test/contract-push-{uuid.uuid4().hex[:8]}"
    with small_image(subject, repository) as (image_id, ref):
        progress: list[str] = []
        engine.push(ref, False, progress.append)
        assert progress
        assert engine.remove_image(ref) is True
        assert engine.find_image(ref) is None
        assert engine.pull(ref, False, progress.append) == image_id
        found = engine.find_image(ref)
        assert found is not None and found.id == image_id
        assert found.labels["io.buildpy.test.contract"] == "1"


@pytest.mark.parametrize(
    ("tls_verify", "where", "needle"),
    [
        (False, "registry", "has no image called"),
        (None, "registry", "--no-tls-verify"),  # plain HTTP, TLS left to registries.conf
        (False, "nowhere", "cannot be reached"),
    ],
)
def test_a_refused_pull_says_why(
    subject: Subject, registry_host: str, tls_verify: bool | None, where: str, needle: str
) -> None:
    host = registry_host if where == "registry" else f"127.0.0.1:{free_port()}"
    ref = f"{host}/buildpy-test/contract-absent-{uuid.uuid4().hex[:8]}:v1"
    with pytest.raises(PullFailed) as info:
        subject.engine.pull(ref, tls_verify, lambda line: None)
    assert info.value.message.startswith(f"could not pull {ref}: ")
    assert info.value.hint is not None and needle in info.value.hint


def test_a_refused_push_keeps_the_local_image(subject: Subject) -> None:
    repository = f"127.0.0.1:{free_port()}/buildpy-test/contract-dead-{uuid.uuid4().hex[:8]}"
    with small_image(subject, repository) as (image_id, ref):
        with pytest.raises(PublishFailed) as info:
            subject.engine.push(ref, False, lambda line: None)
        assert "connection refused" in info.value.message
        assert info.value.hint is not None and "cannot be reached" in info.value.hint
        found = subject.engine.find_image(ref)
        assert found is not None and found.id == image_id


def test_archives_record_the_name_they_were_saved_under(subject: Subject) -> None:
    engine = subject.engine
    with small_image(subject, unique("save")) as (_, ref):
        oci = io.BytesIO()
        engine.save_image(ref, "oci-archive", oci)
        index = json.loads(member(oci, "index.json"))
        (manifest,) = index["manifests"]
        assert manifest["annotations"]["org.opencontainers.image.ref.name"] == ref
        docker = io.BytesIO()
        engine.save_image(ref, "docker-archive", docker)
        (entry,) = json.loads(member(docker, "manifest.json"))
        assert entry["RepoTags"] == [ref]
        with pytest.raises(EngineError, match="unknown format"):
            engine.save_image(ref, "tarball", io.BytesIO())
    with pytest.raises(EngineError, match="image not known"):
        engine.save_image(ref, "oci-archive", io.BytesIO())


def member(archive: io.BytesIO, name: str) -> bytes:
    archive.seek(0)
    with tarfile.open(fileobj=archive) as tar:
        handle = tar.extractfile(name)
        assert handle is not None, f"{name} is not in the archive"
        return handle.read()


def files_of(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def emptied(archive: bytes, names: set[str]) -> bytes:
    """The archive with the named files left empty (what a thin cache archive holds)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive)) as tar,
        tarfile.open(fileobj=out, mode="w") as thin,
    ):
        for member in tar.getmembers():
            if member.name in names:
                member.size = 0
                thin.addfile(member, io.BytesIO(b""))
            else:
                thin.addfile(member, tar.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def one_layer_above(subject: Subject, repository: str) -> str:
    """An image whose own layer holds one file no other image has."""
    engine = subject.engine
    container = engine.create(spec(subject, ("true",)))
    try:
        engine.upload(container, "/tmp", [tar_of({"contract/id": uuid.uuid4().bytes})])
        return engine.commit(container, CommitSpec((), repository, "v1"))
    finally:
        engine.remove(container)


def test_archives_load_back_and_empty_layers_come_from_local_storage(subject: Subject) -> None:
    engine, base = subject.engine, subject.base
    repository = unique("archive")
    image_id = one_layer_above(subject, repository)
    try:
        made = engine.find_image(image_id)
        assert made is not None and made.layers[:-1] == base.layers and len(base.layers) > 0
        with engine.image_archive(image_id) as stream:
            archive = stream.read()
        files = files_of(archive)
        (item,) = json.loads(files["manifest.json"])
        assert item["Config"] == f"{image_id.split(':')[-1]}.json"
        assert not item.get("RepoTags")  # saved by ID: no names
        assert item["Layers"] == [f"{diff.split(':')[-1]}.tar" for diff in made.layers]
        base_files = set(item["Layers"][:-1])
        assert engine.remove_image(f"{repository}:v1") is True
        assert engine.find_image(image_id) is None

        for broken in (emptied(archive, {item["Layers"][-1]}), b"not an archive"):
            with pytest.raises(EngineError):  # its own layer is nowhere to be found
                engine.load_image(io.BytesIO(broken))
            assert engine.find_image(image_id) is None

        names = engine.load_image(io.BytesIO(emptied(archive, base_files)))
        assert names and image_id.split(":")[-1] in names[0]
        loaded = engine.find_image(image_id)
        assert loaded is not None and loaded.layers == made.layers and loaded.names == ()
        engine.tag(image_id, f"{repository}:v2")
        named = engine.find_image(f"{repository}:v2")
        assert named is not None and named.id == image_id
    finally:
        engine.remove_image(f"{repository}:v2")
        engine.remove_image(f"{repository}:v1")
    assert engine.find_image(image_id) is None
