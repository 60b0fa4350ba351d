"""Failure battery, concurrency: builds on one machine at the same time.

Two builds that need the same new dependency layer install it once: the second waits
for the first and reuses its layer (and can be stopped while it waits). Two builds of
one tag end with the tag on a complete image. A build never removes the working
container of another build that is still running.
"""

from __future__ import annotations

import signal

import pytest
from battery import APP_PY, BUILDER, Case, image_root

pytestmark = pytest.mark.rootless

WAITING = "waiting for another build that installs the same dependencies"


def _same_dependencies(case: Case) -> tuple[list[str], list[str]]:
    """Two sources whose dependency files are the same, and the index they install from
    (its first answer held until the case releases it)."""
    index = case.index(delay=120)
    requirements = f"six\n# {case.marker}\n"
    apps = [
        case.app({"app.py": f'print("{name}")\n', "requirements.txt": requirements}, name=name)
        for name in ("first", "second")
    ]
    args = [[str(app), "--builder", BUILDER, *index.pip_args()] for app in apps]
    return args[0], args[1]


def test_two_builds_of_the_same_new_dependencies_install_them_once(case: Case) -> None:
    first_args, second_args = _same_dependencies(case)
    tags = [case.tag("first"), case.tag("second")]
    first = case.start(*first_args, "--tag", tags[0])
    first.wait_for("installing dependencies")
    second = case.start(*second_args, "--tag", tags[1])
    second.wait_for(WAITING)
    case.release_indexes()
    done = [first.finish(), second.finish()]
    for outcome, tag in zip(done, tags):
        outcome.expect_success(tag)
    assert done[0].logged("installing dependencies")
    assert not done[1].logged("installing dependencies")
    assert done[1].logged(WAITING) and done[1].logged("dependency layer reused")


def test_a_build_waiting_for_the_same_dependencies_can_be_stopped(case: Case) -> None:
    first_args, second_args = _same_dependencies(case)
    tag = case.tag("first")
    first = case.start(*first_args, "--tag", tag)
    first.wait_for("installing dependencies")
    second = case.start(*second_args)
    second.wait_for(WAITING)
    second.signal(signal.SIGINT)
    stopped = second.finish()
    stopped.expect(130, "interrupted; the working container was removed", None)
    case.release_indexes()
    first.finish().expect_success(tag)


def test_two_builds_of_one_tag_end_with_a_complete_image(case: Case) -> None:
    apps = {
        name: case.app({"app.py": f'print("{name}")\n'}, name=name) for name in ("left", "right")
    }
    tag = case.tag()
    running = [case.start(str(app), "--builder", BUILDER, "--tag", tag) for app in apps.values()]
    done = [build.finish(images=False) for build in running]
    for outcome in done:
        outcome.expect_success(tag)
    image = case.api.image(tag) or {}
    source = image["Config"]["Labels"]["io.openshift.s2i.build.source-location"]
    (winner,) = [name for name, app in apps.items() if str(app) == source]
    with image_root(tag) as root:
        assert (root / "opt/app-root/src/app.py").read_text() == f'print("{winner}")\n'
    # The other build's image lost the tag to this one, as with `podman build -t`: it
    # stays, untagged, for `podman image prune`; the case removes it.
    loser = next(name for name in apps if name != winner)
    (untagged,) = case.api.images(f"io.openshift.s2i.build.source-location={apps[loser]}")
    assert not untagged.get("Names")
    case.api.remove_image(str(untagged["Id"]))


def test_a_starting_build_leaves_a_running_build_alone(case: Case) -> None:
    slow = case.app(
        {
            "app.py": APP_PY,
            ".s2i/bin/assemble": "#!/bin/sh\necho assembling-now\nsleep 6\n"
            'mkdir -p "$HOME" && cp -R /tmp/src/. "$HOME"\n',
        },
        name="slow",
    )
    fast = case.app({"app.py": APP_PY}, name="fast")
    tags = [case.tag("slow"), case.tag("fast")]
    running = case.start(str(slow), "--builder", BUILDER, "--tag", tags[0])
    running.wait_for("assembling-now")
    (container,) = case.containers_of(running.pid)
    other = case.run(str(fast), "--builder", BUILDER, "--tag", tags[1])
    other.expect_success(tags[1])
    swept = [
        entry["container"]
        for entry in other.logged("removed a working container left by a killed build")
    ]
    assert container not in swept
    running.finish().expect_success(tags[0])
