"""`buildpy doctor`: each check's rules, fed by a fake host (no Podman, no real files)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildpy import doctor, hostchecks, hostconf
from buildpy.errors import EngineUnavailable
from buildpy.hostchecks import Check, Ran

GiB = 1 << 30
HYBRID = (
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)
UNIFIED = "30 23 0:27 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"
NO_CAP_SYS_RESOURCE = "Name:\tpython\nCapEff:\t000001fffeffffff\n"
ALL_CAPS = "CapEff:\t000001ffffffffff\n"
DROPIN = "/etc/containers/containers.conf.d/50-buildpy.conf"
GOOD_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""


def info(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "host": {"ociRuntime": {"name": "runc"}, "security": {"rootless": False}},
        "store": {"graphDriverName": "overlay", "graphRoot": "/var/lib/containers/storage"},
        "version": {"APIVersion": "4.3.1"},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        data[section][name] = value
    return data


@dataclass
class FakeHost:
    """A host made of dictionaries; records the commands doctor ran."""

    env: dict[str, str] = field(default_factory=dict)
    uid: int = 0
    user: str = "root"
    home: Path = Path("/root")
    files: dict[str, str] = field(
        default_factory=lambda: {
            DROPIN: GOOD_CONF,
            "/proc/self/mountinfo": HYBRID,
            "/proc/self/status": NO_CAP_SYS_RESOURCE,
            "/etc/subuid": "",
            "/etc/subgid": "",
        }
    )
    programs: dict[str, str] = field(
        default_factory=lambda: {
            n: f"/usr/bin/{n}" for n in ("podman", "runc", "newuidmap", "newgidmap", "slirp4netns")
        }
    )
    unprivileged: set[str] = field(default_factory=set)
    limits: dict[str, int | None] = field(default_factory=lambda: {"nofile": 20000, "nproc": 96369})
    free: int | None = 200 * GiB
    tun_error: str | None = None
    url: str = "unix:///tmp/buildpy-podman-x/podman.sock"
    connect_error: str | None = None
    version: str = "podman version 4.3.1\n"
    info: dict[str, Any] | None = field(default_factory=info)
    images: str = "localhost/buildpy/python-311:latest\nlocalhost/buildpy/base-bookworm:latest\n"
    trial: Ran = field(default_factory=lambda: Ran(0))
    calls: list[list[str]] = field(default_factory=list)

    def run(self, argv: Any, timeout: float) -> Ran:
        argv = list(argv)
        self.calls.append(argv)
        if argv[1:] == ["--version"]:
            return Ran(0, self.version) if "podman" in self.programs else Ran(127)
        verb = argv[3]
        if verb == "info":
            return Ran(0, json.dumps(self.info)) if self.info else Ran(125, "", "Error: no info")
        if verb == "images":
            return Ran(0, self.images)
        if verb == "run":
            return self.trial
        return Ran(0)

    def read(self, path: Path) -> str | None:
        return self.files.get(str(path))

    def listdir(self, path: Path) -> list[str]:
        prefix = f"{path}/"
        return [f[len(prefix) :] for f in self.files if f.startswith(prefix)]

    def which(self, name: str) -> str | None:
        return self.programs.get(name)

    def privileged(self, path: str) -> bool:
        return path not in self.unprivileged

    def hard_limit(self, name: str) -> int | None:
        return self.limits.get(name)

    def free_bytes(self, path: Path) -> int | None:
        return self.free

    def open_error(self, path: Path) -> str | None:
        return self.tun_error

    @contextmanager
    def _connect(self) -> Iterator[str]:
        if self.connect_error:
            raise EngineUnavailable(self.connect_error, "hint")
        yield self.url

    def connect(self) -> Any:
        return self._connect()


def rootless(**kwargs: Any) -> FakeHost:
    host = FakeHost(uid=1001, user="alice", home=Path("/home/alice"), **kwargs)
    del host.files[DROPIN]
    host.files["/home/alice/.config/containers/containers.conf.d/50-buildpy.conf"] = GOOD_CONF
    host.files["/etc/subuid"] = host.files["/etc/subgid"] = "alice:100000:65536\n"
    host.info = info(
        host__security={"rootless": True},
        store__graphRoot="/home/alice/.local/share/containers/storage",
    )
    host.images = ""
    return host


def by_name(host: FakeHost) -> dict[str, Check]:
    return {c.name: c for c in doctor.diagnose(host)}


# --- a healthy host --------------------------------------------------------------------


def test_a_healthy_root_host_passes_every_check() -> None:
    checks = doctor.diagnose(FakeHost())
    assert [c.name for c in checks] == [
        "podman",
        "containers-conf",
        "storage-conf",
        "service",
        "runtime",
        "ulimits",
        "storage-driver",
        "disk-space",
        "builders",
    ]
    assert {c.status for c in checks} == {"ok"}, [c for c in checks if c.status != "ok"]
    assert doctor.worst(checks) == "ok"


def test_the_trial_container_runs_true_without_network_from_the_default_builder() -> None:
    host = FakeHost()
    checks = by_name(host)
    run = next(c for c in host.calls if "run" in c)
    assert run[:3] == ["podman", "--url", host.url]
    assert run[-3:] == ["--entrypoint", "true", "localhost/buildpy/python-311"]
    assert run[run.index("--network") : run.index("--network") + 2] == ["--network", "none"]
    assert "--rm" in run and run[run.index("--pull") :][:2] == ["--pull", "never"]
    assert "started a trial container" in checks["runtime"].message
    assert not any("rm" in c[3:4] for c in host.calls)  # --rm did the removal


def test_a_failed_trial_container_is_removed_by_name() -> None:
    host = FakeHost(trial=Ran(126, "", "Error: something odd"))
    by_name(host)
    run = next(c for c in host.calls if c[3:4] == ["run"])
    name = run[run.index("--name") + 1]
    assert ["podman", "--url", host.url, "rm", "-f", "--ignore", name] in host.calls


def test_a_healthy_rootless_host_adds_the_rootless_checks() -> None:
    checks = by_name(rootless())
    assert list(checks)[-4:] == ["subids", "idmap-tools", "rootless-network", "builders"]
    assert checks["subids"].status == "ok"
    assert checks["builders"].status == "warn"  # rootless storage is the user's own
    assert checks["runtime"].status == "ok" and "no buildpy image" in checks["runtime"].message
    assert doctor.worst(checks.values()) == "warn"


# --- Podman and its service --------------------------------------------------------------


def test_missing_podman_fails_and_skips_what_needs_it() -> None:
    host = FakeHost()
    del host.programs["podman"]
    checks = by_name(host)
    assert checks["podman"].status == "fail"
    assert "apt-get install podman" in (checks["podman"].fix or "")
    assert "service" not in checks and "builders" not in checks
    assert not any(c[1:2] == ["--url"] for c in host.calls)


@pytest.mark.parametrize(
    ("version", "status"), [("3.4.4", "fail"), ("4.0.0", "ok"), ("5.2.1", "ok")]
)
def test_podman_version(version: str, status: str) -> None:
    assert by_name(FakeHost(version=f"podman version {version}\n"))["podman"].status == status


def test_old_service_api_fails() -> None:
    checks = by_name(FakeHost(info=info(version__APIVersion="3.4.2")))
    assert checks["service"].status == "fail" and "3.4.2" in checks["service"].message


def test_service_that_cannot_start_fails_and_names_the_check_that_knows_why() -> None:
    host = FakeHost(
        connect_error="`podman system service` exited with status 125: Error:"
        ' default OCI runtime "crun" not found: invalid argument'
    )
    checks = by_name(host)
    assert checks["service"].status == "fail"
    assert checks["service"].fix == "fix what the `runtime` check says"
    assert checks["runtime"].status == "fail"
    assert "crun is configured but not installed" in checks["runtime"].message
    assert checks["runtime"].fix == f'set runtime = "runc" under [engine] in {DROPIN}'
    assert "storage-driver" not in checks and "builders" not in checks


def test_a_missing_runtime_elsewhere_may_be_installed_instead() -> None:
    host = FakeHost(connect_error='Error: default OCI runtime "kata" not found: invalid argument')
    host.files["/proc/self/mountinfo"] = UNIFIED
    check = by_name(host)["runtime"]
    assert check.status == "fail" and "kata is not installed" in check.message
    assert (check.fix or "").startswith("install kata, or set runtime")


def test_podman_that_cannot_even_say_its_version_points_at_the_cause() -> None:
    host = FakeHost(env={"CONTAINERS_STORAGE_CONF": "/tmp/s.conf"})
    host.files["/tmp/s.conf"] = '[storage]\ndriver = "overlay"\n'
    host.version = ""
    real_run = host.run

    def run(argv: Any, timeout: float) -> Ran:
        if list(argv)[1:] == ["--version"]:
            return Ran(125, "", "Failed to obtain podman configuration: runroot must be set\n")
        return real_run(argv, timeout)

    host.run = run  # type: ignore[method-assign]
    checks = by_name(host)
    assert checks["podman"].status == "fail" and "runroot must be set" in checks["podman"].message
    assert checks["podman"].fix == "fix what the `storage-conf` check says"
    assert checks["storage-conf"].status == "fail"


def test_a_service_whose_info_fails_says_so() -> None:
    host = FakeHost(info=None)
    check = by_name(host)["service"]
    assert check.status == "fail" and "`podman info` fails: no info" in check.message


def test_container_host_that_does_not_answer() -> None:
    host = FakeHost(env={"CONTAINER_HOST": "unix:///nowhere.sock"}, connect_error="no answer")
    check = by_name(host)["service"]
    assert check.status == "fail" and "unset CONTAINER_HOST" in (check.fix or "")


def test_a_standing_service_does_not_see_config_variables_set_here() -> None:
    host = FakeHost(env={"CONTAINERS_CONF": "/tmp/c.conf"}, url="unix:///run/podman/podman.sock")
    host.files["/tmp/c.conf"] = GOOD_CONF
    check = by_name(host)["service"]
    assert check.status == "warn" and "CONTAINERS_CONF" in check.message


def test_private_service_is_reported_as_such() -> None:
    assert "private `podman system service`" in by_name(FakeHost())["service"].message


# --- the OCI runtime ---------------------------------------------------------------------


def test_crun_on_hybrid_cgroups_fails_with_the_runc_fix() -> None:
    host = FakeHost(
        trial=Ran(126, "", "Error: OCI runtime error: crun: cgroups in hybrid mode not supported")
    )
    host.info = info(host__ociRuntime={"name": "crun"})
    check = by_name(host)["runtime"]
    assert check.status == "fail"
    assert "hybrid" in check.message and "cgroups in hybrid mode not supported" in check.message
    assert check.fix == f'set runtime = "runc" under [engine] in {DROPIN}'


def test_crun_on_hybrid_cgroups_is_caught_without_a_trial_container() -> None:
    host = FakeHost(images="")
    host.info = info(host__ociRuntime={"name": "crun"})
    check = by_name(host)["runtime"]
    assert check.status == "fail" and "crun 1.8 fails there" in check.message


def test_the_runtime_check_quotes_only_podmans_words_about_the_runtime() -> None:
    host = FakeHost(trial=Ran(126, "", "Error: crun: setrlimit `RLIMIT_NOFILE`: Operation"))
    host.info = info(host__ociRuntime={"name": "crun"})
    checks = by_name(host)
    assert checks["runtime"].status == "fail" and "RLIMIT" not in checks["runtime"].message
    assert checks["ulimits"].status == "fail"


def test_crun_on_unified_cgroups_is_fine() -> None:
    host = FakeHost()
    host.files["/proc/self/mountinfo"] = UNIFIED
    host.info = info(host__ociRuntime={"name": "crun"})
    assert by_name(host)["runtime"].status == "ok"


def test_runtime_fix_goes_to_containers_conf_and_names_missing_runc() -> None:
    host = FakeHost(env={"CONTAINERS_CONF": "/tmp/t/containers.conf"})
    host.files["/tmp/t/containers.conf"] = '[engine]\nruntime = "crun"\n'
    host.info = info(host__ociRuntime={"name": "crun"})
    del host.programs["runc"]
    check = by_name(host)["runtime"]
    assert check.fix == (
        'set runtime = "runc" under [engine] in /tmp/t/containers.conf'
        " and install runc (`apt-get install runc`)"
    )


def test_a_trial_failing_otherwise_fails_with_podmans_words() -> None:
    host = FakeHost(trial=Ran(127, "", "Error: something unexpected happened"))
    check = by_name(host)["runtime"]
    assert check.status == "fail" and "something unexpected happened" in check.message
    assert "podman run --rm --network none" in (check.fix or "")


# --- ulimits -----------------------------------------------------------------------------


def test_configured_ulimits_above_the_hard_limit_fail_with_values_that_fit() -> None:
    host = FakeHost()
    host.files[DROPIN] = GOOD_CONF.replace("nofile=20000:20000", "nofile=1048576:1048576")
    check = by_name(host)["ulimits"]
    assert check.status == "fail" and "nofile 1048576 > 20000" in check.message
    assert check.fix == (
        'set default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"] under [containers]'
        f" in {DROPIN}"
    )


def test_unset_ulimits_mean_podmans_default_for_root() -> None:
    host = FakeHost()
    host.files[DROPIN] = '[engine]\nruntime = "runc"\n'
    check = by_name(host)["ulimits"]
    assert check.status == "fail"
    assert "nofile 1048576 > 20000" in check.message and "nproc 1048576 > 96369" in check.message
    assert '"nofile=20000:20000", "nproc=4096:4096"' in (check.fix or "")


def test_root_with_cap_sys_resource_may_go_above_the_hard_limit() -> None:
    host = FakeHost()
    host.files[DROPIN] = '[engine]\nruntime = "runc"\n'
    host.files["/proc/self/status"] = ALL_CAPS
    check = by_name(host)["ulimits"]
    assert check.status == "ok" and "CAP_SYS_RESOURCE" in check.message


def test_rootless_unset_ulimits_follow_the_users_own() -> None:
    host = rootless()
    host.files = {k: v for k, v in host.files.items() if "50-buildpy" not in k}
    assert by_name(host)["ulimits"].status == "ok"


def test_rootless_ulimit_fix_goes_to_the_users_drop_in() -> None:
    host = rootless()
    host.files["/etc/containers/containers.conf"] = (
        '[containers]\ndefault_ulimits = ["nofile=65536:65536"]\n'
    )
    del host.files["/home/alice/.config/containers/containers.conf.d/50-buildpy.conf"]
    check = by_name(host)["ulimits"]
    assert check.status == "fail"
    assert (check.fix or "").endswith(
        "in /home/alice/.config/containers/containers.conf.d/50-buildpy.conf"
    )


@pytest.mark.parametrize(
    "said",
    [
        "Error: preparing container 15eb71 for attach: crun: setrlimit `RLIMIT_NOFILE`:"
        " Operation not permitted: OCI permission denied",
        "Error: preparing container 15eb71 for attach: runc: runc create failed: unable to start"
        " container process: error during container init: error setting rlimits for ready"
        " process: error setting rlimit type 7: operation not permitted",
    ],
)
def test_a_trial_stopped_by_setrlimit_fails_the_ulimits_check(said: str) -> None:
    host = FakeHost(trial=Ran(126, "", said))
    host.limits["nofile"] = None  # what the process sees may differ from the service's
    checks = by_name(host)
    assert checks["ulimits"].status == "fail" and "rlimit" in checks["ulimits"].message.lower()
    assert "preparing container" not in checks["ulimits"].message
    assert checks["ulimits"].fix == (
        'set default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"] under [containers]'
        f" in {DROPIN}"
    )
    assert checks["runtime"].status == "ok"


# --- storage -----------------------------------------------------------------------------


def test_storage_conf_without_runroot_fails_with_podmans_defaults_as_the_fix() -> None:
    host = FakeHost(env={"CONTAINERS_STORAGE_CONF": "/tmp/s/storage.conf"}, info=None)
    host.files["/tmp/s/storage.conf"] = '[storage]\ndriver = "overlay"\n'
    check = by_name(host)["storage-conf"]
    assert check.status == "fail" and "runroot must be set" in check.message
    assert check.fix == (
        'add under [storage] in /tmp/s/storage.conf: runroot = "/run/containers/storage"'
        ' graphroot = "/var/lib/containers/storage" (Podman\'s defaults for this user),'
        " or remove the file"
    )


def test_rootless_user_storage_conf_without_roots() -> None:
    host = rootless()
    host.files["/home/alice/.config/containers/storage.conf"] = '[storage]\ndriver = "overlay"\n'
    check = by_name(host)["storage-conf"]
    assert check.status == "fail"
    assert 'runroot = "/tmp/podman-run-1001/containers"' in (check.fix or "")
    assert 'graphroot = "/home/alice/.local/share/containers/storage"' in (check.fix or "")


def test_rootless_ignores_the_system_storage_conf_roots() -> None:
    host = rootless()
    host.files["/etc/containers/storage.conf"] = '[storage]\ndriver = "overlay"\n'
    assert by_name(host)["storage-conf"].status == "ok"


def test_named_storage_conf_that_does_not_exist_fails() -> None:
    check = by_name(FakeHost(env={"CONTAINERS_STORAGE_CONF": "/nope.conf"}))["storage-conf"]
    assert check.status == "fail" and "/nope.conf" in check.message


def test_vfs_warns_with_the_overlay_fix() -> None:
    host = rootless()
    assert host.info is not None
    host.info["store"].update(graphDriverName="vfs", imageStore={"number": 2})
    check = by_name(host)["storage-driver"]
    assert check.status == "warn"
    assert check.fix == (
        'set driver = "overlay", runroot = "/tmp/podman-run-1001/containers" and graphroot ='
        ' "/home/alice/.local/share/containers/storage" under [storage] in'
        " /home/alice/.config/containers/storage.conf (fuse-overlayfs is needed on kernels"
        " before 5.13), then `podman system reset` (it removes this user's 2 images and 0"
        " containers): Podman keeps the driver its storage was made with"
    )


def test_vfs_kept_from_before_storage_conf_asked_for_overlay() -> None:
    host = rootless()
    host.files["/home/alice/.config/containers/storage.conf"] = (
        '[storage]\ndriver = "overlay"\nrunroot = "/r"\ngraphroot = "/g"\n'
    )
    host.info = info(store__graphDriverName="vfs", host__security={"rootless": True})
    check = by_name(host)["storage-driver"]
    assert check.status == "warn" and "asks for overlay" in check.message
    assert (check.fix or "").startswith("`podman system reset` (nothing is lost: there are no")


@pytest.mark.parametrize(
    ("free", "status"), [(GiB // 2, "fail"), (3 * GiB, "warn"), (6 * GiB, "ok")]
)
def test_disk_space_thresholds(free: int, status: str) -> None:
    check = by_name(FakeHost(free=free))["disk-space"]
    assert check.status == status and "/var/lib/containers/storage" in check.message


def test_disk_space_is_not_measured_for_a_remote_service() -> None:
    host = FakeHost(env={"CONTAINER_HOST": "ssh://core@box/run/podman.sock"}, url="ssh://x")
    assert "disk-space" not in by_name(host)


# --- rootless ----------------------------------------------------------------------------


def test_no_subid_range_fails_with_a_free_range_to_add() -> None:
    host = rootless()
    host.files["/etc/subuid"] = "bob:100000:65536\n"
    host.files["/etc/subgid"] = "alice:100000:65536\nbob:165536:65536\n"
    check = by_name(host)["subids"]
    assert check.status == "fail" and "/etc/subuid" in check.message
    assert "/etc/subgid" not in check.message
    assert check.fix == (
        "as root: `usermod --add-subuids 231072-296607 --add-subgids 231072-296607 alice`,"
        " then as alice: `podman system migrate`"
    )


def test_subids_found_by_uid_and_a_small_range_warns() -> None:
    host = rootless()
    host.files["/etc/subuid"] = host.files["/etc/subgid"] = "1001:100000:2000\n"
    assert by_name(host)["subids"].status == "warn"


def test_missing_or_unprivileged_idmap_tools_fail() -> None:
    host = rootless()
    del host.programs["newgidmap"]
    check = by_name(host)["idmap-tools"]
    assert check.status == "fail" and "newgidmap" in check.message
    assert "apt-get install uidmap" in (check.fix or "")
    host = rootless(unprivileged={"/usr/bin/newuidmap"})
    check = by_name(host)["idmap-tools"]
    assert check.status == "fail" and "chmod u+s /usr/bin/newuidmap" in (check.fix or "")


def test_unusable_tun_is_a_warning_naming_the_networks_that_still_work() -> None:
    check = by_name(rootless(tun_error="Permission denied"))["rootless-network"]
    assert check.status == "warn"
    assert "Permission denied" in check.message and "--network host" in check.message
    assert "chmod 0666 /dev/net/tun" in (check.fix or "")


# --- builders ----------------------------------------------------------------------------


def test_missing_default_builder_warns_with_the_command_to_build_it() -> None:
    host = FakeHost(images="localhost/buildpy/base-bookworm:latest\n")
    checks = by_name(host)
    assert checks["builders"].status == "warn"
    assert checks["builders"].fix == "`buildpy builder build python-311`"
    assert "base-bookworm" in checks["runtime"].message  # the trial used the base image


def test_missing_base_image_too_names_make_base_image() -> None:
    fix = by_name(FakeHost(images=""))["builders"].fix or ""
    assert "scripts/make-base-image --suite bookworm" in fix and "podman load" in fix


# --- output and shared knowledge -------------------------------------------------------


def test_report_is_json_with_name_status_message_fix() -> None:
    host = rootless(tun_error="Permission denied")
    checks = doctor.diagnose(host)
    data = json.loads(json.dumps(doctor.report(checks)))
    assert data["status"] == "warn"
    assert all(set(c) == {"name", "status", "message", "fix"} for c in data["checks"])
    assert {c["status"] for c in data["checks"]} <= {"ok", "warn", "fail"}


def test_render_puts_each_fix_under_its_problem_and_ends_with_a_verdict() -> None:
    checks = [Check("a", "ok", "fine"), Check("bbb", "fail", "broken", "mend it")]
    assert doctor.render(checks) == (
        "ok    a    fine\n"
        "FAIL  bbb  broken\n"
        "           fix: mend it\n"
        "1 failed, 0 warnings, 1 ok: a build cannot work here\n"
    )


def test_doctor_knows_every_host_setting_the_build_hints_at() -> None:
    from buildpy import podman

    for needle, hint in podman._HOST_SETTING_HINTS:
        assert hostchecks.cause(needle), needle
        assert "buildpy doctor" in hint


def test_podman_error_keeps_podmans_words() -> None:
    ran = Ran(125, "", 'time="x" level=error msg="stat /x: no such file"\n')
    assert hostchecks.podman_error(ran) == '"stat /x: no such file"'
    assert hostchecks.podman_error(Ran(3)) == "exit status 3"


# --- hostconf: the parsing under the checks -----------------------------------------------


def test_containers_conf_order_and_override(tmp_path: Path) -> None:
    files = {
        "/usr/share/containers/containers.conf": '[engine]\nruntime = "crun"\n',
        "/etc/containers/containers.conf.d/10-a.conf": '[engine]\nruntime = "runc"\n',
        "/etc/containers/containers.conf.d/20-b.conf": "[containers]\nx = 1\n",
        "/etc/containers/containers.conf.d/notes.txt": "not toml",
        "/home/u/.config/containers/containers.conf.d/1.conf": '[engine]\nruntime = "kata"\n',
    }
    host = FakeHost(files=files)
    paths = hostconf.containers_conf_paths({}, True, Path("/home/u"), host.listdir)
    conf = hostconf.load_containers_conf(paths, host.read)
    assert [p.name for p in conf.files] == ["containers.conf", "10-a.conf", "20-b.conf", "1.conf"]
    setting = conf.get("engine", "runtime")
    assert setting is not None and setting.value == "kata"
    as_root = hostconf.load_containers_conf(
        hostconf.containers_conf_paths({}, False, Path("/root"), host.listdir), host.read
    )
    assert as_root.get("engine", "runtime") == hostconf.Setting(
        "runc", Path("/etc/containers/containers.conf.d/10-a.conf")
    )


def test_containers_conf_env_replaces_every_other_file() -> None:
    env = {"CONTAINERS_CONF": "/tmp/only.conf", "XDG_CONFIG_HOME": "/x"}
    paths = hostconf.containers_conf_paths(env, True, Path("/h"), lambda p: ["a.conf"])
    assert paths == [Path("/tmp/only.conf")]


def test_bad_toml_in_containers_conf_fails_naming_the_file() -> None:
    host = FakeHost()
    host.files[DROPIN] = "[containers]\ndefault_ulimits = = 1\n"
    check = by_name(host)["containers-conf"]
    assert check.status == "fail" and DROPIN in check.message and "line" in check.message


@given(
    st.sampled_from(["nofile", "nproc", "core"]),
    st.integers(min_value=-1, max_value=1 << 40),
    st.integers(min_value=-1, max_value=1 << 40),
)
def test_ulimit_round_trip(name: str, soft: int, hard: int) -> None:
    parsed = hostconf.parse_ulimit(f"{name}={soft}:{hard}")
    assert parsed == hostconf.Ulimit(name, soft, hard)
    assert hostconf.parse_ulimit(str(parsed)) == parsed
    assert hostconf.parse_ulimit(f"{name}={soft}") == hostconf.Ulimit(name, soft, soft)


@pytest.mark.parametrize("bad", ["nofile", "nofile=", "=5", "nofile=a:b", "nofile=1:x"])
def test_ulimit_that_does_not_parse(bad: str) -> None:
    assert hostconf.parse_ulimit(bad) is None


@given(st.integers(min_value=-1, max_value=1 << 40), st.one_of(st.none(), st.integers(0, 1 << 40)))
def test_exceeds(wanted: int, limit: int | None) -> None:
    expected = limit is not None and (wanted == -1 or wanted > limit)
    assert hostconf.exceeds(wanted, limit) is expected


@pytest.mark.parametrize(
    ("mountinfo", "layout"),
    [(HYBRID, "hybrid"), (UNIFIED, "v2"), (HYBRID.splitlines()[0], "v1"), ("", "unknown")],
)
def test_cgroup_layout(mountinfo: str, layout: str) -> None:
    assert hostconf.cgroup_layout(mountinfo) == layout
