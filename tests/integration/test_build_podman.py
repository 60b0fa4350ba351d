"""`buildpy build` end to end: real Podman, the real builder, apps answering HTTP."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BUILDER_PREFIX, BUILDPY, HOST_CA, ROOT, BuildFn, Built
from itest import build_containers, http_get, inspect_image, podman_service, running

from buildpy import service

BUILDER = f"{BUILDER_PREFIX}/python-311"
EXAMPLE = ROOT / "examples" / "hello-flask"


@pytest.fixture(scope="module")
def flask_image(buildpy_build: BuildFn) -> Built:
    return buildpy_build(EXAMPLE, "-e", "GREETING=Howdy")


def write_app(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name.startswith(".s2i/bin/"):
            path.chmod(0o755)
    return root


PLAIN_APP = """\
import os, http.server

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("plain app: " + os.environ.get("COLOR", "none") + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""


@pytest.mark.rootless
@pytest.mark.parametrize("user", [None, "12345"])
def test_flask_app_served_by_gunicorn(flask_image: Built, user: str | None) -> None:
    assert flask_image.stdout.strip() == flask_image.tag
    with running(flask_image.tag, user=user) as (url, name):
        status, body = http_get(url + "/", name=name)
        assert (status, body) == (200, "Howdy from buildpy!\n")
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        assert "gunicorn" in (logs.stdout + logs.stderr).lower()


@pytest.mark.rootless
def test_image_config_labels_cmd_user_env(flask_image: Built) -> None:
    info = inspect_image(flask_image.tag)
    builder = inspect_image(BUILDER)
    config = info["Config"]
    assert config["Cmd"] == ["/usr/libexec/s2i/run"]
    assert config["User"] == builder["Config"]["User"] == "1001:0"
    assert config["WorkingDir"] == builder["Config"]["WorkingDir"] == "/opt/app-root/src"
    assert not config.get("Entrypoint")
    labels = config["Labels"]
    assert labels["io.openshift.s2i.build.image"] == BUILDER
    assert labels["io.openshift.s2i.build.source-location"] == str(EXAMPLE)
    assert labels["io.openshift.s2i.scripts-url"] == "image:///usr/libexec/s2i"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["GREETING"] == "Howdy"  # -e beats .s2i/environment (GREETING=Hello)
    assert env["HOME"] == "/opt/app-root/src"
    assert not any(key.startswith("PIP_") and key != "PIP_NO_CACHE_DIR" for key in env), env


def test_build_only_variables_leave_no_trace(flask_image: Built, index_url: str) -> None:
    info = inspect_image(flask_image.tag)
    assert index_url not in " ".join(info["Config"]["Env"])
    changed = subprocess.run(
        ["podman", "image", "diff", flask_image.tag, BUILDER],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "/tmp/.buildpy" not in changed
    assert "/dev/shm" not in changed
    assert "/opt/app-root/src/wsgi.py" in changed


@pytest.mark.rootless
def test_plain_app_py_and_dash_e_beats_s2i_environment(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    app = write_app(tmp_path / "plain", {"app.py": PLAIN_APP, ".s2i/environment": "COLOR=blue\n"})
    built = buildpy_build(app, "-e", "COLOR=red")
    with running(built.tag) as (url, name):
        assert http_get(url + "/", name=name) == (200, "plain app: red\n")
    built = buildpy_build(app)
    with running(built.tag) as (url, name):
        assert http_get(url + "/", name=name) == (200, "plain app: blue\n")


def test_variables_reach_assemble_with_their_precedence(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    assemble = (
        "#!/bin/sh\nset -e\n"
        'echo "A=$A B=$B C=$C SECRET=$SECRET"\n'
        "mkdir -p $HOME && env > $HOME/assemble-env.txt\n"
    )
    app = write_app(
        tmp_path / "vars",
        {
            ".s2i/bin/assemble": assemble,
            ".s2i/bin/run": "#!/bin/sh\ncat $HOME/assemble-env.txt\n",
            ".s2i/environment": "A=s2i\nB=s2i\nC=s2i\n",
            "vars.env": "B=file\nC=file\n",
        },
    )
    built = buildpy_build(
        app,
        "--env-file",
        str(app / "vars.env"),
        "-e",
        "C=cli",
        "--build-env",
        "SECRET=s3cr3t",
        offline=False,
    )
    assert "A=s2i B=file C=cli SECRET=s3cr3t" in built.stderr
    env = subprocess.run(
        ["podman", "run", "--rm", built.tag], capture_output=True, text=True, check=True
    ).stdout
    assert "SECRET=s3cr3t" in env  # assemble saw it ...
    image_env = inspect_image(built.tag)["Config"]["Env"]
    assert "C=cli" in image_env and "B=file" in image_env
    assert not any(item.startswith("SECRET=") for item in image_env)  # ... the image did not


def test_s2iignore_is_honoured(buildpy_build: BuildFn, tmp_path: Path) -> None:
    app = write_app(
        tmp_path / "ignored",
        {
            "app.py": PLAIN_APP,
            "secret.key": "do not ship\n",
            "notes/todo.txt": "x\n",
            ".s2iignore": "*.key\nnotes/\n",
        },
    )
    built = buildpy_build(app, offline=False)
    listing = subprocess.run(
        ["podman", "run", "--rm", "--entrypoint", "ls", built.tag, "-A", "/opt/app-root/src"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "app.py" in listing and ".s2iignore" in listing
    assert "secret.key" not in listing and "notes" not in listing


def test_git_checkout_labels(buildpy_build: BuildFn, tmp_path: Path) -> None:
    app = write_app(tmp_path / "gitapp", {"app.py": PLAIN_APP})
    git = ["git", "-C", str(app), "-c", "user.name=T", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    (app / "uncommitted.txt").write_text("on disk only\n")
    built = buildpy_build(app, offline=False)
    labels = inspect_image(built.tag)["Config"]["Labels"]
    assert labels["io.openshift.build.commit.id"] == head.strip()
    assert labels["io.openshift.build.commit.ref"] == "main"
    assert labels["io.openshift.build.commit.message"] == "first"
    listing = subprocess.run(
        ["podman", "run", "--rm", "--entrypoint", "ls", built.tag, "/opt/app-root/src"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "uncommitted.txt" in listing


def test_failing_assemble_exits_7_with_tail_and_leaves_no_container(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    app = write_app(
        tmp_path / "broken",
        {"app.py": PLAIN_APP, "requirements.txt": "this-package-does-not-exist-anywhere==1.0\n"},
    )
    built = buildpy_build(app, check=False)
    assert built.returncode == 7
    assert built.stdout == ""
    assert "ERROR: assemble exited with status" in built.stderr
    assert "this-package-does-not-exist-anywhere" in built.stderr.split("ERROR:")[-1]
    assert build_containers(str(app)) == []


def test_missing_builder_exits_6(buildpy_build: BuildFn, tmp_path: Path) -> None:
    app = write_app(tmp_path / "nobuilder", {"app.py": PLAIN_APP})
    built = buildpy_build(app, builder=f"{BUILDER_PREFIX}/no-such-builder", check=False)
    assert built.returncode == 6
    assert "buildpy builder build" in built.stderr


def test_real_index_through_the_ca_bundle(buildpy_build: BuildFn) -> None:
    """The one test that goes to the real package index, through the host's TLS proxy."""
    if not HOST_CA.is_file():
        pytest.fail(f"{HOST_CA} is missing: this test needs the host's CA bundle")
    built = buildpy_build(EXAMPLE, "--ca-bundle", str(HOST_CA), offline=False)
    info = inspect_image(built.tag)
    assert not any("ca-bundle" in item or "PIP_CERT" in item for item in info["Config"]["Env"])
    with running(built.tag) as (url, name):
        assert http_get(url + "/", name=name) == (200, "Hello from buildpy!\n")


@pytest.mark.rootless
def test_ctrl_c_removes_the_container_the_secrets_and_the_private_service(
    tmp_path: Path,
) -> None:
    """No CONTAINER_HOST: buildpy starts its own service, and stops it on Ctrl-C."""
    app = write_app(
        tmp_path / "slow",
        {".s2i/bin/assemble": "#!/bin/sh\necho assembling-now\nexec sleep 120\n"},
    )
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}
    # With a standard socket answering (a user's own `podman system service`), buildpy uses
    # that instead, and must start nothing of its own.
    private = service.standard_socket(env, os.getuid()) is None
    services_before = _private_services()
    secrets_before = secret_names()
    proc = _start_slow_build(
        app, None, "--secret", "id=t,env=BUILDPY_TEST_TOKEN", BUILDPY_TEST_TOKEN="s3cr3t"
    )
    services = _private_services() - services_before
    made = secret_names() - secrets_before
    assert made, "expected the build's secret to exist while assemble runs"
    if private:
        assert services, "expected buildpy's own private podman service to be running"
    else:
        assert not services, "buildpy started a service although the standard socket answers"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out == ""
    assert "interrupted" in err
    assert build_containers(str(app)) == []
    assert not (_private_services() & services)
    assert not (secret_names() & made)


def secret_names() -> set[str]:
    done = subprocess.run(
        ["podman", "secret", "ls", "--format", "{{.Name}}"], capture_output=True, text=True
    )
    return set(done.stdout.split())


def _private_services() -> set[int]:
    out = subprocess.run(
        ["pgrep", "-f", "system service --time=0 unix:///tmp/buildpy-podman-"],
        capture_output=True,
        text=True,
    ).stdout
    return {int(pid) for pid in out.split()}


def test_usage_shows_the_builder_text(podman_url: str) -> None:
    env = {**os.environ, "CONTAINER_HOST": podman_url}
    done = subprocess.run([*BUILDPY, "usage", BUILDER], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "buildpy build" in done.stdout


def _start_slow_build(
    app: Path, podman_url: str | None, *args: str, **variables: str
) -> subprocess.Popen[str]:
    """A build whose assemble announces itself and then sleeps; returns once it runs.

    Without ``podman_url``, buildpy finds or starts its own service. ``args`` go to
    `buildpy build`, ``variables`` into its environment.
    """
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}
    env.update(variables)
    if podman_url is not None:
        env["CONTAINER_HOST"] = podman_url
    proc = subprocess.Popen(
        [*BUILDPY, "build", str(app), "--builder", BUILDER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    seen = ""
    while "assembling-now" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "assembling-now" in seen, seen
    return proc


SLOW_ASSEMBLE = "#!/bin/sh\ntrap '' TERM\necho assembling-now\nexec sleep 120\n"


def test_a_second_ctrl_c_still_removes_the_container(podman_url: str, tmp_path: Path) -> None:
    app = write_app(tmp_path / "slow-twice", {".s2i/bin/assemble": SLOW_ASSEMBLE})
    proc = _start_slow_build(app, podman_url)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert build_containers(str(app)) == []


def test_a_killed_build_leaves_a_container_the_next_build_removes(
    buildpy_build: BuildFn, podman_url: str, tmp_path: Path
) -> None:
    app = write_app(tmp_path / "slow-killed", {".s2i/bin/assemble": SLOW_ASSEMBLE})
    proc = _start_slow_build(app, podman_url)
    proc.kill()  # SIGKILL: no cleanup can run
    proc.communicate(timeout=30)
    (left,) = build_containers(str(app))
    assert left.startswith("buildpy-build-h") and f"-p{proc.pid}-" in left

    other = write_app(tmp_path / "next-build", {"app.py": PLAIN_APP})
    built = buildpy_build(other, builder=BUILDER)
    assert left in built.stderr  # "removed a working container left by a killed build"
    assert build_containers(str(app)) == []


def test_timeout_stops_the_build_and_leaves_nothing(podman_url: str, tmp_path: Path) -> None:
    app = write_app(tmp_path / "slow-timeout", {".s2i/bin/assemble": SLOW_ASSEMBLE})
    env = {**os.environ, "CONTAINER_HOST": podman_url}
    started = time.monotonic()
    done = subprocess.run(
        [*BUILDPY, "build", str(app), "--builder", BUILDER, "--timeout", "4s"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 124, done.stderr
    assert time.monotonic() - started < 30
    assert "--timeout" in done.stderr and done.stdout == ""
    assert build_containers(str(app)) == []


def test_a_service_that_dies_mid_assemble_is_exit_5_and_the_next_build_cleans_up(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    sock = tmp_path / "doomed.sock"
    with podman_service(sock) as service:
        app = write_app(tmp_path / "slow-orphaned", {".s2i/bin/assemble": SLOW_ASSEMBLE})
        proc = _start_slow_build(app, f"unix://{sock}")
        service.kill()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 5, err
        assert "stopped answering" in err
    other = write_app(tmp_path / "after-the-crash", {"app.py": PLAIN_APP})
    buildpy_build(other, builder=BUILDER)
    assert build_containers(str(app)) == []


def test_the_log_for_people_has_stage_lines_the_builders_output_and_a_summary(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    """The default log format, of a real build that installs dependencies."""
    app = tmp_path / "human-log"
    shutil.copytree(EXAMPLE, app)
    # a key of this test's own: the dependency phase runs, with pip's output
    (app / "requirements.txt").write_text(f"# {tmp_path.name}\nflask\ngunicorn\n")
    built = buildpy_build(app, log_format="human")
    assert built.stdout == f"{built.tag}\n"
    lines = built.stderr.splitlines()
    stages = ("builder ", "installing dependencies", "dependencies installed", "committed ")
    found = [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in stages]
    assert found == sorted(found), built.stderr
    timed = [lines[i] for i in found if not lines[i].startswith("installing")]
    assert all(re.search(r" \d+\.\d\d s$", line) for line in timed), timed
    output = lines[found[1] + 1 : found[2]]
    assert output and all(line.startswith("  | ") for line in output), output
    assert any("Successfully installed" in line for line in output), output
    assert re.fullmatch(
        rf"built {re.escape(built.tag)}: image [0-9a-f]{{12}}, \d+\.\d MB, \d+\.\d\d s,"
        " dependency layer installed",
        lines[-1],
    ), lines[-1]
    assert not any(line.startswith("{") for line in lines)
    assert "BUILDPY_APPLICATION_PHASE" not in built.stderr and "\033[" not in built.stderr
