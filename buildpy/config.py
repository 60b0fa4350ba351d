"""Frozen build configuration: command line over ``[tool.buildpy]`` over defaults.

``[tool.buildpy]`` in the source's pyproject.toml may set ``builder``, ``tag``
and ``network``; anything given on the command line wins. Environment
variables are not configured here but in ``.s2i/environment`` (see
``environment``), so that existing S2I sources keep working unchanged.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from buildpy.errors import SourceError, UsageError
from buildpy.image import check_reference
from buildpy.registry import PullPolicy

PREFIX_VARIABLE = "BUILDPY_BUILDER_PREFIX"
DEFAULT_PREFIX = "localhost/buildpy"
DEFAULT_BUILDER_NAME = "python-311"
DEFAULT_BUILDER = f"{DEFAULT_PREFIX}/{DEFAULT_BUILDER_NAME}"
PYPROJECT_KEYS = ("builder", "tag", "network")
PYPROJECT_ORIGIN = "[tool.buildpy] in pyproject.toml"


def builder_prefix() -> str:
    """Where buildpy's builder images are named: ``BUILDPY_BUILDER_PREFIX`` or
    localhost/buildpy. Another prefix keeps a set of builders apart (a branch's, a
    site's) without retagging the ones others use."""
    return (os.environ.get(PREFIX_VARIABLE) or DEFAULT_PREFIX).rstrip("/")


def default_builder() -> str:
    """The builder a command line that names none gets (the prefix applies)."""
    return f"{builder_prefix()}/{DEFAULT_BUILDER_NAME}"


@dataclass(frozen=True)
class BuildOptions:
    """Everything one ``buildpy build`` was asked to do."""

    source: Path
    builder: str = DEFAULT_BUILDER  # the CLI always names one: default_builder()
    tag: str | None = None
    env_files: tuple[Path, ...] = ()
    env: tuple[str, ...] = ()
    build_env: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    secrets: tuple[str, ...] = ()  # --secret specs, read by plan.make
    network: str | None = None
    cache: bool = True
    incremental: bool = False
    pull: PullPolicy = "missing"
    tls_verify: bool | None = None  # None: as registries.conf says
    push: bool = False
    outputs: tuple[str, ...] = ()  # --output TYPE:PATH, parsed by the plan
    wheelhouse: Path | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    scripts_url: str | None = None  # --scripts-url, checked by the plan
    cache_max: int | None = None  # bytes of dependency layers kept; None: no limit


def pyproject_settings(source: Path) -> dict[str, str]:
    """``[tool.buildpy]`` from the source's pyproject.toml; empty when absent."""
    if sys.version_info >= (3, 11):  # imported here: the command line starts without it
        import tomllib
    else:  # pragma: no cover - exercised on RHEL 9's Python 3.9
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

    path = source / "pyproject.toml"
    try:
        with open(path, "rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return {}
    except OSError as exc:  # as for every other file of the source
        raise SourceError(
            f"cannot read {path}: {exc.strerror or exc}", "make it readable (chmod u+r)"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(
            f"{path}: cannot read [tool.buildpy]: {exc}",
            "fix the TOML syntax at the line and column shown",
        ) from exc
    table = data.get("tool", {}).get("buildpy", {})
    if not isinstance(table, dict):
        raise UsageError(
            f"{path}: [tool.buildpy] must be a table",
            'write [tool.buildpy] with builder = "...", tag = "..." or network = "..." under it',
        )
    unknown = sorted(set(table) - set(PYPROJECT_KEYS))
    if unknown:
        raise UsageError(
            f"{path}: unknown key(s) in [tool.buildpy]: {', '.join(unknown)}",
            f"known keys: {', '.join(PYPROJECT_KEYS)}",
        )
    for key, value in table.items():
        if not isinstance(value, str):
            raise UsageError(
                f"{path}: [tool.buildpy] {key} must be a string", f'quote it: {key} = "{value}"'
            )
    if "tag" in table:
        check_reference(table["tag"], f"{path}: [tool.buildpy] tag")
    return dict(table)


def with_pyproject(cli: BuildOptions, explicit: frozenset[str]) -> BuildOptions:
    """Fill what the command line left unset (``explicit`` names what it set)."""
    changes: dict[str, Any] = _from_pyproject(cli, explicit)
    return replace(cli, **changes) if changes else cli


def setting_origins(cli: BuildOptions, explicit: frozenset[str]) -> dict[str, str]:
    """Where ``builder``, ``tag`` and ``network`` come from: the option, ``[tool.buildpy]``
    or the default."""
    taken = _from_pyproject(cli, explicit)
    return {
        key: f"--{key}" if key in explicit else PYPROJECT_ORIGIN if key in taken else "default"
        for key in PYPROJECT_KEYS
    }


def _from_pyproject(cli: BuildOptions, explicit: frozenset[str]) -> dict[str, str]:
    # A source that is missing or cannot be listed is plan.make's to report.
    readable = cli.source.is_dir() and os.access(cli.source, os.R_OK | os.X_OK)
    settings = pyproject_settings(cli.source) if readable else {}
    return {k: v for k, v in settings.items() if k not in explicit}
