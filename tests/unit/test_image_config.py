"""What an application image's config holds and what it must not: no variable Podman adds
to every container (TERM, container), no dependency-layer bookkeeping with content."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeEngine
from test_build import PHASED, PLACING, _Sink, make_plan, phased_app
from test_build import app as app  # the fixture: a source with .s2i/environment

from buildpy import build, cache, layer
from buildpy.engine import ENGINE_VARIABLES, ContainerSpec, VolumeMount
from buildpy.podman import create_payload

TAG = "localhost/app:latest"
TOKEN = "s3cr3t-t0ken"


def test_working_containers_unset_what_podman_adds(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    build.run(make_plan(phased_app(app), builder="phased", tag=TAG), engine, _Sink())
    assert [spec.unset_env for spec in engine.created] == [ENGINE_VARIABLES] * 2
    image = engine.find_image(TAG)
    assert image is not None
    assert not set(ENGINE_VARIABLES) & set(image.env), image.env
    assert image.env["FROM_FILE"] == "s2i"


def test_a_builders_own_term_and_the_users_are_kept(app: Path) -> None:
    builder = replace(PHASED, env={**PHASED.env, "TERM": "vt100"})
    engine = FakeEngine(stored={"phased": builder})
    plan = make_plan(phased_app(app), builder="phased", tag=TAG, env=("container=mine",))
    build.run(plan, engine, _Sink())
    # the dependency phase's container has only the installation variables: it unsets
    # `container`; the application's has the user's value
    assert [spec.unset_env for spec in engine.created] == [("container",), ()]
    image = engine.find_image(TAG)
    assert image is not None
    assert (image.env["TERM"], image.env["container"]) == ("vt100", "mine")


@pytest.mark.parametrize("builder", [PHASED, PLACING], ids=["assembled", "placed"])
def test_an_application_image_keeps_no_dependency_bookkeeping(app: Path, builder: object) -> None:
    requirements = f"flask\n--extra-index-url https://ci:{TOKEN}@mirror.example/simple\n"
    phased_app(app)
    (app / "requirements.txt").write_text(requirements)
    output = [b"BUILDPY_APPLICATION_PHASE=copy\n"]
    engine = FakeEngine(stored={"phased": builder}, output=output)  # type: ignore[dict-item]
    result = build.run(make_plan(app, builder="phased", tag=TAG), engine, _Sink())
    assert result.phases == 2
    (deps,) = engine.images(cache.DEPENDENCY_REPOSITORY)
    assert deps.labels[cache.KEY_LABEL] and deps.labels[cache.LINES_LABEL]  # kept where read
    image = engine.find_image(TAG)
    assert image is not None
    kept = {k: v for k, v in image.labels.items() if k in layer.BOOKKEEPING_LABELS and v}
    assert kept == {}
    assert not any(k.startswith("io.buildpy.dependencies.") and v for k, v in image.labels.items())
    assert image.labels["io.openshift.s2i.build.image"] == "phased"
    assert image.labels["io.openshift.s2i.scripts-url"]  # the builder's own label
    assert not any(TOKEN in f"{k}={v}" or "flask" in v for k, v in image.labels.items())


def test_a_one_phase_build_clears_nothing(app: Path) -> None:
    engine = FakeEngine()
    build.run(make_plan(app, tag=TAG), engine, _Sink())
    assert not any(change.startswith("LABEL") for change in engine.commits[0].changes)


def test_the_libpod_create_payload_unsets_and_mounts_read_only() -> None:
    """What podman.py posts: podman-py's rendering (empty values left out, so an empty
    entrypoint is the image's) with ``unsetenv``, read-only volumes and ``volatile``."""
    spec = ContainerSpec(
        image="sha256:img",
        command=("/bin/sh", "-c", "true"),
        user="1001",
        env={"A": "1"},
        volumes=(VolumeMount("cache", "/dev/shm/c"), VolumeMount("wheels", "/dev/shm/w", True)),
        network="none",
        name="buildpy-build-x",
        unset_env=ENGINE_VARIABLES,
    )
    assert create_payload(spec) == {
        "image": "sha256:img",
        "command": ["/bin/sh", "-c", "true"],
        "env": {"A": "1"},
        "volumes": [
            {"Name": "cache", "Dest": "/dev/shm/c", "Options": ["rw"]},
            {"Name": "wheels", "Dest": "/dev/shm/w", "Options": ["ro"]},
        ],
        "unsetenv": ["TERM", "container"],
        "user": "1001",
        "name": "buildpy-build-x",
        "volatile": True,
        "netns": {"nsmode": "none"},
    }
    bare = create_payload(ContainerSpec("img", ("true",), network="ns:/run/netns/x"))
    assert bare == {
        "image": "img",
        "command": ["true"],
        "volatile": True,
        "netns": {"nsmode": "path", "value": "/run/netns/x"},
    }
