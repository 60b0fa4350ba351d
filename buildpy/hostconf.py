"""Podman's configuration as Podman 4 reads it: which files, in what order, what they set.

Pure: the files come through a ``read`` callable (text, or None when a file is
missing), so tests hand in a dictionary. The rules follow containers/common and
containers/storage as Podman 4.3 uses them:

- containers.conf: ``CONTAINERS_CONF`` alone when set (it must exist); else
  /usr/share/containers/containers.conf, /etc/containers/containers.conf, its
  ``.d`` drop-ins in name order, and, rootless, the user's own containers.conf and
  its drop-ins. Later files override earlier ones key by key; a list replaces.
- storage.conf: ``CONTAINERS_STORAGE_CONF`` when set (it must exist); rootless, the
  user's own file when it exists; else /etc/containers/storage.conf, then
  /usr/share/containers/storage.conf, else built-in defaults. A file that applies to
  this user replaces the built-in defaults instead of adding to them: one without
  ``runroot`` fails with ``runroot must be set`` (checked on 4.3.1, root and rootless).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on RHEL 9's Python 3.9
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

Read = Callable[[Path], "str | None"]

DISTRO_CONF = Path("/usr/share/containers/containers.conf")
SYSTEM_CONF = Path("/etc/containers/containers.conf")
SYSTEM_STORAGE = (Path("/etc/containers/storage.conf"), Path("/usr/share/containers/storage.conf"))
DROPIN_NAME = "50-buildpy.conf"
UNLIMITED = -1


def user_config_dir(env: Mapping[str, str], home: Path) -> Path:
    """$XDG_CONFIG_HOME/containers, else ~/.config/containers."""
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "containers"


@dataclass(frozen=True)
class Setting:
    """One value from containers.conf and the file that set it last."""

    value: Any
    origin: Path


@dataclass(frozen=True)
class ContainersConf:
    """The containers.conf files Podman reads here, merged."""

    files: tuple[Path, ...] = ()
    errors: tuple[str, ...] = ()
    only: Path | None = None  # CONTAINERS_CONF: Podman reads this file and no other
    settings: Mapping[tuple[str, str], Setting] = field(default_factory=dict)

    def get(self, table: str, key: str) -> Setting | None:
        return self.settings.get((table, key))


def containers_conf_paths(
    env: Mapping[str, str], rootless: bool, home: Path, listdir: Callable[[Path], Sequence[str]]
) -> list[Path]:
    """The files Podman would read, in order (some may not exist)."""
    if env.get("CONTAINERS_CONF"):
        return [Path(env["CONTAINERS_CONF"])]
    paths = [DISTRO_CONF, SYSTEM_CONF, *_dropins(SYSTEM_CONF, listdir)]
    if rootless:
        mine = user_config_dir(env, home) / "containers.conf"
        paths += [mine, *_dropins(mine, listdir)]
    return paths


def _dropins(conf: Path, listdir: Callable[[Path], Sequence[str]]) -> list[Path]:
    directory = Path(f"{conf}.d")
    return [directory / name for name in sorted(listdir(directory)) if name.endswith(".conf")]


def load_containers_conf(
    paths: Sequence[Path], read: Read, only: Path | None = None
) -> ContainersConf:
    """Merge the files that exist; a missing ``only`` file or bad TOML is an error."""
    files: list[Path] = []
    errors: list[str] = []
    settings: dict[tuple[str, str], Setting] = {}
    for path in paths:
        text = read(path)
        if text is None:
            if path == only:
                errors.append(f"{path} (CONTAINERS_CONF) does not exist or cannot be read")
            continue
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            errors.append(f"{path}: {exc}")
            continue
        files.append(path)
        for table, values in data.items():
            if isinstance(values, dict):
                for key, value in values.items():
                    settings[(table, key)] = Setting(value, path)
    return ContainersConf(tuple(files), tuple(errors), only, settings)


def dropin_for(env: Mapping[str, str], rootless: bool, home: Path) -> Path:
    """Where buildpy's settings go: CONTAINERS_CONF, else a drop-in (as scripts/setup-host)."""
    if env.get("CONTAINERS_CONF"):
        return Path(env["CONTAINERS_CONF"])
    if rootless:
        return user_config_dir(env, home) / "containers.conf.d" / DROPIN_NAME
    return Path(f"{SYSTEM_CONF}.d") / DROPIN_NAME


def target_for(setting: Setting | None, env: Mapping[str, str], rootless: bool, home: Path) -> Path:
    """The file to edit to change a setting: the one that sets it, when the user owns it."""
    default = dropin_for(env, rootless, home)
    if setting is None or env.get("CONTAINERS_CONF"):
        return default
    origin = setting.origin
    mine = user_config_dir(env, home)
    if rootless:
        return origin if _under(origin, mine) else default
    return origin if _under(origin, SYSTEM_CONF.parent) else default


def _under(path: Path, directory: Path) -> bool:
    return directory == path or directory in path.parents


@dataclass(frozen=True)
class StorageConf:
    """The storage.conf Podman reads here."""

    path: Path | None  # None: no file, Podman's built-in defaults
    replaces_defaults: bool  # runroot and graphroot must then be in the file
    storage: Mapping[str, Any] = field(default_factory=dict)  # its [storage] table
    error: str | None = None


def storage_conf(env: Mapping[str, str], rootless: bool, home: Path, read: Read) -> StorageConf:
    """Find and parse the storage.conf that applies to this user."""
    named = env.get("CONTAINERS_STORAGE_CONF")
    if named:
        return _parse_storage(Path(named), True, read, "CONTAINERS_STORAGE_CONF")
    if rootless:
        mine = user_config_dir(env, home) / "storage.conf"
        if read(mine) is not None:
            return _parse_storage(mine, True, read, "")
    for path in SYSTEM_STORAGE:
        if read(path) is not None:
            # Rootless, a system file's runroot and graphroot are not used.
            return _parse_storage(path, not rootless, read, "")
    return StorageConf(None, False)


def _parse_storage(path: Path, replaces: bool, read: Read, named_by: str) -> StorageConf:
    text = read(path)
    if text is None:
        return StorageConf(path, replaces, error=f"{path} ({named_by}) does not exist")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return StorageConf(path, replaces, error=f"{path}: {exc}")
    table = data.get("storage")
    return StorageConf(path, replaces, table if isinstance(table, dict) else {})


def default_roots(env: Mapping[str, str], uid: int, home: Path) -> tuple[str, str]:
    """Podman's own runroot and graphroot for this user (what a storage.conf should keep)."""
    if uid == 0:
        return "/run/containers/storage", "/var/lib/containers/storage"
    # Without a login session (su, runuser, CI) Podman uses $TMPDIR/podman-run-UID.
    runtime = env.get("XDG_RUNTIME_DIR") or f"{env.get('TMPDIR') or '/tmp'}/podman-run-{uid}"
    data = env.get("XDG_DATA_HOME") or f"{home}/.local/share"
    return f"{runtime}/containers", f"{data}/containers/storage"


@dataclass(frozen=True)
class Ulimit:
    """One ``name=soft:hard`` entry of default_ulimits (UNLIMITED is -1)."""

    name: str
    soft: int
    hard: int

    def __str__(self) -> str:
        return f"{self.name}={self.soft}:{self.hard}"


def parse_ulimit(item: str) -> Ulimit | None:
    """``nofile=1024:2048`` or ``nofile=1024``; None when it does not parse."""
    name, sep, values = item.partition("=")
    soft, _, hard = values.partition(":")
    try:
        soft_value = int(soft)
        hard_value = int(hard) if hard else soft_value
    except ValueError:
        return None
    if not sep or not name.strip():
        return None
    return Ulimit(name.strip(), soft_value, hard_value)


def exceeds(wanted: int, limit: int | None) -> bool:
    """True when ``wanted`` is above ``limit`` (None: the host has no limit)."""
    if limit is None:
        return False
    return wanted == UNLIMITED or wanted > limit


def cgroup_layout(mountinfo: str) -> str:
    """'v2' (unified), 'hybrid' (v1 controllers plus a cgroup2 mount), 'v1', or 'unknown'."""
    kinds: set[str] = set()
    unified_root = False
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        fstype = line.split(" - ", 1)[1].split()[0]
        if fstype in ("cgroup", "cgroup2"):
            kinds.add(fstype)
            unified_root = unified_root or (fstype == "cgroup2" and fields[4] == "/sys/fs/cgroup")
    if unified_root:
        return "v2"
    if kinds == {"cgroup", "cgroup2"}:
        return "hybrid"
    if kinds == {"cgroup"}:
        return "v1"
    return "v2" if kinds == {"cgroup2"} else "unknown"


CAP_SYS_RESOURCE = 24


def has_capability(proc_status: str, bit: int) -> bool:
    """Whether CapEff in /proc/self/status has capability ``bit``."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> bit & 1)
            except (IndexError, ValueError):
                return False
    return False


def subid_ranges(text: str, user: str, uid: int) -> list[tuple[int, int]]:
    """(start, count) ranges for ``user`` (by name or uid) in /etc/subuid or /etc/subgid."""
    found = []
    for line in text.splitlines():
        owner, start, count = ([*line.strip().split(":"), "", ""])[:3]
        if owner in (user, str(uid)) and start.isdigit() and count.isdigit():
            found.append((int(start), int(count)))
    return found


def free_subid_start(*texts: str, floor: int = 100000) -> int:
    """The first id above every range in the given files (and at least ``floor``)."""
    end = floor
    for text in texts:
        for line in text.splitlines():
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                end = max(end, int(parts[1]) + int(parts[2]))
    return end
