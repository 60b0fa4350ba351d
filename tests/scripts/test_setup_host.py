"""scripts/setup-host's package step, run with --dry-run against made-up hosts.

No RHEL or Fedora host is at hand, so the dnf path is checked in pieces: a fake
/etc/os-release (OS_RELEASE), a fake cgroup file system type (CGROUP_FS), and ``rpm`` and
``dpkg-query`` replaced by commands that find nothing installed, so every package is
missing and the script says the whole command it would run. Nothing is installed or
written: --dry-run stops after the package step.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SETUP_HOST = Path(__file__).resolve().parents[2] / "scripts" / "setup-host"

RHEL_9 = 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n'
RHEL_10 = 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="centos fedora"\nVERSION_ID="10.0"\n'
FEDORA = 'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=41\n'
CENTOS_STREAM = 'NAME="CentOS Stream"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="9"\n'
ROCKY = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n'

DNF_BASE = "dnf install -y -q podman buildah {runtime} fuse-overlayfs slirp4netns shadow-utils curl"


def dry_run(tmp_path: Path, os_release: str, cgroup_fs: str) -> list[str]:
    """The lines setup-host says (on stderr) for this host, with nothing installed."""
    (tmp_path / "os-release").write_text(os_release)
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name in ("rpm", "dpkg-query"):
        (fakes / name).write_text("#!/bin/sh\nexit 1\n")
        (fakes / name).chmod(0o755)
    env = {
        "PATH": f"{fakes}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OS_RELEASE": str(tmp_path / "os-release"),
        "CGROUP_FS": cgroup_fs,
    }
    done = subprocess.run(
        [str(SETUP_HOST), "--dry-run"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    return [line.removeprefix("setup: ") for line in done.stderr.splitlines()]


@pytest.mark.parametrize("os_release", [RHEL_9, RHEL_10, FEDORA, CENTOS_STREAM, ROCKY])
def test_dnf_hosts_with_cgroup_v2_get_crun(tmp_path: Path, os_release: str) -> None:
    said = dry_run(tmp_path, os_release, "cgroup2fs")
    assert "would run: " + DNF_BASE.format(runtime="crun") in said
    assert any('would write runtime = "crun"' in line for line in said)


def test_dnf_hosts_with_hybrid_cgroups_keep_runc(tmp_path: Path) -> None:
    said = dry_run(tmp_path, RHEL_9, "tmpfs")
    assert "would run: " + DNF_BASE.format(runtime="runc") in said
    assert any('runtime = "runc"' in line for line in said)


def test_epel_packages_are_installed_one_by_one(tmp_path: Path) -> None:
    """debootstrap and ShellCheck may be missing from a RHEL host's repositories: each is tried
    alone so that the rest of the set-up does not depend on them."""
    said = dry_run(tmp_path, RHEL_9, "cgroup2fs")
    assert "would run: dnf install -y -q debootstrap" in said
    assert "would run: dnf install -y -q ShellCheck" in said
    assert not any(line.startswith("would run: apt-get") for line in said)


@pytest.mark.parametrize("os_release", [DEBIAN, UBUNTU])
@pytest.mark.parametrize("cgroup_fs", ["tmpfs", "cgroup2fs"])
def test_apt_hosts_keep_debian_names_and_runc(
    tmp_path: Path, os_release: str, cgroup_fs: str
) -> None:
    said = dry_run(tmp_path, os_release, cgroup_fs)
    assert "would run: apt-get update -qq" in said
    install = [line for line in said if "apt-get install" in line]
    assert install == [
        "would run: env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah"
        " runc fuse-overlayfs slirp4netns uidmap debootstrap containernetworking-plugins curl"
        " shellcheck openssh-client openssh-server skopeo docker-registry"
    ]
    assert not any("dnf" in line for line in said)
    assert any('runtime = "runc"' in line for line in said)


def test_unknown_argument_is_refused() -> None:
    done = subprocess.run([str(SETUP_HOST), "--dryrun"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "unknown argument: --dryrun" in done.stderr
