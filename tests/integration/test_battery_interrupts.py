"""Failure battery, interrupts: Ctrl-C, SIGTERM, --timeout and SIGKILL at each stage.

Each stage is held open so the interrupt lands inside it, not near it:

* ``env-file``: before the engine, reading an ``--env-file`` that is a FIFO no one
  writes to;
* ``connecting``: a CONTAINER_HOST that accepts and never answers;
* ``dependencies``: pip in the dependency phase, waiting on an index that answers late;
* ``upload``, ``commit``: the proxy signals the build as the call goes by (for
  ``--timeout``, it holds the call: a service that hangs there);
* ``split-upload``: the same, for a source large enough to go up in parallel streams
  (all of them end before the container is removed);
* ``assemble``: the source's own assemble, sleeping.

Ctrl-C, SIGTERM and a second signal are exit 130, ``--timeout`` exit 124; SIGKILL
leaves the working container, which the next build removes. Nothing else is left:
no container, image, dependency layer, service process or temporary file.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from battery import APP_PY, BUILDER, RUN_DIRS_IN_TMPDIR, Case, Running, swept
from conftest import needs_a_private_service

from buildpy.source import SPLIT_BYTES

pytestmark = pytest.mark.rootless

SLOW_ASSEMBLE = "#!/bin/sh\ntrap '' TERM\necho assembling-now\nexec sleep 120\n"
INTERRUPTED = "interrupted; the working container was removed"
TIMED_OUT = "the build took longer than --timeout (6 s) and was stopped"
TIMEOUT_HINT = "raise --timeout, or find out what is slow with -v"
UPLOAD = r"PUT /libpod/containers/[0-9a-f]+/archive"
COMMIT = r"POST /libpod/commit"


@contextmanager
def at_stage(case: Case, stage: str, how: str, *extra: str) -> Iterator[Running]:
    """Start a build and return once it is inside ``stage``; ``how`` is the action the
    case will take: a signal name, ``timeout`` or ``SIGKILL`` (proxy stages hold the
    call instead of signalling, for ``timeout``)."""
    args = ["--builder", BUILDER, *extra]
    if how == "timeout":
        args += ["--timeout", "6s"]
    slow = {"app.py": APP_PY, ".s2i/bin/assemble": SLOW_ASSEMBLE}
    held: list[int] = []
    try:
        if stage == "env-file":
            app = case.app({"app.py": APP_PY})
            fifo = case.dir / "env.fifo"
            os.mkfifo(fifo)
            running = case.start(str(app), *args, "--env-file", str(fifo), host="tripwire")
            held.append(_await_reader(fifo))
            _await(lambda: "pipe" in _blocked_in(running.pid), running)
            yield running
        elif stage == "connecting":
            app = case.app({"app.py": APP_PY})
            running = case.start(str(app), *args, host="tripwire")
            _await(lambda: case.tripwire.contacts > 0, running)
            yield running
        elif stage == "dependencies":
            index = case.index(delay=60)
            files = {"app.py": APP_PY, "requirements.txt": f"six\n# {case.marker}\n"}
            app = case.app(files)
            running = case.start(str(app), *args, *index.pip_args())
            _await(index.hit.is_set, running)
            yield running
        elif stage == "assemble":
            app = case.app(slow)
            running = case.start(str(app), *args)
            running.wait_for("assembling-now")
            yield running
        else:  # a call through the proxy
            proxy = case.proxy()
            call = {"upload": UPLOAD, "split-upload": UPLOAD, "commit": COMMIT}[stage]
            app = case.app({"app.py": APP_PY, ".s2i/bin/assemble": "#!/bin/sh\necho done\n"})
            if stage == "split-upload":
                for i in range(4):  # SPLIT_BYTES and more: parallel streams
                    (app / f"blob-{i}.bin").write_bytes(os.urandom(SPLIT_BYTES // 2))
            if how in ("timeout", "SIGKILL"):
                hit = proxy.on(call, "hold")
            else:
                hit = proxy.on(call, signum=getattr(signal, how), delay=0.2)
            running = case.start(str(app), *args, host=proxy.url)
            proxy.pid = running.pid
            _await(hit.is_set, running)
            yield running
    finally:
        for fd in held:
            os.close(fd)


def _await_reader(fifo: os.PathLike[str]) -> int:
    """Open the FIFO for writing once the build has it open for reading (it then blocks
    reading it until this end closes)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the build never opened the --env-file")


def _blocked_in(pid: int) -> str:
    """The kernel function a process sleeps in (``anon_pipe_read``: reading a FIFO).

    A signal that lands while the build is still inside open() of the FIFO is only
    handled once a Python function is next entered, which the read that follows never
    lets happen (CPython checks pending signals between bytecodes): signalled then, the
    build would wait for the FIFO forever. Signalled inside the read, the read is
    interrupted. A FIFO a shell made (`--env-file <(cmd)`) ends when Ctrl-C stops its
    writer, so users are not caught by this.
    """
    try:
        with open(f"/proc/{pid}/wchan") as handle:
            return handle.read()
    except OSError:
        return ""


def _await(ready: Callable[[], bool], running: Running, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert running.proc.poll() is None, "the build ended before reaching the stage"
        assert time.monotonic() < deadline, "the build never reached the stage"
        time.sleep(0.05)


SIGNAL_STAGES = [
    "env-file",
    "connecting",
    "dependencies",
    "upload",
    "split-upload",
    "assemble",
    "commit",
]


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", SIGNAL_STAGES)
def test_a_signal_at_each_stage(case: Case, stage: str, how: str) -> None:
    with at_stage(case, stage, how) as running:
        if stage not in ("upload", "split-upload", "commit"):  # the proxy signals those
            running.signal(getattr(signal, how))
        outcome = running.finish()
    outcome.expect(130, INTERRUPTED, None)
    if stage == "split-upload":
        assert outcome.logged("source uploaded") == [], "the signal came after the upload"
    for tag in case.cache_images:
        assert case.api.image(tag) is None, f"an interrupted dependency phase made {tag}"


@pytest.mark.parametrize("stage", ["env-file", "dependencies", "upload", "assemble", "commit"])
def test_timeout_at_each_stage(case: Case, stage: str) -> None:
    with at_stage(case, stage, "timeout") as running:
        outcome = running.finish()
    outcome.expect(124, TIMED_OUT, TIMEOUT_HINT)
    if stage == "commit":  # held by a hung service: the build gives up on it, and says so
        assert any("did not end within 10 s" in said for said in outcome.warnings())


@pytest.mark.parametrize(
    ("stage", "first", "second"),
    [
        ("assemble", signal.SIGINT, signal.SIGINT),
        ("assemble", signal.SIGTERM, signal.SIGINT),
        ("dependencies", signal.SIGINT, signal.SIGTERM),
    ],
    ids=["ctrl-c-twice-in-assemble", "sigterm-then-ctrl-c-in-assemble", "twice-in-dependencies"],
)
def test_twice_in_a_row(case: Case, stage: str, first: int, second: int) -> None:
    with at_stage(case, stage, "SIGINT") as running:
        running.signal(first)
        time.sleep(0.05)
        running.signal(second)
        outcome = running.finish()
    outcome.expect(130, INTERRUPTED, None)


def test_a_second_ctrl_c_during_the_removal_waits_for_it(case: Case) -> None:
    proxy = case.proxy()
    removing = proxy.on(r"DELETE /libpod/containers/", signum=signal.SIGINT)
    app = case.app({"app.py": APP_PY, ".s2i/bin/assemble": SLOW_ASSEMBLE})
    running = case.start(str(app), "--builder", BUILDER, host=proxy.url)
    proxy.pid = running.pid
    running.wait_for("assembling-now")
    running.signal(signal.SIGINT)
    outcome = running.finish()
    assert removing.is_set()
    outcome.expect(130, INTERRUPTED, None)
    assert "stopped again: the working container was removed first" in outcome.warnings()


@pytest.mark.parametrize("stage", ["dependencies", "upload", "assemble"])
def test_sigkill_leaves_a_container_the_next_build_removes(case: Case, stage: str) -> None:
    with at_stage(case, stage, "SIGKILL") as running:
        running.signal(signal.SIGKILL)
        outcome = running.finish(keep=True, grace=10)
    assert outcome.code == -signal.SIGKILL
    swept(case, outcome, running.pid)
    assert [item for item in outcome.leftovers if not item.startswith("container")] == []


def test_sigterm_stops_the_private_service_too(case: Case) -> None:
    """No CONTAINER_HOST: buildpy's own service (it carries the case's marker) goes too."""
    needs_a_private_service()
    app = case.app({"app.py": APP_PY, ".s2i/bin/assemble": SLOW_ASSEMBLE})
    running = case.start(str(app), "--builder", BUILDER, host="unset")
    running.wait_for("assembling-now")
    assert any(name.startswith("buildpy-podman-") for name in os.listdir(case.tmp))
    running.signal(signal.SIGTERM)
    outcome = running.finish()
    outcome.expect(130, INTERRUPTED, None)


def test_sigkill_leaves_the_private_services_directories_the_next_build_removes(
    case: Case,
) -> None:
    """Its socket directory and its scratch directory (where Podman puts large temporary
    files; none for rootless Podman without XDG_RUNTIME_DIR, which derives its run
    directory from TMPDIR) are named for the killed build, and the next build, with a
    private service of its own in the same environment, removes them and its container."""
    needs_a_private_service()
    app = case.app({"app.py": APP_PY, ".s2i/bin/assemble": SLOW_ASSEMBLE})
    running = case.start(str(app), "--builder", BUILDER, host="unset")
    running.wait_for("assembling-now")
    made = sorted(name for name in os.listdir(case.tmp) if name.startswith("buildpy-"))
    expected = ["podman"] if RUN_DIRS_IN_TMPDIR else ["podman", "scratch"]
    assert [name.split("-")[1] for name in made] == expected, made
    assert all(f"-p{running.pid}-" in name for name in made), made
    running.signal(signal.SIGKILL)
    outcome = running.finish(keep=True, grace=10)
    assert outcome.code == -signal.SIGKILL
    after = swept(case, outcome, running.pid, host="unset")
    removed = after.logged("removed a temporary directory left by a killed build")
    assert sorted(os.path.basename(entry["path"]) for entry in removed) == made
    assert not any(name.startswith("buildpy-") for name in os.listdir(case.tmp))


def test_ctrl_c_during_the_commit_leaves_the_tag_where_it_was(case: Case) -> None:
    app = case.app({"app.py": APP_PY, ".s2i/bin/assemble": "#!/bin/sh\necho done\n"})
    tag = case.tag()
    case.run(str(app), "--builder", BUILDER, "--tag", tag).expect_success(tag)
    before = (case.api.image(tag) or {})["Id"]
    (app / "app.py").write_text('print("changed")\n')
    proxy = case.proxy()
    proxy.on(COMMIT, signum=signal.SIGINT, delay=0.2)
    running = case.start(str(app), "--builder", BUILDER, "--tag", tag, host=proxy.url)
    proxy.pid = running.pid
    outcome = running.finish()
    outcome.expect(130, INTERRUPTED, None)
    assert (case.api.image(tag) or {})["Id"] == before
    assert "stopped during the commit: its image was removed" in outcome.warnings()
