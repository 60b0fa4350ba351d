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

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on RHEL 9's Python 3.9
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

from buildpy.errors import SourceError, UsageError
from buildpy.image import check_reference

DEFAULT_BUILDER = "localhost/buildpy/python-311"
PYPROJECT_KEYS = ("builder", "tag", "network")


@dataclass(frozen=True)
class BuildOptions:
    """Everything one ``buildpy build`` was asked to do."""

    source: Path
    builder: str = DEFAULT_BUILDER
    tag: str | None = None
    env_files: tuple[Path, ...] = ()
    env: tuple[str, ...] = ()
    build_env: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    network: str | None = None
    cache: bool = True
    incremental: bool = False


def pyproject_settings(source: Path) -> dict[str, str]:
    """``[tool.buildpy]`` from the source's pyproject.toml; empty when absent."""
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
    # A source that is missing or cannot be listed is plan.make's to report.
    readable = cli.source.is_dir() and os.access(cli.source, os.R_OK | os.X_OK)
    settings = pyproject_settings(cli.source) if readable else {}
    changes: dict[str, Any] = {k: v for k, v in settings.items() if k not in explicit}
    return replace(cli, **changes) if changes else cli
