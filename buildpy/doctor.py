"""Check what a build needs on this host; for each problem, say what is wrong and the fix.

``diagnose(host)`` returns one ``Check`` per concern, in order. Everything it looks
at comes from a ``Host``: ``LocalHost`` reads this machine (files, getrlimit, statvfs,
the ``podman`` command); unit tests hand in a fake. Checks that need Podman ask the
service a build would use (``service.connect``: CONTAINER_HOST, the standard socket, or
a private ``podman system service`` started with this environment) through
``podman --url``, and run a trivial container there: what doctor sees is what a build
gets. Nothing here prints; ``cli`` does.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from buildpy import hostchecks as check
from buildpy import hostconf, log, service
from buildpy.errors import EngineUnavailable
from buildpy.hostchecks import Check, Host, Ran, Service, Status, Trial, podman_error

_log = log.get(__name__)
TRIAL_TIMEOUT = 120.0
CALL_TIMEOUT = 60.0


def diagnose(host: Host) -> list[Check]:
    """Every check, in order; the ones that need Podman only when it is there."""
    env = host.env
    rootless = host.uid != 0
    conf = hostconf.load_containers_conf(
        hostconf.containers_conf_paths(env, rootless, host.home, host.listdir),
        host.read,
        only=Path(env["CONTAINERS_CONF"]) if env.get("CONTAINERS_CONF") else None,
    )
    storage = hostconf.storage_conf(env, rootless, host.home, host.read)
    podman = check.podman(host.which("podman"), host.run(["podman", "--version"], CALL_TIMEOUT))
    checks = [podman, check.containers_conf(conf), check.storage_conf(storage, host)]
    svc: Service | None = None
    if podman.status != "fail" or env.get("CONTAINER_HOST"):
        svc = probe_service(host)
        rootless = bool(svc.info.get("host", {}).get("security", {}).get("rootless", rootless))
        checks.append(check.service(svc, env))
    cgroups = hostconf.cgroup_layout(host.read(Path("/proc/self/mountinfo")) or "")
    checks.append(check.runtime(svc, conf, cgroups, host, rootless))
    checks.append(check.ulimits(conf, svc, host, rootless))
    if svc is not None and svc.info:
        checks.append(check.storage_driver(svc.info, storage, host, rootless))
    if svc is None or (svc.url or "unix://").startswith("unix://"):  # else: another machine's
        checks.append(check.disk(check.graph_root(svc, storage, host), host))
    if rootless:
        checks += [check.subids(host), check.idmap_tools(host), check.rootless_network(host)]
    if svc is not None and svc.url is not None:
        checks.append(check.builder_images(svc.images, rootless))
    return checks


def worst(checks: Iterable[Check]) -> Status:
    statuses = {c.status for c in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"


def report(checks: Sequence[Check]) -> dict[str, Any]:
    """The JSON form (documented in docs/reference/cli.md)."""
    return {"status": worst(checks), "checks": [c.as_dict() for c in checks]}


def render(checks: Sequence[Check]) -> str:
    """The human form: one line per check, the fix under each problem, a summary."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        label = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[c.status]
        lines.append(f"{label}  {c.name.ljust(width)}  {c.message}")
        if c.fix and c.status != "ok":
            lines.append(f"      {' ' * width}  fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in ("fail", "warn", "ok")}
    verdict = "a build cannot work here" if counts["fail"] else "a build can work here"
    lines.append(
        f"{counts['fail']} failed, {counts['warn']} warnings, {counts['ok']} ok: {verdict}"
    )
    return "\n".join(lines) + "\n"


# --- probing the service ---------------------------------------------------------------


def probe_service(host: Host) -> Service:
    """Connect as a build would; ask for info and images; run a trivial container."""
    env = host.env
    how = "CONTAINER_HOST" if env.get("CONTAINER_HOST") else "private"
    sockets = {f"unix://{s}" for s in service.default_sockets(env, host.uid)}
    started = time.monotonic()
    try:
        with host.connect() as url:
            how = "socket" if how == "private" and url in sockets else how
            _log.debug("doctor: service", url=url, how=how, seconds=_since(started))
            info, info_error = _info(host, url)
            images = _images(host, url)
            image = check.trial_image(images)
            trial = _trial(host, url, image) if image else None
            return Service(url, how, None, info, info_error, images, trial)
    except EngineUnavailable as exc:
        return Service(None, how, exc.message)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _info(host: Host, url: str) -> tuple[dict[str, Any], str | None]:
    ran = host.run(["podman", "--url", url, "info", "--format", "json"], CALL_TIMEOUT)
    if ran.returncode != 0:
        return {}, podman_error(ran)
    try:
        data = json.loads(ran.stdout)
    except ValueError:
        return {}, "`podman info` did not print JSON"
    return (data, None) if isinstance(data, dict) else ({}, "`podman info` printed no object")


def _images(host: Host, url: str) -> frozenset[str]:
    ran = host.run(
        ["podman", "--url", url, "images", "--noheading", "--format", "{{.Repository}}:{{.Tag}}"],
        CALL_TIMEOUT,
    )
    return frozenset(line.strip() for line in ran.stdout.splitlines() if line.strip())


def _trial(host: Host, url: str, image: str) -> Trial:
    name = f"buildpy-doctor-{uuid.uuid4().hex[:10]}"
    argv = ["podman", "--url", url, "run", "--rm", "--name", name, "--network", "none"]
    argv += ["--pull", "never", "--entrypoint", "true", image]
    started = time.monotonic()
    clean = False
    try:
        ran = host.run(argv, TRIAL_TIMEOUT)
        clean = ran.returncode == 0
    finally:
        if not clean:  # --rm does not cover a failed start, a timeout or Ctrl-C
            host.run(["podman", "--url", url, "rm", "-f", "--ignore", name], CALL_TIMEOUT)
    _log.debug("doctor: trial container", image=image, seconds=_since(started), ok=clean)
    return Trial(image, None if clean else podman_error(ran))


# --- this machine ------------------------------------------------------------------------


class LocalHost:
    """The real host, as this process sees it."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env: Mapping[str, str] = dict(os.environ if env is None else env)
        self.uid = os.getuid()
        try:
            entry: Any = pwd.getpwuid(self.uid)
            self.user, home = str(entry.pw_name), str(entry.pw_dir)
        except KeyError:
            self.user, home = str(self.uid), "/"
        self.home = Path(self.env.get("HOME") or home)

    def run(self, argv: Sequence[str], timeout: float) -> Ran:
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            return Ran(127, "", str(exc))
        except subprocess.TimeoutExpired:
            return Ran(
                124, "", f"Error: `{' '.join(argv[:4])} ...` timed out after {timeout:.0f} s"
            )
        return Ran(done.returncode, done.stdout, done.stderr)

    def read(self, path: Path) -> str | None:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return None

    def listdir(self, path: Path) -> list[str]:
        try:
            return os.listdir(path)
        except OSError:
            return []

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.env.get("PATH"))

    def privileged(self, path: str) -> bool:
        try:
            if os.stat(path).st_mode & 0o4000:
                return True
            return bool(os.getxattr(path, "security.capability"))
        except OSError:
            return False

    def hard_limit(self, name: str) -> int | None:
        import resource

        which = getattr(resource, f"RLIMIT_{name.upper()}", None)
        if which is None:
            return None
        hard = resource.getrlimit(which)[1]
        return None if hard == resource.RLIM_INFINITY else int(hard)

    def free_bytes(self, path: Path) -> int | None:
        for candidate in (path, *path.parents):
            try:
                stat = os.statvfs(candidate)
            except OSError:
                continue
            return stat.f_bavail * stat.f_frsize
        return None

    def open_error(self, path: Path) -> str | None:
        try:
            os.close(os.open(path, os.O_RDWR))
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    def connect(self) -> AbstractContextManager[str]:
        return service.connect(self.env, uid=self.uid)
