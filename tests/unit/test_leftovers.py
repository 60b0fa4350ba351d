"""Finding the working containers of builds that were killed outright."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fakes import FakeEngine

from buildpy import leftovers
from buildpy.engine import ContainerSpec, VolumeMount
from buildpy.leftovers import Maker


def test_a_name_says_who_made_the_container() -> None:
    maker = Maker("0123abcd", 4242, 987654)
    name = leftovers.container_name("build", maker)
    assert name.startswith("buildpy-build-h0123abcd-p4242-s987654-")
    assert leftovers.maker_of(name) == maker
    assert leftovers.maker_of("buildpy-test-1234") is None
    assert leftovers.maker_of("my-own-container") is None


def test_this_process_is_alive_and_a_finished_one_is_not() -> None:
    me = Maker.this_process()
    assert me.start > 0 and leftovers.is_alive(me)
    assert not leftovers.is_alive(Maker(me.host, me.pid, me.start + 1))  # a reused PID
    child = subprocess.Popen(["true"])
    child.wait()
    assert not leftovers.is_alive(Maker(me.host, child.pid, 1))


def test_only_this_hosts_containers_of_gone_processes_are_orphans() -> None:
    host = leftovers.host_digest("this-host")
    names = [
        ("a", leftovers.container_name("build", Maker(host, 1, 1))),  # gone
        ("b", leftovers.container_name("build", Maker(host, 2, 2))),  # still running
        ("c", leftovers.container_name("build", Maker("ffffffff", 3, 3))),  # another host
        ("d", "buildpy-test-0123456789"),  # not a working container
    ]
    found = leftovers.orphans(names, host, alive=lambda maker: maker.pid == 2)
    assert [container for container, _ in found] == ["a"]


def test_sweep_removes_orphans_and_keeps_a_running_build() -> None:
    engine = FakeEngine()
    me = Maker.this_process()
    dead = subprocess.Popen(["true"])
    dead.wait()
    for maker in (me, Maker(me.host, dead.pid, 5)):
        engine.create(ContainerSpec("img", ("true",), name=leftovers.container_name("b", maker)))
    assert leftovers.sweep(engine) == [engine.created[1].name]
    assert engine.removed == ["ctr2"]
    assert os.getpid() == me.pid


def test_sweep_removes_build_volumes_of_gone_builds_once_no_container_uses_them() -> None:
    engine = FakeEngine()
    me = Maker.this_process()
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = Maker(me.host, dead.pid, 5)
    mine, left = (leftovers.container_name(leftovers.VOLUME_KIND, m) for m in (me, gone))
    other = leftovers.container_name(leftovers.VOLUME_KIND, Maker(me.host, dead.pid, 6))
    for name in (mine, left, other):
        engine.ensure_volume(name, {leftovers.VOLUME_LABEL: "wheelhouse"})
    engine.ensure_volume("buildpy-downloads", {"io.buildpy.cache": "downloads"})
    # a container of a running build still mounts `other`: kept until it is gone
    engine.create(ContainerSpec("img", ("true",), volumes=(VolumeMount(other, "/w", True),)))
    assert leftovers.sweep(engine) == [left]
    assert set(engine.volumes_made) == {mine, other, "buildpy-downloads"}
    assert leftovers.is_volume(left) and not leftovers.is_volume(leftovers.container_name())


def test_directories_of_gone_builds_are_removed_and_others_kept(tmp_path: Path) -> None:
    """A private service's directories left by a build killed outright go; those of a
    build still running, of another machine, and anything not named by buildpy stay."""
    me = Maker.this_process()
    child = subprocess.Popen(["true"])
    child.wait()
    gone = Maker(me.host, child.pid, 1)
    left = tmp_path / (leftovers.dir_prefix("podman", gone) + "x1")
    scratch = tmp_path / (leftovers.dir_prefix("scratch", gone) + "x2")
    running = tmp_path / (leftovers.dir_prefix("podman", me) + "x3")
    elsewhere = tmp_path / (leftovers.dir_prefix("podman", Maker("ffffffff", child.pid, 1)) + "x4")
    unrelated = tmp_path / "buildpy-podman-abc123"
    for path in (left, scratch, running, elsewhere, unrelated):
        path.mkdir()
        (path / "process.log").write_text("log\n")
    (tmp_path / (leftovers.dir_prefix("ssh", gone) + "file")).write_text("not a directory\n")
    removed = leftovers.sweep_dirs([tmp_path])
    assert sorted(removed) == sorted([str(left), str(scratch)])
    assert {p.name for p in tmp_path.iterdir()} == {
        running.name,
        elsewhere.name,
        unrelated.name,
        leftovers.dir_prefix("ssh", gone) + "file",
    }


def test_a_private_service_names_its_directories_for_its_process() -> None:
    prefix = leftovers.dir_prefix("podman")
    me = Maker.this_process()
    assert prefix == f"buildpy-podman-h{me.host}-p{me.pid}-s{me.start}-"
    assert leftovers.sweep_dirs([Path("/nonexistent-dir")]) == []
