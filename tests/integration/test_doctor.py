"""`buildpy doctor` on this host, with each broken condition made for real.

A broken configuration reaches only the `buildpy doctor` subprocess (CONTAINERS_CONF or
CONTAINERS_STORAGE_CONF in its environment), never this process or the host's files.
Throwaway users are made with useradd and removed with their processes and files.
Where doctor prints a fix, the test applies it and checks that doctor is then content:
the fix is exact, not just plausible.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import users

from buildpy import hostconf, service

CONFIG_VARIABLES = ("CONTAINER_HOST", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")
GOOD_ULIMITS = '"nofile=1024:1024", "nproc=1024:1024"'


@dataclass
class Diagnosis:
    returncode: int
    checks: dict[str, dict[str, Any]]
    stderr: str

    def failed(self) -> set[str]:
        return {name for name, c in self.checks.items() if c["status"] == "fail"}


def doctor(env: dict[str, str] | None = None, prefix: list[str] | None = None) -> Diagnosis:
    """`buildpy doctor --format json` with the host's environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    argv = prefix or [sys.executable, "-m", "buildpy"]
    done = subprocess.run(
        [*argv, "doctor", "--format", "json"],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    data = json.loads(done.stdout)
    assert data["status"] in ("ok", "warn", "fail")
    return Diagnosis(done.returncode, {c["name"]: c for c in data["checks"]}, done.stderr)


@pytest.fixture(autouse=True)
def no_trial_container_left() -> Iterator[None]:
    yield
    names = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout.split()
    assert not [n for n in names if n.startswith("buildpy-doctor-")]


@pytest.fixture
def private_service() -> None:
    """Config variables reach a private service only; a standing one read its own."""
    for sock in service.default_sockets(os.environ, os.getuid()):
        if service.ping_unix(sock):
            pytest.skip(f"a standing Podman service answers on {sock}; it ignores CONTAINERS_CONF")


def cgroups() -> str:
    return hostconf.cgroup_layout(Path("/proc/self/mountinfo").read_text())


def can_raise_limits() -> bool:
    status = Path("/proc/self/status").read_text()
    return os.getuid() == 0 and hostconf.has_capability(status, hostconf.CAP_SYS_RESOURCE)


# --- root ------------------------------------------------------------------------------


def test_this_host_can_build() -> None:
    found = doctor()
    assert found.returncode == 0, found.checks
    assert not found.failed()
    assert "started a trial container" in found.checks["runtime"]["message"]
    text = subprocess.run(
        [sys.executable, "-m", "buildpy", "doctor"], capture_output=True, text=True, timeout=300
    )
    assert text.returncode == 0 and "a build can work here" in text.stdout
    assert "ERROR" not in text.stderr


def test_crun_is_diagnosed_with_the_runc_fix(tmp_path: Path, private_service: None) -> None:
    if cgroups() != "hybrid" and subprocess.run(["which", "crun"], capture_output=True).stdout:
        pytest.skip("crun is installed and this host's cgroups are not hybrid: crun works here")
    conf = tmp_path / "containers.conf"
    conf.write_text(
        f'[containers]\ndefault_ulimits = [{GOOD_ULIMITS}]\n[engine]\nruntime = "crun"\n'
    )
    found = doctor({"CONTAINERS_CONF": str(conf)})
    assert found.returncode == 5
    assert "runtime" in found.failed() and found.failed() <= {"runtime", "service"}
    runtime = found.checks["runtime"]
    assert "crun" in runtime["message"]
    assert runtime["fix"].startswith(f'set runtime = "runc" under [engine] in {conf}')
    assert "buildpy doctor" in found.stderr and "ERROR: " in found.stderr

    conf.write_text(conf.read_text().replace('"crun"', '"runc"'))
    assert doctor({"CONTAINERS_CONF": str(conf)}).returncode == 0


def test_ulimits_above_the_hard_limit(tmp_path: Path, private_service: None) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    conf = tmp_path / "containers.conf"
    conf.write_text(
        f'[containers]\ndefault_ulimits = ["nofile={hard + 1}:{hard + 1}", "nproc=1024:1024"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    found = doctor({"CONTAINERS_CONF": str(conf)})
    ulimits = found.checks["ulimits"]
    if can_raise_limits():  # Podman may then go above the hard limit, and doctor agrees
        assert ulimits["status"] == "ok" and found.returncode == 0
        return
    assert found.returncode == 5 and found.failed() == {"ulimits"}
    assert f"nofile {hard + 1} > {hard}" in ulimits["message"]
    assert "a trial container failed" in ulimits["message"]  # the real run, not only the file
    fitted = min(hard, 1048576)
    assert ulimits["fix"] == (
        f'set default_ulimits = ["nofile={fitted}:{fitted}", "nproc=1024:1024"] under'
        f" [containers] in {conf}"
    )

    values = re.search(r"default_ulimits = \[.*?\]", ulimits["fix"])
    assert values
    conf.write_text(f'[containers]\n{values.group(0)}\n[engine]\nruntime = "runc"\n')
    assert doctor({"CONTAINERS_CONF": str(conf)}).returncode == 0


def test_storage_conf_without_roots(tmp_path: Path, private_service: None) -> None:
    storage = tmp_path / "storage.conf"
    storage.write_text('[storage]\ndriver = "overlay"\n')
    found = doctor({"CONTAINERS_STORAGE_CONF": str(storage)})
    assert found.returncode == 5
    check = found.checks["storage-conf"]
    assert check["status"] == "fail" and "runroot must be set" in check["message"]
    assert check["fix"].startswith(f"add under [storage] in {storage}: runroot = ")
    assert found.checks["podman"]["fix"] == "fix what the `storage-conf` check says"

    for key, value in re.findall(r'(\w+) = "([^"]+)"', check["fix"]):
        storage.write_text(storage.read_text() + f'{key} = "{value}"\n')
    fixed = doctor({"CONTAINERS_STORAGE_CONF": str(storage)})
    assert fixed.returncode == 0 and fixed.checks["storage-conf"]["status"] == "ok"


# --- a rootless user -------------------------------------------------------------------


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    """A user with a home and no subordinate ids; gone afterwards, with all it left."""
    with users.throwaway(subordinate_ids=False) as name:
        yield name


def test_a_user_without_subordinate_ids(throwaway_user: str) -> None:
    name = throwaway_user
    found = doctor(prefix=users.as_user(name))
    assert found.returncode == 5 and found.failed() == {"subids"}
    subids = found.checks["subids"]
    assert f"no range for {name} in /etc/subuid and /etc/subgid" in subids["message"]
    for rootless_only in ("idmap-tools", "rootless-network"):
        assert rootless_only in found.checks
    assert found.checks["rootless-network"]["status"] in ("ok", "warn")  # never a failure

    usermod, migrate = re.findall(r"`([^`]+)`", subids["fix"])
    subprocess.run(usermod.split(), check=True, capture_output=True)
    subprocess.run(
        [*users.user_shell(name), *migrate.split()], check=True, capture_output=True, cwd="/"
    )
    fixed = doctor(prefix=users.as_user(name))
    assert fixed.returncode == 0, fixed.checks
    assert fixed.checks["subids"]["status"] == "ok"
