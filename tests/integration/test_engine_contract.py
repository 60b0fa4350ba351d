"""One set of assertions about the Engine, run against the fake and against real Podman.

The unit tests of the build trust ``tests/unit/fakes.FakeEngine`` to behave as
``buildpy.podman.PodmanEngine`` does in what the build relies on: inspection,
uploads, runs, commits with labels, names, removals, volumes. Each test here
runs twice, once per engine, so the fake cannot drift from Podman unnoticed.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import BUILDER_PREFIX
from fakes import FakeEngine

from buildpy.engine import CommitSpec, ContainerSpec, Engine, ImageInfo
from buildpy.podman import PodmanEngine

BUILDER = f"{BUILDER_PREFIX}/python-311-minimal"


@dataclass
class Subject:
    """An engine under test, the image containers start from, and how a run behaves."""

    engine: Engine
    base: ImageInfo
    script: FakeEngine | None  # the fake is told what the command would print

    def will_print(self, output: bytes, status: int) -> None:
        if self.script is not None:
            self.script.output, self.script.status = [output], status


@pytest.fixture(params=["fake", "podman"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "fake":
        fake = FakeEngine()
        fake.stored[BUILDER] = ImageInfo(id="sha256:minimal", ref=BUILDER, user="1001:0")
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


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def spec(subject: Subject, command: tuple[str, ...], **labels: str) -> ContainerSpec:
    name = f"buildpy-test-contract-{uuid.uuid4().hex[:8]}"
    return ContainerSpec(
        image=subject.base.id,
        command=command,
        user="0",
        labels=labels,
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


def test_run_hands_over_output_and_returns_the_status(subject: Subject) -> None:
    subject.will_print(b"to stdout\nto stderr\n", 3)
    engine = subject.engine
    command = ("/bin/sh", "-c", "echo to stdout; echo to stderr >&2; exit 3")
    container = engine.create(spec(subject, command))
    chunks: list[bytes] = []
    try:
        assert engine.run(container, chunks.append) == 3
    finally:
        engine.remove(container)
    assert b"".join(chunks) == b"to stdout\nto stderr\n"


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
