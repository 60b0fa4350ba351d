"""The checks of `buildpy doctor`: each a small function from what was seen to a ``Check``.

What they look at arrives as arguments or through a ``Host`` (this machine, or a fake
in tests); ``doctor`` gathers it and runs them in order. Fixes name the file to edit
(see ``hostconf.target_for``) and values that fit this host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from buildpy import builders, hostconf
from buildpy.config import DEFAULT_BUILDER
from buildpy.hostconf import ContainersConf, StorageConf

Status = Literal["ok", "warn", "fail"]
MIN_PODMAN = (4, 0)  # the libpod API as Podman 4 serves it; 4.3.1 is what buildpy is tested on
DISK_WARN = 5 << 30
DISK_FAIL = 1 << 30
PODMAN_DEFAULT_ULIMIT = 1048576  # Podman 4's nofile and nproc for root when none is configured


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, how it stands, what was seen, what to do."""

    name: str
    status: Status
    message: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "status": self.status, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Ran:
    """What a command did (returncode 127: not found, 124: timed out)."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


class Host(Protocol):
    """What doctor may look at. ``LocalHost`` is this machine."""

    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def uid(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def home(self) -> Path: ...

    def run(self, argv: Sequence[str], timeout: float) -> Ran: ...
    def read(self, path: Path) -> str | None: ...
    def listdir(self, path: Path) -> list[str]: ...
    def which(self, name: str) -> str | None: ...
    def privileged(self, path: str) -> bool: ...
    def hard_limit(self, name: str) -> int | None: ...
    def free_bytes(self, path: Path) -> int | None: ...
    def open_error(self, path: Path) -> str | None: ...
    def connect(self) -> AbstractContextManager[str]: ...


@dataclass(frozen=True)
class Trial:
    """A trivial container run through the service (error None: it ran)."""

    image: str
    error: str | None = None


@dataclass(frozen=True)
class Service:
    """What the Podman service a build would use said."""

    url: str | None
    how: str  # "CONTAINER_HOST", "socket" or "private"
    error: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    info_error: str | None = None
    images: frozenset[str] = frozenset()
    trial: Trial | None = None


def podman_error(ran: Ran) -> str:
    """Podman's own words from a failed command: its last error lines."""
    lines = [line.strip() for line in ran.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line or "level=error" in line] or lines
    text = " | ".join(errors[-3:]) or f"exit status {ran.returncode}"
    text = re.sub(r"preparing container [0-9a-f]+ for attach: ", "", text)
    return re.sub(r'^Error: |time="[^"]*" level=error msg=', "", text)


def _tags(images: Iterable[str]) -> set[str]:
    return {i[: -len(":latest")] if i.endswith(":latest") else i for i in images}


def trial_image(images: Iterable[str]) -> str | None:
    """An image of buildpy's own (known to have /bin/true) for the trial container."""
    present = _tags(images)
    wanted = [DEFAULT_BUILDER, *(b.tag for b in builders.BUILDERS.values())]
    wanted += sorted({b.base for b in builders.BUILDERS.values()})
    return next((ref for ref in wanted if ref in present), None)


# --- what a Podman error means -----------------------------------------------------------

_CAUSES = (
    ("cgroups in hybrid mode not supported", "runtime"),
    ("default OCI runtime", "runtime"),
    ("RLIMIT_", "ulimits"),
    ("setrlimit", "ulimits"),
    ("error setting rlimit", "ulimits"),  # runc's words: "error setting rlimit type 7"
    ("runroot must be set", "storage-conf"),
    ("graphroot must be set", "storage-conf"),
)


def cause(message: str | None) -> str | None:
    """The check that owns a Podman error, when doctor knows it."""
    for needle, owner in _CAUSES:
        if message and needle in message:
            return owner
    return None


# --- the checks --------------------------------------------------------------------------


def podman(path: str | None, version: Ran) -> Check:
    if path is None:
        return Check(
            "podman",
            "fail",
            "Podman is not installed (no `podman` on PATH); checks that need it were skipped",
            "install Podman 4 or newer (Debian/Ubuntu: `apt-get install podman runc uidmap"
            " slirp4netns fuse-overlayfs`; RHEL/Fedora: `dnf install podman`)",
        )
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", version.stdout)
    if version.returncode != 0 or not found:
        said = podman_error(version)
        owner = cause(said)
        return Check(
            "podman",
            "fail",
            f"`{path} --version` failed, so no Podman command can work: {said}",
            f"fix what the `{owner}` check says"
            if owner
            else "reinstall Podman; `podman info` shows what it needs",
        )
    number = found.group(0)
    if (int(found.group(1)), int(found.group(2))) < MIN_PODMAN:
        return Check(
            "podman",
            "fail",
            f"Podman {number} at {path} is too old: buildpy drives the libpod API of Podman"
            f" {MIN_PODMAN[0]}.{MIN_PODMAN[1]} or newer",
            "install Podman 4 or newer (Debian 12 and Ubuntu 24.04 ship 4.x; RHEL 8.6+ and 9 do"
            " too) or point CONTAINER_HOST at a newer Podman service",
        )
    return Check("podman", "ok", f"Podman {number} at {path}")


def containers_conf(conf: ContainersConf) -> Check:
    if conf.errors:
        return Check(
            "containers-conf",
            "fail",
            "Podman cannot read its configuration: " + "; ".join(conf.errors),
            "correct the file (TOML) or remove it"
            + (", or unset CONTAINERS_CONF" if conf.only else ""),
        )
    if conf.only:
        return Check("containers-conf", "ok", f"CONTAINERS_CONF={conf.only} (Podman reads only it)")
    read = ", ".join(str(p) for p in conf.files) or "none (Podman's defaults)"
    return Check("containers-conf", "ok", f"read {read}")


def storage_conf(storage: StorageConf, host: Host) -> Check:
    if storage.path is None:
        return Check("storage-conf", "ok", "no storage.conf: Podman's built-in defaults")
    if storage.error:
        return Check(
            "storage-conf",
            "fail",
            f"Podman cannot read its storage configuration: {storage.error}",
            f"correct {storage.path} (TOML) or remove it to use Podman's defaults",
        )
    missing = [k for k in ("runroot", "graphroot") if not storage.storage.get(k)]
    driver = storage.storage.get("driver") or "default driver"
    if storage.replaces_defaults and missing:
        runroot, graphroot = hostconf.default_roots(host.env, host.uid, host.home)
        wanted = {"runroot": runroot, "graphroot": graphroot}
        lines = " ".join(f'{k} = "{wanted[k]}"' for k in missing)
        return Check(
            "storage-conf",
            "fail",
            f"{storage.path} sets no {' or '.join(missing)}: a storage.conf replaces Podman's"
            " defaults, so every commit fails with `runroot must be set`",
            f"add under [storage] in {storage.path}: {lines} (Podman's defaults for this user),"
            " or remove the file",
        )
    return Check("storage-conf", "ok", f"{storage.path}: {driver}")


def service(svc: Service, env: Mapping[str, str]) -> Check:
    if svc.error or svc.url is None:
        owner = cause(svc.error)
        fix = (
            f"fix what the `{owner}` check says"
            if owner
            else "run `podman info` to see what Podman needs here"
        )
        if svc.how == "CONTAINER_HOST":
            fix = (
                f"start the service at {env.get('CONTAINER_HOST')} or unset CONTAINER_HOST"
                " to let buildpy start a private one"
            )
        return Check("service", "fail", f"no Podman service: {svc.error}", fix)
    if svc.info_error:
        owner = cause(svc.info_error)
        return Check(
            "service",
            "fail",
            f"the service at {svc.url} answers but `podman info` fails: {svc.info_error}",
            f"fix what the `{owner}` check says" if owner else "run `podman info` to see more",
        )
    version = str(svc.info.get("version", {}).get("APIVersion") or "")
    found = re.match(r"(\d+)\.(\d+)", version)
    api = f", API {version}" if version else ""
    if found and (int(found.group(1)), int(found.group(2))) < MIN_PODMAN:
        return Check(
            "service",
            "fail",
            f"the Podman service at {svc.url} serves API {version}; buildpy needs"
            f" {MIN_PODMAN[0]}.{MIN_PODMAN[1]} or newer",
            "upgrade Podman where the service runs",
        )
    if svc.how == "private":
        return Check(
            "service",
            "ok",
            f"no standing service; a private `podman system service` started and answered{api}"
            " (every build starts one; `systemctl enable --now podman.socket` saves that)",
        )
    where = f"CONTAINER_HOST={svc.url}" if svc.how == "CONTAINER_HOST" else svc.url
    if svc.how == "socket" and (env.get("CONTAINERS_CONF") or env.get("CONTAINERS_STORAGE_CONF")):
        return Check(
            "service",
            "warn",
            f"builds use the running service at {where}{api}, which read its configuration when"
            " it started: CONTAINERS_CONF and CONTAINERS_STORAGE_CONF set here do not reach it",
            "restart that service with the same variables, or stop it to let buildpy start a"
            " private one",
        )
    return Check("service", "ok", f"{where} answers{api}")


def runtime(
    svc: Service | None, conf: ContainersConf, cgroups: str, host: Host, rootless: bool
) -> Check:
    setting = conf.get("engine", "runtime")
    name = str(svc.info.get("host", {}).get("ociRuntime", {}).get("name", "")) if svc else ""
    name = name or (str(setting.value) if setting else "")
    name = name or ("crun" if cgroups == "v2" else "runc")  # Podman 4's own default
    target = hostconf.target_for(setting, host.env, rootless, host.home)
    install = "" if host.which("runc") else " and install runc (`apt-get install runc`)"
    to_runc = f'set runtime = "runc" under [engine] in {target}{install}'
    trial = svc.trial if svc else None
    said = (svc.error if svc else None) or (trial.error if trial else None) or ""
    said = said if cause(said) == "runtime" else ""  # not Podman's words about something else
    known = _runtime_problem(name, cgroups, said, to_runc)
    if known:
        return known
    layout = {"hybrid": "hybrid v1+v2", "v1": "v1", "v2": "v2"}.get(cgroups, "unknown")
    if trial is None:
        why = "no Podman service" if svc is None or svc.url is None else "no buildpy image here"
        return Check("runtime", "ok", f"{name}, cgroups {layout} (no trial container: {why})")
    if trial.error and cause(trial.error) != "ulimits":
        return Check(
            "runtime",
            "fail",
            f"a trial container from {trial.image} did not start: {trial.error}",
            f"`podman run --rm --network none {trial.image} true` shows Podman's whole error",
        )
    return Check(
        "runtime", "ok", f"{name} started a trial container from {trial.image}, cgroups {layout}"
    )


def _runtime_problem(name: str, cgroups: str, said: str, to_runc: str) -> Check | None:
    """What is wrong with the OCI runtime, from its name, the cgroups and Podman's words."""
    words = f" (Podman: {said})" if said else ""
    hybrid = cgroups == "hybrid"
    missing = re.search(r'default OCI runtime "([^"]+)" not found', said)
    if missing and not (missing.group(1) == "crun" and hybrid):
        absent = missing.group(1)
        message = f"the configured OCI runtime {absent} is not installed{words}"
        return Check("runtime", "fail", message, f"install {absent}, or {to_runc}")
    if missing:
        message = "crun is configured but not installed, and would not run on this host's"
        message += f" hybrid cgroups (v1 + v2) if it were{words}"
        return Check("runtime", "fail", message, to_runc)
    if "cgroups in hybrid mode" in said or (name == "crun" and hybrid):
        words = words or " (crun 1.8 fails there with `cgroups in hybrid mode not supported`)"
        message = f"crun cannot run containers on this host's hybrid cgroups (v1 + v2){words}"
        return Check("runtime", "fail", message, to_runc)
    return None


def ulimits(conf: ContainersConf, svc: Service | None, host: Host, rootless: bool) -> Check:
    setting = conf.get("containers", "default_ulimits")
    wanted, shown = _wanted_ulimits(setting, rootless)
    hard = {u.name: host.hard_limit(u.name) for u in wanted}
    over = [u for u in wanted if hostconf.exceeds(u.hard, hard[u.name])]
    status_text = host.read(Path("/proc/self/status")) or ""
    can_raise = not rootless and hostconf.has_capability(status_text, hostconf.CAP_SYS_RESOURCE)
    trial_error = svc.trial.error if svc and svc.trial else None
    failed = cause(trial_error) == "ulimits"
    if not failed and (not over or can_raise):
        note = "; above the hard limits, but CAP_SYS_RESOURCE allows it" if over else ""
        return Check("ulimits", "ok", f"{shown}{note}")
    if over and not can_raise:
        above = ", ".join(f"{u.name} {u.hard} > {hard[u.name]}" for u in over)
        message = f"default ulimits above this host's hard limits ({above}) and no"
        message += " CAP_SYS_RESOURCE to raise them"
        message += f"; a trial container failed: {trial_error}" if failed else ""
    else:
        message = f"a trial container failed on its ulimits ({shown}): {trial_error}"
    fixed = [_lowered(u, hard[u.name]) if u in over or not over else u for u in wanted]
    values = ", ".join(f'"{u}"' for u in fixed)
    target = hostconf.target_for(setting, host.env, rootless, host.home)
    return Check(
        "ulimits",
        "fail",
        message,
        f"set default_ulimits = [{values}] under [containers] in {target}",
    )


def _wanted_ulimits(
    setting: hostconf.Setting | None, rootless: bool
) -> tuple[list[hostconf.Ulimit], str]:
    """The limits Podman will ask for, and how to show them."""
    values = setting.value if setting and isinstance(setting.value, list) else []
    configured = {u.name: u for u in map(hostconf.parse_ulimit, map(str, values)) if u}
    wanted = dict(configured)
    if not rootless:  # rootless Podman keeps unset limits at the user's own
        for name in ("nofile", "nproc"):
            default = hostconf.Ulimit(name, PODMAN_DEFAULT_ULIMIT, PODMAN_DEFAULT_ULIMIT)
            wanted.setdefault(name, default)
    shown = ", ".join(
        f"{u}{'' if u.name in configured else ' (Podman default)'}" for u in wanted.values()
    )
    return list(wanted.values()), shown or "the user's own limits (none configured)"


def _lowered(limit: hostconf.Ulimit, hard: int | None) -> hostconf.Ulimit:
    """A limit at or below the host's hard limit (nproc kept small, as setup-host does)."""
    cap = {"nofile": PODMAN_DEFAULT_ULIMIT, "nproc": 4096}.get(limit.name)
    value = hard if hard is not None else limit.hard
    if cap is not None:
        value = min(value, cap) if value != hostconf.UNLIMITED else cap
    soft = limit.soft if limit.soft != hostconf.UNLIMITED and limit.soft <= value else value
    return hostconf.Ulimit(limit.name, soft, value)


def storage_driver(
    info: Mapping[str, Any], storage: StorageConf, host: Host, rootless: bool
) -> Check:
    store = info.get("store", {})
    driver = str(store.get("graphDriverName", ""))
    if driver != "vfs":
        return Check("storage-driver", "ok", driver or "unknown")
    if storage.replaces_defaults and storage.path:
        path = storage.path
    elif rootless:
        path = hostconf.user_config_dir(host.env, host.home) / "storage.conf"
    else:
        path = Path("/etc/containers/storage.conf")
    images = int(store.get("imageStore", {}).get("number") or 0)
    containers = int(store.get("containerStore", {}).get("number") or 0)
    loses = (
        f"it removes this user's {images} images and {containers} containers"
        if images or containers
        else "nothing is lost: there are no images or containers yet"
    )
    reset = f"`podman system reset` ({loses}): Podman keeps the driver its storage was made with"
    slow = "copies every layer in full: builds are slow and use much more disk"
    if storage.storage.get("driver") == "overlay":
        return Check(
            "storage-driver",
            "warn",
            f"{path} asks for overlay, but this storage was made with vfs, which {slow}",
            reset,
        )
    default_run, default_graph = hostconf.default_roots(host.env, host.uid, host.home)
    runroot = store.get("runRoot") or default_run
    graphroot = store.get("graphRoot") or default_graph
    return Check(
        "storage-driver",
        "warn",
        f"Podman stores images with vfs, which {slow}",
        f'set driver = "overlay", runroot = "{runroot}" and graphroot = "{graphroot}" under'
        f" [storage] in {path} (fuse-overlayfs is needed on kernels before 5.13), then {reset}",
    )


def graph_root(svc: Service | None, storage: StorageConf, host: Host) -> Path:
    from_info = svc.info.get("store", {}).get("graphRoot") if svc else None
    if from_info:
        return Path(str(from_info))
    configured = storage.storage.get("graphroot") if storage.replaces_defaults else None
    return Path(str(configured or hostconf.default_roots(host.env, host.uid, host.home)[1]))


def disk(graphroot: Path, host: Host) -> Check:
    free = host.free_bytes(graphroot)
    if free is None:
        return Check("disk-space", "warn", f"cannot measure the free space under {graphroot}")
    shown = f"{free / (1 << 30):.1f} GiB free under {graphroot}"
    fix = (
        "free space there: `buildpy cache prune`, `podman image prune`, `podman system df`"
        " shows what takes it"
    )
    if free < DISK_FAIL:
        return Check("disk-space", "fail", f"only {shown}; a build needs about 1 GiB", fix)
    if free < DISK_WARN:
        return Check("disk-space", "warn", f"{shown}; builder images take 1-2 GiB each", fix)
    return Check("disk-space", "ok", shown)


def subids(host: Host) -> Check:
    texts = {p: host.read(Path(p)) or "" for p in ("/etc/subuid", "/etc/subgid")}
    ranges = {p: hostconf.subid_ranges(t, host.user, host.uid) for p, t in texts.items()}
    start = hostconf.free_subid_start(*texts.values())
    fix = (
        f"as root: `usermod --add-subuids {start}-{start + 65535} --add-subgids"
        f" {start}-{start + 65535} {host.user}`, then as {host.user}: `podman system migrate`"
    )
    missing = [p for p, found in ranges.items() if not found]
    if missing:
        return Check(
            "subids",
            "fail",
            f"no range for {host.user} in {' and '.join(missing)}: rootless Podman cannot map the"
            " users of an image (builder images run as 1001)",
            fix,
        )
    counts = {p: sum(c for _, c in found) for p, found in ranges.items()}
    if min(counts.values()) < 65536:
        return Check(
            "subids",
            "warn",
            f"{host.user} has only {min(counts.values())} subordinate ids: images with files"
            " owned by higher ids fail to load",
            fix,
        )
    return Check(
        "subids",
        "ok",
        f"{host.user}: {counts['/etc/subuid']} subuids, {counts['/etc/subgid']} subgids",
    )


def idmap_tools(host: Host) -> Check:
    found = {name: host.which(name) for name in ("newuidmap", "newgidmap")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        return Check(
            "idmap-tools",
            "fail",
            f"{' and '.join(missing)} not found: rootless Podman cannot set up its user namespace",
            "install them (Debian/Ubuntu: `apt-get install uidmap`; RHEL/Fedora: `dnf install"
            " shadow-utils`)",
        )
    plain = [p for p in found.values() if p and not host.privileged(p)]
    if plain:
        return Check(
            "idmap-tools",
            "fail",
            f"{' and '.join(plain)} neither setuid root nor with file capabilities",
            "reinstall the package (uidmap / shadow-utils), or as root: `chmod u+s "
            + " ".join(plain)
            + "`",
        )
    return Check("idmap-tools", "ok", " and ".join(str(p) for p in found.values()))


def rootless_network(host: Host) -> Check:
    slirp = host.which("slirp4netns")
    problem = host.open_error(Path("/dev/net/tun"))
    still = "builds with --network host or --network none still work"
    if slirp is None:
        return Check(
            "rootless-network",
            "warn",
            f"slirp4netns is not installed: containers on the default network fail; {still}",
            "install it (`apt-get install slirp4netns` / `dnf install slirp4netns`)",
        )
    if problem:
        return Check(
            "rootless-network",
            "warn",
            f"/dev/net/tun is not usable by {host.user} ({problem}): slirp4netns cannot give"
            f" containers the default network; {still}",
            "as root: `chmod 0666 /dev/net/tun` (a udev rule keeps it across reboots), or build"
            " with --network host",
        )
    return Check("rootless-network", "ok", f"slirp4netns and /dev/net/tun usable by {host.user}")


def builder_images(images: Iterable[str], rootless: bool) -> Check:
    present = _tags(images)
    ours = builders.BUILDERS.values()
    have = [b.name for b in ours if b.tag in present]
    lacking = [b for b in ours if b.tag not in present]
    if DEFAULT_BUILDER in present:
        more = f"; not built: {', '.join(b.name for b in lacking)}" if lacking else ""
        return Check("builders", "ok", f"present: {', '.join(have)}{more}")
    default = builders.lookup(DEFAULT_BUILDER)
    base = default.base
    if base in present:
        fix = f"`buildpy builder build {default.name}`"
    elif rootless:
        fix = (
            f"make the base image first (as root: `scripts/make-base-image --suite bookworm --tar"
            f" base.tar`; then as this user: `scripts/make-base-image --from-tar base.tar`), then"
            f" `buildpy builder build {default.name}`; or `podman load -i FILE` of a saved builder"
        )
    else:
        fix = (
            f"`scripts/make-base-image --suite bookworm` then `buildpy builder build"
            f" {default.name}` (or `make setup`); or `podman load -i FILE` of a saved builder"
        )
    return Check(
        "builders",
        "warn",
        f"the default builder {DEFAULT_BUILDER} is not in this storage"
        + (f" (present: {', '.join(have)})" if have else "")
        + "; builds need --builder IMAGE",
        fix,
    )
