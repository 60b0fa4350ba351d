"""Failure battery, engine: Podman absent, silent, or gone in the middle of a build.

A connection lost at a given API call is made with the proxy (`EngineProxy.on(...,
"drop")`): it cuts every connection and refuses new ones, as a dead service does. A
working container that existed then stays behind (nothing can remove it without a
service) and the next build on this machine removes it; the case checks both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from battery import APP_PY, BUILDER, Case, Failure, params, swept
from conftest import needs_a_private_service
from itest import podman_service

pytestmark = pytest.mark.rootless

SLOW_ASSEMBLE = "#!/bin/sh\ntrap '' TERM\necho assembling-now\nexec sleep 120\n"
SLOW_APP = {"app.py": APP_PY, ".s2i/bin/assemble": SLOW_ASSEMBLE}
NO_ANSWER_HINT = "unset CONTAINER_HOST to let buildpy start a private service"
LOST_HINT = "check that the Podman service is running (`podman system service`)"


def fake_podman(app: Path) -> None:
    """A `podman` on PATH whose service cannot start."""
    binary = app.parent / "bin" / "podman"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\necho 'Error: cannot start: out of fake disk' >&2\nexit 125\n")
    binary.chmod(0o755)


ENGINE_CASES = [
    Failure(
        "unix-socket-nobody-listens-on",
        5,
        "no Podman service answers at CONTAINER_HOST=unix:///tmp/buildpy-test-none.sock",
        NO_ANSWER_HINT,
        host="unix:///tmp/buildpy-test-none.sock",
    ),
    Failure(
        "tcp-port-that-refuses",
        5,
        "no Podman service answers at CONTAINER_HOST=tcp://127.0.0.1:1",
        NO_ANSWER_HINT,
        host="tcp://127.0.0.1:1",
    ),
    Failure(
        "socket-that-never-answers",
        5,
        "no Podman service answers at CONTAINER_HOST=unix://",
        NO_ANSWER_HINT,
        engine=True,
    ),
    Failure(
        "unknown-scheme",
        5,
        "no Podman service answers at CONTAINER_HOST=http://127.0.0.1:1",
        NO_ANSWER_HINT,
        host="http://127.0.0.1:1",
    ),
]


@pytest.mark.parametrize("row", params(ENGINE_CASES))
def test_no_service_answers(case: Case, row: Failure) -> None:
    row.check(case)


def test_no_podman_installed(case: Case) -> None:
    needs_a_private_service()
    app = case.app({"app.py": APP_PY})
    outcome = case.run(str(app), host="unset", env={"PATH": "/nonexistent"})
    outcome.expect(
        5,
        "Podman is not installed (no `podman` on PATH) and no Podman service answers",
        "install it (Debian/Ubuntu: `apt-get install podman`",
    )


def test_a_private_service_that_cannot_start(case: Case) -> None:
    needs_a_private_service()
    app = case.app({"app.py": APP_PY})
    fake_podman(app)
    outcome = case.run(str(app), host="unset", env={"PATH": f"{case.dir}/bin:/usr/bin:/bin"})
    outcome.expect(
        5,
        "`podman system service` exited with status 125: Error: cannot start: out of fake disk",
        "run `buildpy doctor` to see what Podman needs on this host",
    )


LOSING = "lost the connection to Podman while trying to "
LOST = {
    # call: (what buildpy says, a container exists by then)
    "POST /libpod/containers/create": (f"{LOSING}create a container from", False),
    "PUT /libpod/containers/[0-9a-f]+/archive": (f"{LOSING}copy the source into", True),
    "POST /libpod/containers/[0-9a-f]+/start": ("the Podman service stopped answering", True),
    "POST /libpod/commit": (f"{LOSING}commit the working container", True),
}


@pytest.mark.parametrize("call", list(LOST), ids=["create", "upload", "start", "commit"])
def test_the_service_dies_at_a_call(case: Case, call: str) -> None:
    message, container = LOST[call]
    proxy = case.proxy()
    proxy.on(call, "drop")
    app = case.app({"app.py": APP_PY, ".s2i/bin/assemble": "#!/bin/sh\necho done\n"})
    running = case.start(str(app), "--builder", BUILDER, host=proxy.url)
    outcome = running.finish(keep=True)
    assert outcome.code == 5 and message in outcome.errors[0], outcome.stderr
    if not container:
        outcome.expect(5, message, LOST_HINT)
        return
    (warning,) = [w for w in outcome.warnings() if "could not remove" in w]
    assert "could not remove the working container" in warning
    swept(case, outcome, running.pid)


def test_the_service_is_killed_mid_assemble(case: Case) -> None:
    sock = case.dir / "doomed.sock"
    with podman_service(sock) as service:
        app = case.app(SLOW_APP)
        running = case.start(str(app), "--builder", BUILDER, host=f"unix://{sock}")
        running.wait_for("assembling-now")
        service.kill()
        outcome = running.finish(keep=True)
    assert outcome.code == 5, outcome.stderr
    assert outcome.errors == [
        "the Podman service stopped answering while the working container ran"
    ]
    assert "the next build removes the container it left" in outcome.hints[0]
    swept(case, outcome, running.pid)
