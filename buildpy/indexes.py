"""Where assemble gets packages: a package index, or a wheelhouse with no index. Pure.

``--index-url`` (with ``--extra-index-url`` and ``--trusted-host``) names a mirror for
one build. It becomes build-only variables that every installer reads (pip,
pipenv, micropipenv, uv), never part of the image; buildpy's assemble also
redirects lock files whose sources name public PyPI to it (see s2i/assemble).

``--wheelhouse DIR`` is a directory made by ``buildpy wheelhouse``. A build
uploads it into a volume of its own (``wheelvolume``), mounted read-only under
/dev/shm (a tmpfs: not even its mount point is committed), and installers use it
with no index. The variables name only that fixed path, so the host directory
never enters the dependency layer's key. ``buildpy wheelhouse`` bind-mounts the
directory writable there and fills it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from buildpy.engine import Mount
from buildpy.errors import UsageError
from buildpy.redact import mask

WHEELHOUSE_TARGET = "/dev/shm/buildpy-wheelhouse"  # a tmpfs, like the CA bundle's
WHEELHOUSE_VARIABLE = "BUILDPY_WHEELHOUSE"
INDEX_VARIABLE = "BUILDPY_INDEX_URL"  # assemble redirects lock files' PyPI sources to it
_UNSAFE = re.compile(r"[\s\"'\\]")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]+)?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]+)?$")


@dataclass(frozen=True)
class PackageIndex:
    """A mirror for one build: the index, extra indexes, hosts trusted without TLS."""

    url: str
    extra_urls: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, url: str, extra_urls: tuple[str, ...], trusted: tuple[str, ...]) -> PackageIndex:
        """Checked option values; a ``UsageError`` names the bad one."""
        urls = tuple(check_url(extra, "--extra-index-url") for extra in extra_urls)
        for host in trusted:
            if not _HOST.match(host):
                raise UsageError(
                    f"--trusted-host {host!r}: not a host name or host:port",
                    "give the host as pip's --trusted-host takes it, e.g. mirror.example:8080",
                )
        return cls(check_url(url, "--index-url"), urls, trusted)

    def variables(self) -> dict[str, str]:
        """Build-only variables: the same index for pip, pipenv, micropipenv and uv."""
        values = {
            "PIP_INDEX_URL": self.url,
            "PIPENV_PYPI_MIRROR": self.url,
            "MICROPIPENV_DEFAULT_INDEX_URLS": ",".join((self.url, *self.extra_urls)),
            "UV_INDEX_URL": self.url,
            INDEX_VARIABLE: self.url,
        }
        if self.extra_urls:
            values["PIP_EXTRA_INDEX_URL"] = " ".join(self.extra_urls)
            values["UV_EXTRA_INDEX_URL"] = " ".join(self.extra_urls)
        if self.trusted_hosts:
            values["PIP_TRUSTED_HOST"] = " ".join(self.trusted_hosts)
            values["UV_INSECURE_HOST"] = " ".join(self.trusted_hosts)
        return values


def check_url(url: str, option: str) -> str:
    """An index URL fit to pass on: http(s) or file, a host, nothing a lock file's quoting
    or a shell word would break on."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "file") or _UNSAFE.search(url):
        raise UsageError(
            f"{option} {mask(url)}: not an http://, https:// or file:// URL",
            "write it as pip takes it, e.g. https://mirror.example/simple"
            " (credentials as https://user:token@mirror.example/simple)",
        )
    if parts.scheme != "file" and not parts.hostname:
        raise UsageError(f"{option} {mask(url)}: the URL names no host")
    return url


@dataclass(frozen=True)
class Wheelhouse:
    """A wheelhouse directory on the build host. ``writable`` only for ``buildpy wheelhouse``,
    which fills it; a build reads it."""

    path: Path
    writable: bool = False

    def mount(self) -> Mount:
        """The bind mount ``buildpy wheelhouse`` fills the directory through."""
        return Mount(str(self.path), WHEELHOUSE_TARGET, read_only=not self.writable)

    def variables(self) -> dict[str, str]:
        """Build-only variables: with no index, from the wheelhouse alone (pip and uv; pipenv
        and micropipenv run pip). Filling it, only where it is."""
        if self.writable:
            return {WHEELHOUSE_VARIABLE: WHEELHOUSE_TARGET}
        return {
            WHEELHOUSE_VARIABLE: WHEELHOUSE_TARGET,
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": WHEELHOUSE_TARGET,
            "UV_NO_INDEX": "1",
            "UV_FIND_LINKS": WHEELHOUSE_TARGET,
        }


def wheelhouse_to_read(path: Path) -> Wheelhouse:
    """The ``--wheelhouse`` directory of a build: it must exist and be readable."""
    if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(
            f"--wheelhouse {path}: not a readable directory",
            "make it on a connected machine with `buildpy wheelhouse SOURCE DIR` and copy it here",
        )
    return Wheelhouse(path.resolve())


def wheelhouse_to_fill(path: Path) -> Wheelhouse:
    """The directory ``buildpy wheelhouse`` fills: made when missing, writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make the wheelhouse directory {path}: {exc.strerror}") from exc
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: not a writable directory", "choose a directory you can write")
    return Wheelhouse(path.resolve(), writable=True)
