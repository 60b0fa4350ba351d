"""Build-only files (--secret, --ca-bundle): seen by assemble, in no image, and remote over ssh.

The remote build talks to Podman through an sshd this module starts on 127.0.0.1 (its
own config, host key and authorized key in a temporary directory), so everything
buildpy sends (the source, the CA bundle, the secrets) comes from the client side
and reaches Podman only through the ssh tunnel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BUILDPY, HOST_CA, ROOT, BuildFn
from itest import free_port, inspect_image
from test_build_podman import secret_names, write_app

MINIMAL = "localhost/buildpy/python-311-minimal"
DEPENDENCIES = "localhost/buildpy-cache/dependencies"
SSHD = Path("/usr/sbin/sshd")


def podman_lines(*args: str) -> list[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, check=True)
    return done.stdout.split()


def found_in(archive: Path, needles: list[bytes]) -> list[str]:
    """Where any needle occurs in any file of an archive (layers, configs, manifests)."""
    found = []
    overlap = max(len(n) for n in needles)
    with tarfile.open(archive) as outer:
        for member in outer:
            handle = outer.extractfile(member) if member.isfile() else None
            tail = b""
            while handle is not None and (chunk := handle.read(1 << 22)):
                window = tail + chunk
                found += [f"{member.name}: {n[:24]!r}" for n in needles if n in window]
                tail = window[-overlap:]
    return found


def made_by(final: str, before: set[str]) -> list[str]:
    """The dependency images a build made: new since ``before``, and under ``final``."""
    layers = inspect_image(final)["RootFS"]["Layers"]
    made = []
    for image in set(podman_lines("images", "-q", "--no-trunc", DEPENDENCIES)) - before:
        own = inspect_image(image)["RootFS"]["Layers"]
        if layers[: len(own)] == own:
            made.append(image)
    return made


def test_secret_and_ca_bundle_leave_no_byte_in_any_image_the_build_made(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    """Two phases, both with the files; then `podman save` of the application image and of
    the dependency image this build created, searched byte by byte."""
    marker = f"buildpy-secret-{uuid.uuid4().hex}"
    ca_marker = f"buildpy-ca-{uuid.uuid4().hex}"
    app = tmp_path / "leak-check"
    shutil.copytree(ROOT / "examples" / "hello-flask", app)
    with open(app / "requirements.txt", "a") as handle:
        handle.write(f"# {uuid.uuid4().hex}: a dependency layer of its own\n")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"# {marker}\nflask>=2.2\n")
    bundle = tmp_path / "ca.crt"
    host_ca = HOST_CA.read_text() if HOST_CA.is_file() else ""
    bundle.write_text(f"# {ca_marker}\n{host_ca}")
    before = set(podman_lines("images", "-q", "--no-trunc", DEPENDENCIES))

    # pip fails when PIP_CONSTRAINT names a file it cannot read: success shows that the
    # dependency phase's assemble read the secret at /run/secrets/constraints.
    built = buildpy_build(
        app,
        *("--secret", f"id=constraints,src={constraints}"),
        *("--build-env", "PIP_CONSTRAINT=/run/secrets/constraints"),
        *("--ca-bundle", str(bundle)),
        builder=MINIMAL,
    )
    made = made_by(built.tag, before)
    try:
        assert '"phases": 2' in built.stderr and '"dependencies_reused": false' in built.stderr
        assert len(made) == 1, made
        archive = tmp_path / "images.tar"
        subprocess.run(
            ["podman", "save", "-q", "-m", "-o", str(archive), built.tag, *made], check=True
        )
        needles = [marker.encode(), ca_marker.encode(), constraints.read_bytes()]
        assert found_in(archive, needles) == []
        assert marker not in json.dumps([inspect_image(built.tag), inspect_image(made[0])])
    finally:
        subprocess.run(["podman", "rmi", "-f", built.tag, *made], capture_output=True)


@dataclass(frozen=True)
class Sshd:
    """An sshd on 127.0.0.1 that lets root in with ``key``; ``path`` has an ssh that trusts
    its host key (a known_hosts file of its own, so ~/.ssh is never touched)."""

    port: int
    key: Path
    path: str


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not SSHD.is_file():
        pytest.fail(f"{SSHD} is missing: run scripts/setup-host (it installs openssh-server)")
    home = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)]
        subprocess.run(keygen, check=True)
    shutil.copy(home / "client.pub", home / "authorized_keys")
    port = free_port()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home}/host\n"
        f"AuthorizedKeysFile {home}/authorized_keys\nPidFile {home}/sshd.pid\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    host_key = (home / "host.pub").read_text().split()[:2]
    (home / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
    bindir = home / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(
        f"#!/bin/sh\nexec {shutil.which('ssh')} -o UserKnownHostsFile={home}/known_hosts"
        ' -o GlobalKnownHostsFile=/dev/null "$@"\n'
    )
    (bindir / "ssh").chmod(0o755)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    config = ["-D", "-f", str(home / "sshd_config"), "-E", str(home / "sshd.log")]
    proc = subprocess.Popen([str(SSHD), *config], stdin=subprocess.DEVNULL)
    try:
        _await_port(port, proc, home / "sshd.log")
        yield Sshd(port, home / "client", f"{bindir}:{os.environ['PATH']}")
    finally:
        proc.terminate()
        proc.wait(10)


def _await_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port}: {log.read_text(errors='replace')}")


REMOTE_ASSEMBLE = """\
#!/bin/sh
set -e
echo "token-sha256=$(sha256sum < /run/secrets/token | cut -d' ' -f1)"
echo "ca-sha256=$(sha256sum < "$PIP_CERT" | cut -d' ' -f1)"
echo "client-paths-mounted=$(grep -c "$CLIENT_DIR" /proc/self/mountinfo || true)"
wheel="$BUILDPY_WHEELHOUSE/sub/demo-1.0-py3-none-any.whl"
echo "wheel-sha256=$(sha256sum < "$wheel" | cut -d' ' -f1)"
touch "$BUILDPY_WHEELHOUSE/w" 2>/dev/null && echo wheelhouse=writable || echo wheelhouse=read-only
mkdir -p "$HOME" && cp -R /tmp/src/. "$HOME/"
"""


def test_remote_build_over_ssh_gets_everything_from_the_client(
    sshd: Sshd, podman_url: str, images: list[str], tmp_path: Path
) -> None:
    """CONTAINER_HOST=ssh://root@127.0.0.1:PORT/SOCKET with CONTAINER_SSHKEY: the source,
    the CA bundle, a secret and the wheelhouse all travel through the tunnel; the working
    container mounts nothing from the client's directory (its mountinfo names no such
    path), reads the wheelhouse and cannot write it; its volume is gone afterwards."""
    client = tmp_path / "client"
    app = write_app(
        client / "app",
        {".s2i/bin/assemble": REMOTE_ASSEMBLE, ".s2i/bin/run": "#!/bin/sh\nls\n"},
    )
    token = client / "token"
    token.write_bytes(os.urandom(64))
    bundle = client / "ca.crt"
    bundle.write_bytes(HOST_CA.read_bytes() if HOST_CA.is_file() else b"# no host CA\n")
    wheel = client / "wheels" / "sub" / "demo-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(os.urandom(4096))
    tag = f"localhost/buildpy-test/remote-{uuid.uuid4().hex[:8]}:latest"
    images.append(tag)
    socket_path = podman_url[len("unix://") :]
    env = {
        **os.environ,
        "PATH": sshd.path,
        "CONTAINER_HOST": f"ssh://root@127.0.0.1:{sshd.port}{socket_path}",
        "CONTAINER_SSHKEY": str(sshd.key),
    }
    secrets_before = secret_names()
    cmd = [*BUILDPY, "build", str(app), "--tag", tag, "--builder", MINIMAL]
    cmd += ["--secret", f"id=token,src={token}", "--ca-bundle", str(bundle)]
    cmd += ["--build-env", f"CLIENT_DIR={client}", "--network", "none"]
    cmd += ["--wheelhouse", str(client / "wheels")]
    volumes_before = podman_lines("volume", "ls", "-q")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == tag
    assert f"token-sha256={hashlib.sha256(token.read_bytes()).hexdigest()}" in done.stderr
    assert f"ca-sha256={hashlib.sha256(bundle.read_bytes()).hexdigest()}" in done.stderr
    assert "client-paths-mounted=0" in done.stderr
    assert f"wheel-sha256={hashlib.sha256(wheel.read_bytes()).hexdigest()}" in done.stderr
    assert "wheelhouse=read-only" in done.stderr
    made = set(podman_lines("volume", "ls", "-q")) - set(volumes_before)
    assert not [name for name in made if name.startswith("buildpy-wheelhouse-")]
    assert inspect_image(tag)["Config"]["Labels"]["io.openshift.s2i.build.source-location"]
    assert secret_names() <= secrets_before
    tunnels = subprocess.run(["pgrep", "-f", f"ssh://root@127.0.0.1:{sshd.port}"], text=True)
    assert tunnels.returncode == 1, "the ssh tunnel outlived the build"
